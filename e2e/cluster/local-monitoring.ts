// Monitoring on the local-real cluster the way users run it (issue 16, ADR 0022): Prometheus
// (tools/k8s/prometheus) discovering the node sidecars through Kubernetes service discovery with
// the scrape job the Prometheus Operator generates from the chart's own PodMonitor,
// kube-state-metrics for the dashboard's HPA panels, and prometheus-adapter serving
// custom.metrics.k8s.io with the rule of charts/tpfleet/examples/prometheus-adapter-values.yaml.
// Each runs as a process with its own ServiceAccount's token and the RBAC its upstream manifests
// grant (read from its Go module). Prometheus and kube-state-metrics run on the host, which routes
// to every node; the aggregated API servers listen in a network namespace of their own (Endpoint
// validation refuses loopback addresses, see local-net.ts) with a default route to the host.
// Invariant: stop() ends every process started here and removes the namespace; the harness's exit
// hooks (startProcess, local-net.ts) do the same if the test dies first.
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { ensureBinaries } from '../testenv/binaries.ts';
import { freePort, startProcess, stopProcess, tail } from '../testenv/testenv.ts';
import { CHART } from './install.ts';
import { helm, kubectl, kubectlJson, waitFor } from './kube.ts';
import { createLocalNet, type LocalNet } from './local-net.ts';

const run = promisify(execFile);
export const MONITORING_NS = 'monitoring';
const ADAPTER = 'prometheus-adapter';
const ADAPTER_PORT = 6443;
/** Prometheus scrapes every 5 s here (users: 30 s) so the HPA sees load within seconds. */
export const SCRAPE_INTERVAL = '5s';
const modDir = (mod: string) =>
  join(process.env.TPFLEET_CACHE ?? join(homedir(), '.cache', 'tpfleet'), 'go', 'mod', mod);
/** The module directory of a pinned tools/k8s sibling (its go.mod names the version). */
export function moduleDir(tool: string, mod: string): string {
  const gomod = readFileSync(join(import.meta.dirname, '..', '..', 'tools', 'k8s', tool, 'go.mod'), 'utf8');
  const esc = mod.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const v = new RegExp(`^(?:require\\s+)?\\s*${esc} (v[^\\s]+)`, 'm').exec(gomod)?.[1];
  if (!v) throw new Error(`tools/k8s/${tool}/go.mod does not require ${mod}`);
  return modDir(`${mod}@${v}`);
}

type Kube = { kubeconfigPath: string };
export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

/** A kubeconfig for ServiceAccount `ns/sa`: the admin kubeconfig's cluster, a bound token. */
export async function tokenKubeconfig(c: Kube, ns: string, sa: string, path: string): Promise<string> {
  const token = (await kubectl(c, ['create', 'token', sa, '-n', ns, '--duration=2h'])).trim();
  const admin = parse(readFileSync(c.kubeconfigPath, 'utf8')) as { clusters: { cluster: Record<string, string> }[] };
  writeFileSync(
    path,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': sa,
      clusters: [{ name: 'c', cluster: admin.clusters[0]!.cluster }],
      users: [{ name: sa, user: { token } }],
      contexts: [{ name: sa, context: { cluster: 'c', user: sa, namespace: ns } }],
    }),
    { mode: 0o600 },
  );
  return path;
}

export const applyObjects = (c: Kube, items: object[]) =>
  kubectl(c, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));

/** A Service without selector whose EndpointSlice is `ip:port` (aggregator routing dials it directly). */
export function directService(name: string, ns: string, ip: string, port: number): object[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: ns },
      spec: { ports: [{ name: 'https', port: 443, targetPort: port }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: `${name}-local`,
        namespace: ns,
        labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'tpfleet-e2e-local' },
      },
      addressType: 'IPv4',
      endpoints: [{ addresses: [ip], conditions: { ready: true } }],
      ports: [{ name: 'https', port, protocol: 'TCP' }],
    },
  ];
}

export async function waitApiServices(c: Kube, names: string[], procs: [ChildProcess, string][]): Promise<void> {
  await waitFor(
    `APIServices ${names.join(', ')} Available`,
    async () => {
      for (const [p, log] of procs)
        if (p.exitCode !== null || p.signalCode !== null) throw new Error(`a server exited:\n${tail(log)}`);
      for (const n of names) {
        const s = await kubectlJson(c, ['get', 'apiservice', n]);
        const cond = s.status?.conditions?.find((x: { type: string }) => x.type === 'Available');
        if (cond?.status !== 'True') throw new Error(`${n}: ${cond?.reason ?? 'no status'}: ${cond?.message ?? ''}`);
      }
      return true;
    },
    90_000,
  );
}

interface PodMonitor {
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
export async function chartPodMonitor(c: Kube, fleetNamespace: string): Promise<PodMonitor> {
  const out = await helm(c, [
    'template',
    'tpfleet',
    CHART,
    '--namespace',
    'tpfleet-system',
    '--set',
    'metrics.podMonitor.enabled=true',
    '--set',
    `metrics.podMonitor.interval=${SCRAPE_INTERVAL}`,
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

export interface Monitoring {
  net: LocalNet;
  /** Prometheus' base URL, reachable from the host and from `net`'s namespace. */
  promUrl: string;
  query(expr: string): Promise<PromSample[]>;
  logs: Record<'prometheus' | 'ksm' | 'adapter', string>;
  stop(): Promise<void>;
}

/** Starts Prometheus, kube-state-metrics and prometheus-adapter; resolves once the APIServices are Available. */
export async function startMonitoring(c: Kube, fleetNamespace: string, dir: string): Promise<Monitoring> {
  const bin = await ensureBinaries(['prometheus', 'prometheus-adapter', 'kube-state-metrics']);
  mkdirSync(dir, { recursive: true });
  const procs: ChildProcess[] = [];
  const net = await createLocalNet();
  const stop = async () => {
    for (const p of procs.reverse()) await stopProcess(p);
    await net.destroy();
  };
  try {
    await run('ip', ['-n', net.ns, 'route', 'add', 'default', 'via', net.hostIp]);
    await kubectl(c, ['create', 'namespace', MONITORING_NS]);
    // Prometheus may discover pods in the fleet namespace only (its SD is scoped to it);
    // kube-state-metrics lists the HPAs there. The adapter gets exactly its deploy manifests.
    const ro = (resources: string[], group = '') => [
      { apiGroups: [group], resources, verbs: ['get', 'list', 'watch'] },
    ];
    const bind = (kind: 'Role' | 'ClusterRole', name: string, ns?: string) => ({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: `${kind}Binding`,
      metadata: { name, ...(ns ? { namespace: ns } : {}) },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind, name },
      subjects: [{ kind: 'ServiceAccount', name, namespace: MONITORING_NS }],
    });
    await applyObjects(c, [
      ...['prometheus', 'kube-state-metrics'].map((n) => ({
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name: n, namespace: MONITORING_NS },
      })),
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'Role',
        metadata: { name: 'prometheus', namespace: fleetNamespace },
        rules: ro(['pods']),
      },
      bind('Role', 'prometheus', fleetNamespace),
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'Role',
        metadata: { name: 'kube-state-metrics', namespace: fleetNamespace },
        rules: [{ apiGroups: ['autoscaling'], resources: ['horizontalpodautoscalers'], verbs: ['list', 'watch'] }],
      },
      bind('Role', 'kube-state-metrics', fleetNamespace),
    ]);
    const manifests = join(moduleDir('prometheus-adapter', 'sigs.k8s.io/prometheus-adapter'), 'deploy', 'manifests');
    for (const f of [
      'service-account',
      'cluster-role',
      'cluster-role-binding',
      'cluster-role-binding-delegator',
      'role-binding-auth-reader',
    ])
      await kubectl(c, ['apply', '-f', join(manifests, `${f}.yaml`)]);

    const logs = {
      prometheus: join(dir, 'prometheus.log'),
      ksm: join(dir, 'kube-state-metrics.log'),
      adapter: join(dir, 'prometheus-adapter.log'),
    };
    const ksmPort = await freePort(),
      ksmTelemetry = await freePort();
    procs.push(
      startProcess(
        join(bin, 'kube-state-metrics'),
        [
          `--kubeconfig=${await tokenKubeconfig(c, MONITORING_NS, 'kube-state-metrics', join(dir, 'ksm.kubeconfig'))}`,
          '--host=127.0.0.1',
          `--port=${ksmPort}`,
          '--telemetry-host=127.0.0.1',
          `--telemetry-port=${ksmTelemetry}`,
          '--resources=horizontalpodautoscalers',
          `--namespaces=${fleetNamespace}`,
        ],
        logs.ksm,
      ),
    );

    const pm = await chartPodMonitor(c, fleetNamespace);
    const promKubeconfig = await tokenKubeconfig(c, MONITORING_NS, 'prometheus', join(dir, 'prometheus.kubeconfig'));
    const config = join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      stringify({
        global: { scrape_interval: SCRAPE_INTERVAL, evaluation_interval: SCRAPE_INTERVAL },
        scrape_configs: [
          podMonitorJob(pm, promKubeconfig),
          // kube-prometheus-stack scrapes kube-state-metrics with honor_labels (its namespace label is the object's).
          {
            job_name: 'kube-state-metrics',
            honor_labels: true,
            static_configs: [{ targets: [`127.0.0.1:${ksmPort}`] }],
          },
        ],
      }),
    );
    const promPort = await freePort();
    const promUrl = `http://${net.hostIp}:${promPort}`;
    procs.push(
      startProcess(
        join(bin, 'prometheus'),
        [
          `--config.file=${config}`,
          `--storage.tsdb.path=${join(dir, 'tsdb')}`,
          `--web.listen-address=${net.hostIp}:${promPort}`,
          '--storage.tsdb.retention.time=2h',
        ],
        logs.prometheus,
      ),
    );
    await waitFor(
      'Prometheus to be ready',
      async () => {
        if (procs[1]!.exitCode !== null) throw new Error(`prometheus exited:\n${tail(logs.prometheus)}`);
        return (await fetch(`${promUrl}/-/ready`).catch(() => undefined))?.ok || undefined;
      },
      60_000,
    );

    // The adapter's config is the documented rule, as the prometheus-adapter chart writes it
    // from its values (rules.custom becomes the config file's `rules`).
    const values = parse(readFileSync(join(CHART, 'examples', 'prometheus-adapter-values.yaml'), 'utf8')) as {
      rules: { custom: object[] };
    };
    const adapterConfig = join(dir, 'adapter-config.yaml');
    writeFileSync(adapterConfig, stringify({ rules: values.rules.custom }));
    const adapterKubeconfig = await tokenKubeconfig(c, MONITORING_NS, ADAPTER, join(dir, 'adapter.kubeconfig'));
    const adapter = startProcess(
      'ip',
      [
        'netns',
        'exec',
        net.ns,
        join(bin, 'prometheus-adapter'),
        `--bind-address=${net.nsIp}`,
        `--secure-port=${ADAPTER_PORT}`,
        // Self-signed serving certificate in --cert-dir, as the adapter's deploy manifests do.
        `--cert-dir=${join(dir, 'adapter-certs')}`,
        `--config=${adapterConfig}`,
        `--prometheus-url=${promUrl}/`,
        '--metrics-relist-interval=5s',
        // Series seen in the last minute count (default: one relist interval, which can fall between two scrapes).
        '--metrics-max-age=1m',
        `--lister-kubeconfig=${adapterKubeconfig}`,
        `--authentication-kubeconfig=${adapterKubeconfig}`,
        `--authorization-kubeconfig=${adapterKubeconfig}`,
        '--v=1',
      ],
      logs.adapter,
    );
    procs.push(adapter);
    const names = ['v1beta1', 'v1beta2'].map((v) => `${v}.custom.metrics.k8s.io`);
    await applyObjects(c, [
      ...directService(ADAPTER, MONITORING_NS, net.nsIp, ADAPTER_PORT),
      ...['v1beta1', 'v1beta2'].map((version, i) => ({
        apiVersion: 'apiregistration.k8s.io/v1',
        kind: 'APIService',
        metadata: { name: `${version}.custom.metrics.k8s.io` },
        spec: {
          group: 'custom.metrics.k8s.io',
          version,
          service: { name: ADAPTER, namespace: MONITORING_NS, port: 443 },
          // The adapter's own deploy manifests skip verification of its self-signed certificate.
          insecureSkipTLSVerify: true,
          groupPriorityMinimum: 100,
          versionPriority: 100 + 100 * i,
        },
      })),
    ]);
    await waitApiServices(c, names, [[adapter, logs.adapter]]);
    return {
      net,
      promUrl,
      logs,
      stop,
      async query(expr) {
        const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
        const body = (await r.json()) as { status: string; error?: string; data?: { result: PromSample[] } };
        if (body.status !== 'success') throw new Error(`PromQL ${expr}: ${body.error ?? r.status}`);
        return body.data!.result;
      },
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
