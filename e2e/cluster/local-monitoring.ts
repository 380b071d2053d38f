// Monitoring on the local-real cluster the way users run it (issue 16, ADR 0022): Prometheus
// (tools/k8s/prometheus) discovering the node sidecars through Kubernetes service discovery with
// the scrape job the Prometheus Operator generates from the chart's own PodMonitor
// (podmonitor.ts), kube-state-metrics for the dashboard's HPA panels, and prometheus-adapter
// serving custom.metrics.k8s.io with the rule of charts/tpfleet/examples/prometheus-adapter-values.yaml.
// Each runs as a process with its own ServiceAccount's token and the RBAC its upstream manifests
// grant (read from its Go module). Prometheus and kube-state-metrics run on the host, which routes
// to every node; the aggregated API servers listen in a network namespace of their own (Endpoint
// validation refuses loopback addresses, see local-net.ts) with a default route to the host.
// Invariant: stop() ends every process started here and removes the namespace; the harness's exit
// hooks (startProcess, local-net.ts) do the same if the test dies first.
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { ensureBinaries } from '../testenv/binaries.ts';
import { freePort, startProcess, stopProcess, tail } from '../testenv/testenv.ts';
import { applyObjects, directService, moduleDir, tokenKubeconfig, waitApiServices } from './aggregated.ts';
import { CHART } from './install.ts';
import { kubectl, waitFor } from './kube.ts';
import { createLocalNet, type LocalNet } from './local-net.ts';
import { chartPodMonitor, podMonitorJob } from './podmonitor.ts';

const run = promisify(execFile);
export const MONITORING_NS = 'monitoring';
const ADAPTER = 'prometheus-adapter';
const ADAPTER_PORT = 6443;
/** Prometheus scrapes every 5 s here (users: 30 s) so the HPA sees load within seconds. */
export const SCRAPE_INTERVAL = '5s';
type Kube = { kubeconfigPath: string };
export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface Monitoring {
  net: LocalNet;
  /** Prometheus' base URL, reachable from the host and from `net`'s namespace. */
  promUrl: string;
  query(expr: string): Promise<PromSample[]>;
  logs: Record<'prometheus' | 'ksm' | 'adapter', string>;
  stop(): Promise<void>;
}

/** What startMonitoring runs, built from tools/k8s (scripts/suite.ts builds them ahead, in the background). */
export const MONITORING_BINARIES = ['prometheus', 'prometheus-adapter', 'kube-state-metrics'] as const;

/** Starts Prometheus, kube-state-metrics and prometheus-adapter; resolves once the APIServices are Available. */
export async function startMonitoring(c: Kube, fleetNamespace: string, dir: string): Promise<Monitoring> {
  const bin = await ensureBinaries(MONITORING_BINARIES);
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

    const pm = await chartPodMonitor(c, fleetNamespace, SCRAPE_INTERVAL);
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
