// The operator as a process (operator/main.ts, as deployed) against a real kube-apiserver:
// SIGKILL mid-reconcile then restart converges with no duplicate objects; in steady state it
// makes no writes for 30 s (no hot loop); a standby replica takes over the Lease when the leader
// stops; /healthz and /readyz answer.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import { INTERCEPTION_TAINT } from '../api/defaults.ts';
import { activeLabelKey, commonLabels } from './render/names.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { freePort, startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

let env: TestEnv, c: KubeClient;
const NS = 'restart';
const repo = join(import.meta.dirname, '..');
const procs = new Set<ChildProcess>();
type Obj = KubeObject & { spec?: any; status?: any };

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-user');
  await installCrd(c);
  await createNamespace(c, NS);
  await createNamespace(c, 'tpfleet-system');
  for (const [n, z] of [
    ['r1', 'a'],
    ['r2', 'b'],
    ['r3', 'c'],
  ] as const)
    await createNode(c, n, { zone: z });
});
after(async () => {
  for (const p of procs) p.kill('SIGKILL');
  await env?.stop();
});

interface Op {
  proc: ChildProcess;
  port: number;
}
async function spawnOperator(identity: string, extra: string[] = []): Promise<Op> {
  const port = await freePort();
  const log = openSync(join(env.dir, `operator-${identity}.log`), 'a');
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'operator/main.ts',
      '--kubeconfig',
      env.kubeconfigPath,
      '--bind',
      `127.0.0.1:${port}`,
      '--identity',
      identity,
      '--lease-duration',
      '4s',
      '--log-level',
      'info',
      // The webhook is admission.apiserver.test.ts's; two processes here would race for its port.
      '--webhook=false',
      `--namespaces=${NS}`,
      ...extra,
    ],
    { cwd: repo, stdio: ['ignore', log, log] },
  );
  procs.add(proc);
  proc.on('exit', () => procs.delete(proc));
  await waitFor(`${identity} /readyz`, async () => (await scrape(port, '/readyz')).startsWith('ok'), 30_000);
  return { proc, port };
}
function scrape(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve(b));
    }).on('error', reject);
  });
}
/** Sum of a counter/gauge family in a Prometheus text scrape. */
async function metric(op: Op, name: string): Promise<number> {
  const text = await scrape(op.port, '/metrics');
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .reduce((s, l) => s + Number(l.split(' ').pop()), 0);
}
async function stop(op: Op, signal: NodeJS.Signals): Promise<void> {
  const exited = new Promise((r) => op.proc.once('exit', r));
  op.proc.kill(signal);
  await exited;
}
const list = async (path: string) =>
  (await c.list(path, { labelSelector: 'app.kubernetes.io/instance=x' })).items.map((o) => o.metadata.name);
const activeNodes = async () =>
  (await c.list('/api/v1/nodes', { labelSelector: `${activeLabelKey(NS, 'x')}=true` })).items.map(
    (n) => n.metadata.name,
  );

let leader: Op;

test('killed mid-reconcile (SIGKILL), a restarted operator converges with no duplicate objects', async () => {
  // Writes of the first reconcile: finalizer, 2 node labels, ServiceAccount, the agent's Role and
  // RoleBinding, ConfigMap, then the DaemonSet: the process SIGKILLs itself instead of sending that
  // eighth write.
  const first = await spawnOperator('first', ['--crash-after-writes', '7']);
  const exited = new Promise((r) => first.proc.once('exit', (_code, signal) => r(signal)));
  await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'x' },
    spec: { replicas: 2 },
  });
  assert.equal(await exited, 'SIGKILL');
  const atKill = await c.get<Obj>(tpPath(NS, 'x'));
  assert.equal(atKill?.status?.observedGeneration, undefined, 'killed before the reconcile finished');
  assert.deepEqual(await list(`/api/v1/namespaces/${NS}/configmaps`), ['x-nodeconfig'], 'ConfigMap written');
  assert.deepEqual(await list(`/apis/apps/v1/namespaces/${NS}/daemonsets`), [], 'DaemonSet not yet');
  assert.equal((await activeNodes()).length, 2);
  // The killed replica still holds the lease: the new one waits for it to expire (4 s).
  leader = await spawnOperator('second');
  const t = await waitFor(
    'converged',
    async () => {
      const o = await c.get<Obj>(tpPath(NS, 'x'));
      return o?.status?.observedGeneration === o?.metadata.generation && o?.status?.replicas === 2 && o;
    },
    30_000,
  );
  assert.equal(t.status.nodes.length, 2);
  assert.deepEqual(await list(`/apis/apps/v1/namespaces/${NS}/daemonsets`), ['x', 'x-leave']);
  assert.deepEqual(await list(`/api/v1/namespaces/${NS}/configmaps`), ['x-nodeconfig']);
  assert.deepEqual(await list(`/api/v1/namespaces/${NS}/serviceaccounts`), ['x']);
  assert.deepEqual(await list(`/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/roles`), ['x-node-agent']);
  assert.deepEqual(await list(`/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings`), ['x-node-agent']);
  assert.deepEqual(await list(`/api/v1/namespaces/${NS}/services`), ['x-metrics']);
  assert.equal((await activeNodes()).length, 2);
  assert.equal(await metric(leader, 'tpfleet_operator_leader'), 1);
});

/** Nodes carrying the interception readiness taint (ADR 0019), by name. */
const tainted = async () =>
  ((await c.list('/api/v1/nodes')).items as Obj[])
    .filter((n) => (n.spec?.taints ?? []).some((t: { key: string }) => t.key === INTERCEPTION_TAINT))
    .map((n) => n.metadata.name)
    .sort();

test('steady state: no API writes and no object changes over 30 s (no hot loop)', async () => {
  // Both taint states held steady: one active node with a Ready proxy pod (untainted), the other
  // without one (tainted). No kubelet runs here: the pod and its Ready condition are written by hand.
  const [withPod, withoutPod] = await activeNodes();
  const pod = await c.create<Obj>(`/api/v1/namespaces/${NS}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'x-steady', labels: commonLabels('x'), annotations: { 'tpfleet.io/mode': 'run' } },
    spec: { nodeName: withPod, containers: [{ name: 'sidecar', image: 'tpfleet/node:test' }] },
  });
  await c.mergePatch(`/api/v1/namespaces/${NS}/pods/${pod.metadata.name}/status`, {
    status: { conditions: [{ type: 'Ready', status: 'True' }] },
  });
  await waitFor('only the node without a Ready proxy pod tainted', async () => (await tainted()).join() === withoutPod);
  await new Promise((r) => setTimeout(r, 2000));
  const snapshot = async () => {
    const paths = [
      tpPath(NS, 'x'),
      `/apis/apps/v1/namespaces/${NS}/daemonsets/x`,
      `/api/v1/namespaces/${NS}/configmaps/x-nodeconfig`,
      `/api/v1/namespaces/${NS}/services/x-metrics`,
      `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/roles/x-node-agent`,
      `/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings/x-node-agent`,
      '/api/v1/nodes/r1',
      '/api/v1/nodes/r2',
      '/api/v1/nodes/r3',
    ];
    return Promise.all(paths.map(async (p) => `${p}@${(await c.get(p))?.metadata.resourceVersion}`));
  };
  const [w0, r0, s0] = [
    await metric(leader, 'tpfleet_operator_api_writes_total'),
    await metric(leader, 'tpfleet_operator_reconcile_total'),
    await snapshot(),
  ];
  await new Promise((r) => setTimeout(r, 30_000));
  const [w1, s1] = [await metric(leader, 'tpfleet_operator_api_writes_total'), await snapshot()];
  assert.equal(w1, w0, 'no writes');
  assert.deepEqual(s1, s0, 'no object changed');
  assert.ok(r0 > 0, 'the operator did reconcile before');
  assert.deepEqual(await tainted(), [withoutPod], 'the taints held');
  await c.delete(`/api/v1/namespaces/${NS}/pods/${pod.metadata.name}`, { gracePeriodSeconds: '0' });
});

test('a standby replica does not write, and takes over when the leader stops', async () => {
  const standby = await spawnOperator('standby');
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(await metric(standby, 'tpfleet_operator_leader'), 0);
  assert.equal(await metric(standby, 'tpfleet_operator_api_writes_total'), 0, 'standby wrote nothing');
  await stop(leader, 'SIGTERM');
  await waitFor('standby leads', async () => (await metric(standby, 'tpfleet_operator_leader')) === 1, 15_000);
  await c.mergePatch(tpPath(NS, 'x', 'scale'), { spec: { replicas: 3 } });
  await waitFor('new leader reconciles', async () => (await activeNodes()).length === 3);
  assert.equal(await scrape(standby.port, '/healthz'), 'ok\n');
  await stop(standby, 'SIGTERM');
});
