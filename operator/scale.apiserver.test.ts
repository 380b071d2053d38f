// Scaling across nodes against a real kube-apiserver: spec.replicas picks active nodes spread
// over zones; `kubectl scale` and an HPA-style write to /scale change which Node objects are
// active with minimal churn; an unready node is replaced; omitting replicas activates every
// candidate and clears the labels.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import { activeLabelKey } from './render/names.ts';
import {
  completeLeaves,
  createNamespace,
  createNode,
  installCrd,
  setNodeReady,
  tpPath,
  waitFor,
} from '../e2e/testenv/fixtures.ts';
import { startOperator, type RunningOperator } from '../e2e/testenv/operator.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

let env: TestEnv, c: KubeClient, op: RunningOperator;
const NS = 'scale';
const LABEL = activeLabelKey(NS, 'edge');
type Obj = KubeObject & { spec?: any; status?: any };
const ZONES: Record<string, string> = { a1: 'a', a2: 'a', a3: 'a', b1: 'b', b2: 'b', c1: 'c', c2: 'c' };

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-user');
  await installCrd(c);
  await createNamespace(c, NS);
  for (const [name, zone] of Object.entries(ZONES)) await createNode(c, name, { zone, labels: { pool: 'edge' } });
  await createNode(c, 'other', { zone: 'a' });
  await createNode(c, 'tainted', {
    zone: 'b',
    labels: { pool: 'edge' },
    taints: [{ key: 'dedicated', value: 'db', effect: 'NoSchedule' }],
  });
  op = await startOperator(env.kubeconfigPath);
});
after(async () => {
  await op?.stop();
  await env?.stop();
});

async function activeNodes(): Promise<string[]> {
  const list = await c.list('/api/v1/nodes', { labelSelector: `${LABEL}=true` });
  return list.items.map((n) => n.metadata.name).sort();
}
const tp = () => c.get<Obj>(tpPath(NS, 'edge'));
/** Waits for `count` active nodes, every leaving node having left (its leave pod Ready), and status agreeing. */
async function settle(count: number): Promise<string[]> {
  return waitFor(`${count} active nodes`, async () => {
    const leaving = await completeLeaves(c, NS, 'edge', LABEL);
    const nodes = await activeNodes();
    const t = await tp();
    return (
      leaving.length === 0 &&
      nodes.length === count &&
      t?.status?.replicas === count &&
      t.status.observedGeneration === t.metadata.generation &&
      t.status.nodes.every((n: { state: string }) => n.state === 'Active') &&
      nodes
    );
  });
}
const zonesOf = (nodes: string[]) => nodes.map((n) => ZONES[n]).sort();

test('replicas: 3 picks three candidate nodes, one per zone, and pins the DaemonSet to them', async () => {
  await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'edge' },
    spec: { replicas: 3, nodeSelector: { pool: 'edge' } },
  });
  const nodes = await settle(3);
  assert.deepEqual(zonesOf(nodes), ['a', 'b', 'c']);
  const ds = await c.get<Obj>(`/apis/apps/v1/namespaces/${NS}/daemonsets/edge`);
  assert.deepEqual(ds?.spec.template.spec.nodeSelector, { 'kubernetes.io/os': 'linux', pool: 'edge', [LABEL]: 'true' });
  const t = (await tp())!;
  assert.equal(t.status.candidates, 7, 'the untolerated tainted node and the node outside the pool are not candidates');
  assert.deepEqual(
    t.status.nodes.map((n: any) => n.name),
    nodes,
  );
  const scale = await c.request<any>('GET', tpPath(NS, 'edge', 'scale'));
  assert.deepEqual(
    [scale.spec.replicas, scale.status.replicas, scale.status.selector],
    [3, 3, 'app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=edge'],
  );
});

test('kubectl scale --replicas=5 adds exactly two nodes and keeps the three', async () => {
  const before = await activeNodes();
  // The real kubectl, built from the same pinned Kubernetes release as the API server.
  const out = await env.kubectl(['-n', NS, 'scale', 'tproxy/edge', '--replicas=5']);
  assert.match(out, /transparentproxy\.tpfleet\.io\/edge scaled/);
  const nodes = await settle(5);
  assert.ok(
    before.every((n) => nodes.includes(n)),
    `kept ${before} in ${nodes}`,
  );
  const perZone = zonesOf(nodes).reduce((m, z) => m.set(z ?? '', (m.get(z ?? '') ?? 0) + 1), new Map<string, number>());
  assert.ok(Math.max(...perZone.values()) - Math.min(...perZone.values()) <= 1, `spread ${[...perZone]}`);
});

test('an HPA-style update of /scale to 2 removes exactly three nodes and keeps two of the five', async () => {
  const before = await activeNodes();
  // The HPA controller reads the Scale object and writes it back with a new spec.replicas (PUT).
  const scale = await c.request<any>('GET', tpPath(NS, 'edge', 'scale'));
  await c.request('PUT', tpPath(NS, 'edge', 'scale'), { body: { ...scale, spec: { replicas: 2 } } });
  // The three go through "leaving": their proxy pods stop, the leave pods restore them.
  const t = await waitFor('three nodes draining', async () => {
    const o = await tp();
    return o?.status?.nodes?.filter((n: { state: string }) => n.state === 'Draining').length === 3 && o;
  });
  const draining = t.status.nodes
    .filter((n: { state: string }) => n.state === 'Draining')
    .map((n: { name: string }) => n.name);
  assert.deepEqual(
    await completeLeaves(c, NS, 'edge', LABEL, () => false),
    draining,
    'labelled leaving, waiting for their leave pods',
  );
  assert.equal(t.status.replicas, 2, '/scale already reports the new count');
  // (Progressing says NodesLeaving once the DaemonSet rolled out; no DaemonSet controller runs here.)
  assert.equal(t.status.conditions.find((x: { type: string }) => x.type === 'Progressing').status, 'True');
  const nodes = await settle(2);
  assert.deepEqual(
    (await c.list('/api/v1/nodes', { labelSelector: LABEL })).items.length,
    2,
    'the left nodes lost the label',
  );
  assert.ok(
    nodes.every((n) => before.includes(n)),
    `${nodes} ⊂ ${before}`,
  );
  assert.notEqual(ZONES[nodes[0]!], ZONES[nodes[1]!], 'still spread over two zones');
  assert.equal((await tp())?.spec.replicas, 2);
});

test('an active node going NotReady is replaced, preferably in its zone', async () => {
  const before = await activeNodes();
  const lost = before[0]!;
  await setNodeReady(c, lost, false);
  const nodes = await waitFor('replacement', async () => {
    const n = await activeNodes();
    return n.length === 2 && !n.includes(lost) && n;
  });
  assert.ok(nodes.includes(before[1]!), 'the healthy node stays');
  const replacement = nodes.find((n) => n !== before[1])!;
  assert.equal(ZONES[replacement], ZONES[lost]);
  // The lost node keeps "leaving" until its leave pod can run there and restore it.
  assert.equal((await c.get(`/api/v1/nodes/${lost}`))!.metadata.labels![LABEL], 'leaving');
  await setNodeReady(c, lost, true);
  await settle(2);
  assert.equal(
    (await c.get(`/api/v1/nodes/${lost}`))!.metadata.labels![LABEL],
    undefined,
    'back and restored: it has left',
  );
});

test('tolerating a taint makes the tainted node a candidate', async () => {
  await c.mergePatch(tpPath(NS, 'edge'), {
    spec: { tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'db', effect: 'NoSchedule' }] },
  });
  await waitFor('8 candidates', async () => (await tp())?.status?.candidates === 8);
});

test('omitting replicas activates every candidate; the DaemonSet drops the label before the nodes do', async () => {
  // One node is still leaving (its leave pod not Ready yet) when the count goes away.
  await c.mergePatch(tpPath(NS, 'edge'), { spec: { replicas: 1 } });
  const leaving = await waitFor('a node leaving', async () => {
    const l = (await c.list('/api/v1/nodes', { labelSelector: `${LABEL}=leaving` })).items.map((n) => n.metadata.name);
    return l.length === 1 && l;
  });
  const labeled = await activeNodes();
  await c.jsonPatch(tpPath(NS, 'edge'), [{ op: 'remove', path: '/spec/replicas' }]);
  await waitFor('labels cleared', async () => (await activeNodes()).length === 0);
  const mid = await waitFor('every candidate but the leaving one', async () => {
    const o = await tp();
    return o?.status?.replicas === 7 && o;
  });
  assert.deepEqual(
    mid.status.nodes.filter((n: { state: string }) => n.state === 'Draining').map((n: { name: string }) => n.name),
    leaving,
  );
  assert.equal(
    (await c.get(`/api/v1/nodes/${leaving[0]}`))!.metadata.labels![LABEL],
    'leaving',
    'it keeps its label until it has left',
  );
  const t = await waitFor('all candidates', async () => {
    await completeLeaves(c, NS, 'edge', LABEL);
    const o = await tp();
    return o?.status?.replicas === 8 && o;
  });
  assert.equal((await c.get(`/api/v1/nodes/${leaving[0]}`))!.metadata.labels![LABEL], undefined);
  assert.equal(t.status.nodes.length, 8);
  const ds = await c.get<Obj>(`/apis/apps/v1/namespaces/${NS}/daemonsets/edge`);
  assert.equal(ds?.spec.template.spec.nodeSelector[LABEL], undefined);
  // Order matters: labels removed first would make the DaemonSet select no node for a moment.
  // With etcd, resourceVersion is the global revision, so it orders writes across objects.
  for (const n of labeled) {
    const node = await c.get(`/api/v1/nodes/${n}`);
    assert.ok(
      Number(ds!.metadata.resourceVersion) < Number(node!.metadata.resourceVersion),
      `DaemonSet updated before ${n} lost its label`,
    );
  }
});

test('a TransparentProxy removed by force (finalizer stripped by hand) leaves no node labels behind', async () => {
  const label = activeLabelKey(NS, 'forced');
  // Nodes of its own: candidates of 'edge' would make this second object a conflict (conflicts.ts).
  for (const n of ['f1', 'f2']) await createNode(c, n, { labels: { pool: 'forced' } });
  await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'forced' },
    spec: { replicas: 2, nodeSelector: { pool: 'forced' } },
  });
  await waitFor(
    'labels',
    async () => (await c.list('/api/v1/nodes', { labelSelector: `${label}=true` })).items.length === 2,
  );
  await c.delete(tpPath(NS, 'forced'));
  await c.mergePatch(tpPath(NS, 'forced'), { metadata: { finalizers: null } });
  await waitFor('gone', async () => !(await c.get(tpPath(NS, 'forced'))));
  await waitFor(
    'labels cleared',
    async () => (await c.list('/api/v1/nodes', { labelSelector: `${label}=true` })).items.length === 0,
  );
});
