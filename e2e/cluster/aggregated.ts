// Running an extension API server (an adapter) as a process beside a test cluster, the way its
// Deployment would run in one: a bound ServiceAccount token in a kubeconfig, the Service and
// APIService it registers (the Service has no selector: its EndpointSlice names the process's
// address, which the API server dials directly with --enable-aggregator-routing), and the
// upstream manifests read from the pinned Go module in the module cache, never downloaded.
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { tail } from '../testenv/testenv.ts';
import { kubectl, kubectlJson, waitFor } from './kube.ts';

type Kube = { kubeconfigPath: string };
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

/** Waits until every APIService is Available, failing early when one of `procs` (process, log) exits. */
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
