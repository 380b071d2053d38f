// The `local` provider's custom metrics: the custom-metrics-apiserver project's test adapter
// (tools/k8s/metrics-adapter) as a process in the provider's network namespace, registered as
// the aggregated API custom.metrics.k8s.io (v1beta1, v1beta2) the way its own deploy manifest
// does: a ServiceAccount with system:auth-delegator and extension-apiserver-authentication-reader
// (delegated authn/authz through the real API server) and read access to the objects it describes.
// The HPA controller reaches it with the bootstrap RBAC every cluster has. Tests set a pod's value
// through the adapter's /write-metrics endpoint (plain HTTP on :8080 inside the namespace).
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ensureBinaries } from '../testenv/binaries.ts';
import { startProcess, stopProcess, tail, type TestEnv } from '../testenv/testenv.ts';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import type { LocalNet } from './local-net.ts';

const NAME = 'custom-metrics-apiserver';
const NAMESPACE = 'kube-system';
const SECURE_PORT = 6443;
/** Fixed by the upstream test adapter (main.go listens on :8080); isolated by the namespace. */
const WRITE_PORT = 8080;
const VERSIONS = [
  { version: 'v1beta1', priority: 100 },
  { version: 'v1beta2', priority: 200 },
];

const meta = (name: string, namespace?: string) => ({
  name,
  ...(namespace ? { namespace } : {}),
  labels: { 'app.kubernetes.io/name': NAME },
});
const crb = (name: string, role: string) => ({
  apiVersion: 'rbac.authorization.k8s.io/v1',
  kind: 'ClusterRoleBinding',
  metadata: meta(name),
  roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
  subjects: [{ kind: 'ServiceAccount', name: NAME, namespace: NAMESPACE }],
});

/** The adapter's identity and RBAC, as test-adapter-deploy/testing-adapter.yaml grants them. */
function rbacObjects(): object[] {
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(NAME, NAMESPACE) },
    crb('custom-metrics:system:auth-delegator', 'system:auth-delegator'),
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: meta('custom-metrics-auth-reader', NAMESPACE),
      roleRef: {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Role',
        name: 'extension-apiserver-authentication-reader',
      },
      subjects: [{ kind: 'ServiceAccount', name: NAME, namespace: NAMESPACE }],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: meta('custom-metrics-resource-reader'),
      rules: [{ apiGroups: [''], resources: ['namespaces', 'pods', 'services'], verbs: ['get', 'list'] }],
    },
    crb('custom-metrics-resource-reader', 'custom-metrics-resource-reader'),
  ];
}

/**
 * The Service the APIServices name, without a selector (no pod backs it): its EndpointSlice
 * holds the adapter's address in the namespace, which the API server dials directly
 * (--enable-aggregator-routing). The port name ties the Service port to the slice's port.
 */
function serviceObjects(net: LocalNet, caBundle: string): object[] {
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(NAME, NAMESPACE),
      spec: { ports: [{ name: 'https', port: 443, targetPort: SECURE_PORT }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        ...meta(`${NAME}-local`, NAMESPACE),
        labels: { 'kubernetes.io/service-name': NAME, 'endpointslice.kubernetes.io/managed-by': 'tpfleet-e2e-local' },
      },
      addressType: 'IPv4',
      endpoints: [{ addresses: [net.nsIp], conditions: { ready: true } }],
      ports: [{ name: 'https', port: SECURE_PORT, protocol: 'TCP' }],
    },
    ...VERSIONS.map(({ version, priority }) => ({
      apiVersion: 'apiregistration.k8s.io/v1',
      kind: 'APIService',
      metadata: meta(`${version}.custom.metrics.k8s.io`),
      spec: {
        group: 'custom.metrics.k8s.io',
        version,
        service: { name: NAME, namespace: NAMESPACE, port: 443 },
        caBundle,
        groupPriorityMinimum: 100,
        versionPriority: priority,
      },
    })),
  ];
}

export interface MetricsAdapter {
  proc: ChildProcess;
  log: string;
  setPodMetric(namespace: string, pod: string, metric: string, value: number): Promise<void>;
}

/** Starts the adapter in `net`'s namespace and waits until both APIServices are Available. */
export async function startMetricsAdapter(env: TestEnv, net: LocalNet): Promise<MetricsAdapter> {
  const bin = await ensureBinaries(['metrics-adapter']);
  const c = { kubeconfigPath: env.kubeconfigPath };
  await kubectl(c, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: rbacObjects() }));
  // The in-cluster credential a pod of the adapter's Deployment would get: a bound token.
  const token = (await kubectl(c, ['create', 'token', NAME, '-n', NAMESPACE, '--duration=24h'])).trim();
  const caPem = readFileSync(env.pki.caCert, 'utf8');
  const kubeconfig = join(env.dir, 'metrics-adapter.kubeconfig');
  writeFileSync(
    kubeconfig,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'adapter',
      clusters: [
        {
          name: 'c',
          cluster: { server: env.server, 'certificate-authority-data': Buffer.from(caPem).toString('base64') },
        },
      ],
      users: [{ name: 'adapter', user: { token } }],
      contexts: [{ name: 'adapter', context: { cluster: 'c', user: 'adapter' } }],
    }),
    { mode: 0o600 },
  );
  const serving = await env.pki.server('metrics-adapter', `${NAME}.${NAMESPACE}.svc`, [
    `DNS:${NAME}.${NAMESPACE}.svc`,
    `IP:${net.nsIp}`,
  ]);
  const log = join(env.dir, 'metrics-adapter.log');
  // `ip netns exec` execs the adapter in place: the child's pid is the adapter's.
  const proc = startProcess(
    'ip',
    [
      'netns',
      'exec',
      net.ns,
      join(bin, 'metrics-adapter'),
      `--bind-address=${net.nsIp}`,
      `--secure-port=${SECURE_PORT}`,
      `--tls-cert-file=${serving.cert}`,
      `--tls-private-key-file=${serving.key}`,
      `--lister-kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      '--v=1',
    ],
    log,
  );
  try {
    await kubectl(
      c,
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: serviceObjects(net, Buffer.from(caPem).toString('base64')),
      }),
    );
    await waitFor(
      'the custom.metrics.k8s.io APIServices to be Available',
      async () => {
        if (proc.exitCode !== null || proc.signalCode !== null)
          throw new Error(`metrics adapter exited:\n${tail(log)}`);
        for (const { version } of VERSIONS) {
          const s = await kubectlJson(c, ['get', 'apiservice', `${version}.custom.metrics.k8s.io`]);
          const cond = s.status?.conditions?.find((x: { type: string }) => x.type === 'Available');
          if (cond?.status !== 'True')
            throw new Error(`${version}: ${cond?.reason ?? 'no status'}: ${cond?.message ?? ''}`);
        }
        return true;
      },
      60_000,
    );
  } catch (e) {
    await stopProcess(proc);
    throw e;
  }
  return {
    proc,
    log,
    async setPodMetric(namespace, pod, metric, value) {
      if (!Number.isFinite(value)) throw new Error(`setPodMetric: ${value} is not a finite number`);
      const path = ['namespaces', namespace, 'pods', pod, metric].map(encodeURIComponent).join('/');
      // The body is a resource.Quantity in JSON: a quoted decimal ("1e+21" is spelled "1e21").
      const res = await fetch(`http://${net.nsIp}:${WRITE_PORT}/write-metrics/${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(String(value).replace('e+', 'e')),
      });
      if (!res.ok)
        throw new Error(`setPodMetric ${namespace}/${pod} ${metric}=${value}: HTTP ${res.status} ${await res.text()}`);
    },
  };
}
