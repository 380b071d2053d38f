// One TransparentProxy per node, against a real kube-apiserver: a second object whose candidate
// nodes overlap an older one's is refused with a status naming the other object and the nodes, and
// nothing is applied for it (no DaemonSet, no node label); once the older one is gone (or the
// selectors are disjoint) it is reconciled without any other change.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import { activeLabelKey, MODE_ANNOTATION } from './render/names.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { startOperator, type RunningOperator } from '../e2e/testenv/operator.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

let env: TestEnv, c: KubeClient, op: RunningOperator;
type Obj = KubeObject & { spec?: any; status?: any };
const cond = (o: Obj | undefined, type: string) =>
  o?.status?.conditions?.find((x: { type: string }) => x.type === type);
const ds = (ns: string, name: string) => c.get<Obj>(`/apis/apps/v1/namespaces/${ns}/daemonsets/${name}`);
const tp = (ns: string, name: string, spec: unknown) =>
  c.create(tpPath(ns), { apiVersion: 'tpfleet.io/v1alpha1', kind: 'TransparentProxy', metadata: { name }, spec });

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-user');
  await installCrd(c);
  for (const ns of ['team-a', 'team-b']) await createNamespace(c, ns);
  for (const n of ['e1', 'e2']) await createNode(c, n, { labels: { pool: 'edge' } });
  for (const n of ['g1', 'g2']) await createNode(c, n, { labels: { pool: 'gateway' } });
  // No DaemonSet controller here: a test writes the cleanup DaemonSet's status the way it would.
  op = await startOperator(env.kubeconfigPath, { cleanupTimeoutMs: 3000 });
});
after(async () => {
  await op?.stop();
  await env?.stop();
});

test('overlapping candidate nodes: the newer TransparentProxy is refused, naming the older one and the nodes; nothing is applied for it', async () => {
  await tp('team-a', 'egress', { replicas: 1, nodeSelector: { pool: 'edge' } });
  await waitFor(
    'egress to run',
    async () =>
      (await ds('team-a', 'egress')) &&
      cond(await c.get<Obj>(tpPath('team-a', 'egress')), 'InvalidSpec')?.status === 'False',
  );
  // Every edge node (no selector: every node is a candidate) overlaps with egress.
  await tp('team-b', 'audit', { replicas: 1 });
  const audit = await waitFor('audit to be refused', async () => {
    const o = await c.get<Obj>(tpPath('team-b', 'audit'));
    return cond(o, 'InvalidSpec')?.status === 'True' && o;
  });
  assert.match(
    cond(audit, 'InvalidSpec').message,
    /^spec\.nodeSelector: node\(s\) e1, e2 are also selected by TransparentProxy team-a\/egress, which is older; one TransparentProxy per node/,
  );
  assert.equal(cond(audit, 'Ready').status, 'False');
  assert.equal(await ds('team-b', 'audit'), undefined, 'no DaemonSet for the refused object');
  const nodes = await c.list('/api/v1/nodes');
  assert.ok(
    !nodes.items.some((n) => n.metadata.labels?.[activeLabelKey('team-b', 'audit')]),
    'no node labelled for it',
  );
  // The older one is untouched.
  assert.equal(cond(await c.get<Obj>(tpPath('team-a', 'egress')), 'InvalidSpec')?.status, 'False');
});

test('disjoint selectors run side by side; deleting the older object frees its nodes for the one that waited', async () => {
  await c.mergePatch(tpPath('team-b', 'audit'), { spec: { nodeSelector: { pool: 'gateway' } } });
  await waitFor('audit to run on the gateway nodes', async () => {
    const o = await c.get<Obj>(tpPath('team-b', 'audit'));
    return cond(o, 'InvalidSpec')?.status === 'False' && (await ds('team-b', 'audit'));
  });
  // Back onto the edge pool: refused again while egress holds it...
  await c.mergePatch(tpPath('team-b', 'audit'), { spec: { nodeSelector: { pool: 'edge' } } });
  await waitFor(
    'audit to be refused again',
    async () => cond(await c.get<Obj>(tpPath('team-b', 'audit')), 'InvalidSpec')?.status === 'True',
  );
  // ...and accepted once egress is gone (its finalizer waits for the node cleanup, which never
  // gives up while a node holds rules: here the DaemonSet controller's report is written by hand).
  await c.delete(tpPath('team-a', 'egress'));
  const cleanupDs = await waitFor('cleanup mode', async () => {
    const d = await ds('team-a', 'egress');
    return d?.spec.template.metadata.annotations[MODE_ANNOTATION] === 'cleanup' && d;
  });
  // Its one active node ran the cleanup pod, which is Ready: the node reported done.
  await c.mergePatch(`/apis/apps/v1/namespaces/team-a/daemonsets/egress/status`, {
    status: {
      observedGeneration: cleanupDs.metadata.generation,
      desiredNumberScheduled: 1,
      currentNumberScheduled: 1,
      updatedNumberScheduled: 1,
      numberReady: 1,
      numberAvailable: 1,
      numberMisscheduled: 0,
    },
  });
  const audit = await waitFor(
    'audit to take the edge nodes',
    async () => {
      const o = await c.get<Obj>(tpPath('team-b', 'audit'));
      const d = await ds('team-b', 'audit');
      return cond(o, 'InvalidSpec')?.status === 'False' && d?.spec.template.spec.nodeSelector.pool === 'edge' && o;
    },
    60_000,
  );
  assert.equal(audit.status.candidates, 2);
});
