// KEDA on the local-real cluster the way its release manifests run it (issue 16, ADR 0022): its
// CRDs and RBAC straight from the pinned Go module (config/crd/bases, config/rbac,
// config/metrics-server, config/service_account), keda-operator and keda-adapter (its metrics API
// server, registered as external.metrics.k8s.io) as processes with the keda-operator
// ServiceAccount's token, in the monitoring namespace's network namespace so the API server can
// reach the adapter and the adapter the operator's gRPC metrics service. The certificates KEDA's
// cert rotation would write to the kedaorg-certs Secret come from a throwaway CA instead
// (--enable-cert-rotation=false): one key pair for the gRPC link (mTLS) and the adapter's serving.
// Invariant: stop() ends both processes; startProcess' exit hook covers a dying test.
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBinaries } from '../testenv/binaries.ts';
import { TestPki } from '../testenv/certs.ts';
import { stopProcess } from '../testenv/testenv.ts';
import { kubectl, waitFor } from './kube.ts';
import type { LocalNet } from './local-net.ts';
import { applyObjects, directService, moduleDir, tokenKubeconfig, waitApiServices } from './aggregated.ts';

const NS = 'keda';
const SA = 'keda-operator';
const GRPC_PORT = 9666;
const ADAPTER_PORT = 6444;
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** `ip netns exec <ns> env K=V... bin args` with output to `log` (argv only, no shell). */
function inNetns(net: LocalNet, env: Record<string, string>, bin: string, args: string[], log: string): ChildProcess {
  const out = openSync(log, 'a');
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const p = spawn('ip', ['netns', 'exec', net.ns, 'env', ...envArgs, bin, ...args], { stdio: ['ignore', out, out] });
  live.add(p);
  p.on('exit', () => live.delete(p));
  return p;
}

export interface Keda {
  logs: { operator: string; adapter: string };
  stop(): Promise<void>;
}

/** What startKeda runs, built from tools/k8s (scripts/suite.ts builds them ahead, in the background). */
export const KEDA_BINARIES = ['keda-operator', 'keda-adapter'] as const;

export async function startKeda(c: { kubeconfigPath: string }, net: LocalNet, dir: string): Promise<Keda> {
  const bin = await ensureBinaries(KEDA_BINARIES);
  const mod = moduleDir('keda-operator', 'github.com/kedacore/keda/v2');
  mkdirSync(dir, { recursive: true });
  await kubectl(c, ['create', 'namespace', NS]);
  const crds = join(mod, 'config', 'crd', 'bases');
  for (const f of readdirSync(crds)
    .filter((x) => x.endsWith('.yaml'))
    .sort())
    await kubectl(c, ['apply', '--server-side', '-f', join(crds, f)]);
  for (const f of [
    'service_account/service_account.yaml',
    'rbac/role.yaml',
    'rbac/role_binding.yaml',
    'metrics-server/role.yaml',
    'metrics-server/role_binding.yaml',
  ])
    await kubectl(c, ['apply', '-f', join(mod, 'config', f)]);
  await waitFor(
    'the KEDA CRDs to be established',
    async () => {
      await kubectl(c, ['get', 'scaledobjects', '-A']);
      return true;
    },
    30_000,
  );

  const pki = new TestPki(join(dir, 'pki'), 'keda-e2e-ca');
  mkdirSync(pki.dir, { recursive: true });
  await pki.init();
  const pair = await pki.peer('keda', 'keda-operator.keda.svc', [
    `IP:${net.nsIp}`,
    'DNS:keda-operator.keda.svc',
    'DNS:keda-metrics-apiserver.keda.svc',
  ]);
  const certs = join(dir, 'certs');
  mkdirSync(certs, { recursive: true });
  copyFileSync(pki.caCert, join(certs, 'ca.crt'));
  copyFileSync(pair.cert, join(certs, 'tls.crt'));
  copyFileSync(pair.key, join(certs, 'tls.key'));

  const kubeconfig = await tokenKubeconfig(c, NS, SA, join(dir, 'keda.kubeconfig'));
  const env = {
    KUBECONFIG: kubeconfig,
    WATCH_NAMESPACE: '',
    POD_NAMESPACE: NS,
    KEDA_CLUSTER_OBJECT_NAMESPACE: NS,
  };
  const logs = { operator: join(dir, 'keda-operator.log'), adapter: join(dir, 'keda-adapter.log') };
  const procs: ChildProcess[] = [];
  const stop = async () => {
    for (const p of procs.reverse()) await stopProcess(p);
  };
  try {
    procs.push(
      inNetns(
        net,
        env,
        join(bin, 'keda-operator'),
        [
          '--leader-elect=false',
          '--enable-cert-rotation=false',
          `--cert-dir=${certs}`,
          `--metrics-bind-address=${net.nsIp}:18080`,
          `--health-probe-bind-address=${net.nsIp}:18081`,
          `--metrics-service-bind-address=${net.nsIp}:${GRPC_PORT}`,
          '--zap-log-level=info',
        ],
        logs.operator,
      ),
    );
    const adapter = inNetns(
      net,
      env,
      join(bin, 'keda-adapter'),
      [
        `--bind-address=${net.nsIp}`,
        `--secure-port=${ADAPTER_PORT}`,
        `--tls-cert-file=${join(certs, 'tls.crt')}`,
        `--tls-private-key-file=${join(certs, 'tls.key')}`,
        `--cert-dir=${certs}`,
        '--port=18082',
        `--metrics-service-address=${net.nsIp}:${GRPC_PORT}`,
        `--lister-kubeconfig=${kubeconfig}`,
        `--authentication-kubeconfig=${kubeconfig}`,
        `--authorization-kubeconfig=${kubeconfig}`,
        '--zap-log-level=info',
      ],
      logs.adapter,
    );
    procs.push(adapter);
    const caBundle = Buffer.from(pki.read(pki.caCert)).toString('base64');
    await applyObjects(c, [
      ...directService('keda-metrics-apiserver', NS, net.nsIp, ADAPTER_PORT),
      {
        apiVersion: 'apiregistration.k8s.io/v1',
        kind: 'APIService',
        metadata: { name: 'v1beta1.external.metrics.k8s.io' },
        spec: {
          group: 'external.metrics.k8s.io',
          version: 'v1beta1',
          service: { name: 'keda-metrics-apiserver', namespace: NS, port: 443 },
          caBundle,
          groupPriorityMinimum: 100,
          versionPriority: 100,
        },
      },
    ]);
    await waitApiServices(
      c,
      ['v1beta1.external.metrics.k8s.io'],
      [
        [procs[0]!, logs.operator],
        [adapter, logs.adapter],
      ],
    );
    return { logs, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
