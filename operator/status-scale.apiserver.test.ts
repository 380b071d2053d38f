// Status above NODES_LISTED_MAX nodes against a real kube-apiserver (issue 17): 150 Node objects,
// one TransparentProxy with replicas over all of them. The stored status lists only the nodes needing attention
// plus counts, /scale and `kubectl get` still show every active node, and Events stay exact although
// the stored list no longer names every node (derived from the full view, also after a restart).
// No kubelet runs here, so no proxy pod is ever Ready: every active node is "not ready".
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { NODES_LISTED_MAX } from '../api/transparentproxy-status.ts';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { startOperator, type RunningOperator } from '../e2e/testenv/operator.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

let env: TestEnv, c: KubeClient, op: RunningOperator;
const NS = 'wide';
const NODES = 150;
type Obj = KubeObject & { status?: any };

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-user');
  await installCrd(c);
  await createNamespace(c, NS);
  for (let i = 0; i < NODES; i++)
    await createNode(c, `w${String(i).padStart(3, '0')}`, { zone: 'abc'[i % 3], labels: { pool: 'wide' } });
  op = await startOperator(env.kubeconfigPath);
});
after(async () => {
  await op?.stop();
  await env?.stop();
});

const activated = async () => {
  const list = await c.list(`/apis/events.k8s.io/v1/namespaces/${NS}/events`, {
    fieldSelector: 'regarding.kind=TransparentProxy,regarding.name=wide,reason=NodeActivated',
  });
  return (list.items as unknown as { metadata: { name: string }; note: string }[])
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
    .map((e) => e.note);
};
const tp = () => c.get<Obj>(tpPath(NS, 'wide'));
const settled = (n: number) =>
  waitFor(`${n} active nodes in status`, async () => {
    const t = await tp();
    return t?.status?.replicas === n && t.status.nodeCounts?.active === n && t;
  });

test(`${NODES} nodes: bounded status, /scale and columns right, Events exact after a restart too`, async () => {
  await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'wide' },
    spec: { replicas: NODES, nodeSelector: { pool: 'wide' } },
  });
  const t = await settled(NODES);
  assert.equal(t.status.nodes.length, NODES_LISTED_MAX, 'every node is not ready (no kubelet): listed up to the cap');
  assert.deepEqual(t.status.nodeCounts, {
    active: NODES,
    ready: 0,
    notReady: NODES,
    draining: 0,
    configRefused: 0,
    tuningDegraded: 0,
    omitted: NODES - NODES_LISTED_MAX,
  });
  const scale = JSON.parse(await env.kubectl(['get', '--raw', `${tpPath(NS, 'wide', 'scale')}`]));
  assert.equal(scale.status.replicas, NODES, '/scale status.replicas counts every active node');
  assert.match(scale.status.selector, /app\.kubernetes\.io\/instance=wide/);
  const row = await env.kubectl(['get', 'tproxy', 'wide', '-n', NS, '--no-headers', '-o', 'wide']);
  assert.match(row, new RegExp(`^wide\\s+False\\s+${NODES}\\s+0\\s+${NODES}\\s+`), `printer columns: ${row}`);

  await waitFor('one activation Event', async () => (await activated()).length === 1);
  assert.match((await activated())[0]!, /^node\(s\) w000, w001, .* and 140 more intercept now \(active\)$/);

  // A node joins and the fleet scales onto it (/scale, as the HPA does): one Event naming it alone
  // (the 50 unlisted nodes were active before, not new).
  await createNode(c, 'x1', { zone: 'a', labels: { pool: 'wide' } });
  await env.kubectl(['scale', 'tproxy/wide', '-n', NS, `--replicas=${NODES + 1}`]);
  await settled(NODES + 1);
  await waitFor('the second activation Event', async () => (await activated()).length === 2);
  assert.equal((await activated())[1], 'node(s) x1 intercept now (active)');

  // A new operator process has only the stored, bounded status: still no Event for unlisted nodes.
  await op.stop();
  op = await startOperator(env.kubeconfigPath);
  await new Promise((r) => setTimeout(r, 2000)); // its first reconcile, before the next node joins
  await createNode(c, 'x2', { zone: 'b', labels: { pool: 'wide' } });
  await env.kubectl(['scale', 'tproxy/wide', '-n', NS, `--replicas=${NODES + 2}`]);
  await settled(NODES + 2);
  await waitFor('the third activation Event', async () => (await activated()).length === 3);
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual((await activated()).slice(1), [
    'node(s) x1 intercept now (active)',
    'node(s) x2 intercept now (active)',
  ]);
});
