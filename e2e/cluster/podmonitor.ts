// The scrape job a Prometheus Operator would generate from the chart's PodMonitor, for a plain
// Prometheus with Kubernetes service discovery: the e2e tests scrape the sidecars exactly the way
// the chart tells a user's Prometheus to, without running the Prometheus Operator itself.
import { parse } from 'yaml';
import { CHART } from './install.ts';
import { helm } from './kube.ts';

type Kube = { kubeconfigPath: string };

export interface PodMonitor {
  metadata: { name: string; namespace: string };
  spec: {
    selector: { matchLabels: Record<string, string> };
    podTargetLabels?: string[];
    namespaceSelector: { matchNames: string[] };
    podMetricsEndpoints: {
      path: string;
      interval: string;
      scrapeTimeout: string;
      relabelings: {
        sourceLabels?: string[];
        regex?: string;
        replacement?: string;
        targetLabel?: string;
        action?: string;
      }[];
    }[];
  };
}

const sanitize = (l: string) => l.replace(/[^a-zA-Z0-9_]/g, '_');

/**
 * The scrape job the Prometheus Operator generates for a PodMonitor (its generatePodMonitorConfig,
 * in its order: selector keeps, phase drop, the namespace/container/pod/job target labels,
 * podTargetLabels, then the endpoint's own relabelings). Only the fields the chart's PodMonitor uses.
 */
export function podMonitorJob(pm: PodMonitor, kubeconfigFile: string): object {
  const ep = pm.spec.podMetricsEndpoints[0]!;
  const relabel = (r: PodMonitor['spec']['podMetricsEndpoints'][0]['relabelings'][0]) => ({
    ...(r.action ? { action: r.action } : {}),
    ...(r.sourceLabels ? { source_labels: r.sourceLabels } : {}),
    ...(r.regex ? { regex: r.regex } : {}),
    ...(r.replacement ? { replacement: r.replacement } : {}),
    ...(r.targetLabel ? { target_label: r.targetLabel } : {}),
  });
  return {
    job_name: `podMonitor/${pm.metadata.namespace}/${pm.metadata.name}/0`,
    honor_labels: false,
    kubernetes_sd_configs: [
      { role: 'pod', kubeconfig_file: kubeconfigFile, namespaces: { names: pm.spec.namespaceSelector.matchNames } },
    ],
    scrape_interval: ep.interval,
    scrape_timeout: ep.scrapeTimeout,
    metrics_path: ep.path,
    relabel_configs: [
      { source_labels: ['job'], target_label: '__tmp_prometheus_job_name' },
      ...Object.entries(pm.spec.selector.matchLabels).map(([k, v]) => ({
        action: 'keep',
        source_labels: [
          `__meta_kubernetes_pod_label_${sanitize(k)}`,
          `__meta_kubernetes_pod_labelpresent_${sanitize(k)}`,
        ],
        regex: `(${v});true`,
      })),
      { action: 'drop', source_labels: ['__meta_kubernetes_pod_phase'], regex: '(Failed|Succeeded)' },
      { source_labels: ['__meta_kubernetes_namespace'], target_label: 'namespace' },
      { source_labels: ['__meta_kubernetes_pod_container_name'], target_label: 'container' },
      { source_labels: ['__meta_kubernetes_pod_name'], target_label: 'pod' },
      { target_label: 'job', replacement: `${pm.metadata.namespace}/${pm.metadata.name}` },
      ...(pm.spec.podTargetLabels ?? []).map((l) => ({
        source_labels: [`__meta_kubernetes_pod_label_${sanitize(l)}`],
        target_label: sanitize(l),
        regex: '(.+)',
        replacement: '$1',
      })),
      ...ep.relabelings.map(relabel),
    ],
  };
}

/** The chart's PodMonitor, rendered by helm with the given scrape interval. */
export async function chartPodMonitor(c: Kube, fleetNamespace: string, interval: string): Promise<PodMonitor> {
  const out = await helm(c, [
    'template',
    'tpfleet',
    CHART,
    '--namespace',
    'tpfleet-system',
    '--set',
    'metrics.podMonitor.enabled=true',
    '--set',
    `metrics.podMonitor.interval=${interval}`,
    '--set',
    'metrics.podMonitor.scrapeTimeout=4s',
    '--set',
    `fleetNamespace.name=${fleetNamespace}`,
  ]);
  const pm = out
    .split(/^---$/m)
    .map((d) => parse(d) as { kind?: string } | null)
    .find((d) => d?.kind === 'PodMonitor');
  if (!pm) throw new Error('helm template rendered no PodMonitor with metrics.podMonitor.enabled=true');
  return pm as unknown as PodMonitor;
}
