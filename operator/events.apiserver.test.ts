// The Events a user sees on a TransparentProxy, against a real kube-apiserver: activation, scale-out
// and scale-in (draining, restored) as `kubectl describe` and `kubectl get events` show them, each
// once (a resync repeats none); a refused spec names the field; the recorder aggregates a repeat
// into a series on one object and stops at its rate limit.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import { BURST, EventRecorder } from './events.ts';
import { activeLabelKey } from './render/names.ts';
import { completeLeaves, createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { startOperator, type RunningOperator } from '../e2e/testenv/operator.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

let env: TestEnv, c: KubeClient, op: RunningOperator;
const NS = 'events';
const LABEL = activeLabelKey(NS, 'edge');
type Obj = KubeObject & { spec?: any; status?: any };
interface Ev {
  metadata: { name: string };
  type: string;
  reason: string;
  note: string;
  action: string;
  reportingController: string;
  regarding: { kind: string; name: string };
  related?: { kind: string; name: string };
  series?: { count: number };
}

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-user');
  await installCrd(c);
  await createNamespace(c, NS);
  for (const [name, zone] of [
    ['n1', 'a'],
    ['n2', 'b'],
  ] as const)
    await createNode(c, name, { zone, labels: { pool: 'edge' } });
  op = await startOperator(env.kubeconfigPath);
});
after(async () => {
  await op?.stop();
  await env?.stop();
});

/** Events regarding TransparentProxy `name`, oldest first (names end in the creation time in hex). */
async function events(name = 'edge'): Promise<Ev[]> {
  const list = await c.list(`/apis/events.k8s.io/v1/namespaces/${NS}/events`, {
    fieldSelector: `regarding.kind=TransparentProxy,regarding.name=${name}`,
  });
  return (list.items as unknown as Ev[]).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
}
const seen = async (name?: string) => (await events(name)).map((e) => `${e.type} ${e.reason}: ${e.note}`);
const active = async () =>
  (await c.list('/api/v1/nodes', { labelSelector: `${LABEL}=true` })).items.map((n) => n.metadata.name).sort();
const tp = () => c.get<Obj>(tpPath(NS, 'edge'));
async function settle(count: number): Promise<string[]> {
  return waitFor(`${count} active nodes`, async () => {
    const leaving = await completeLeaves(c, NS, 'edge', LABEL);
    const nodes = await active();
    const t = await tp();
    return (
      leaving.length === 0 &&
      nodes.length === count &&
      t?.status?.replicas === count &&
      t.status.nodes.every((n: { state: string }) => n.state === 'Active') &&
      nodes
    );
  });
}

test('activation → scale-out → scale-in: the Events kubectl describe shows, each once', async () => {
  await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'edge' },
    spec: { replicas: 1, nodeSelector: { pool: 'edge' } },
  });
  const [first] = await settle(1);
  const other = first === 'n1' ? 'n2' : 'n1';
  await waitFor('activation Event', async () => (await events()).length >= 1);
  const [activated] = await events();
  assert.equal(activated?.reason, 'NodeActivated');
  assert.equal(activated?.type, 'Normal');
  assert.equal(activated?.action, 'Activate');
  assert.equal(activated?.reportingController, 'tpfleet.io/operator');
  assert.deepEqual(activated?.related, { apiVersion: 'v1', kind: 'Node', name: first }, 'the node, related');

  await env.kubectl(['scale', 'tproxy/edge', '-n', NS, '--replicas=2']);
  await settle(2);
  await env.kubectl(['scale', 'tproxy/edge', '-n', NS, '--replicas=1']);
  const [kept] = await settle(1);
  const gone = kept === first ? other : first;
  const want = [
    `Normal NodeActivated: node(s) ${first} intercept now (active)`,
    `Normal NodeActivated: node(s) ${other} intercept now (active)`,
    'Normal Scaled: active nodes 1 -> 2 (spec.replicas 2)',
    `Normal NodeDraining: node(s) ${gone} leave the active set: draining, then restoring rules, routes and tuning`,
    'Normal Scaled: active nodes 2 -> 1 (spec.replicas 1)',
    `Normal NodeRestored: node(s) ${gone} left: rules, routes and tuning restored, active label removed`,
  ];
  await waitFor('every transition recorded', async () => (await events()).length >= want.length);
  assert.deepEqual(await seen(), want);

  // A resync re-reconciles everything: the stored status already says all this, so no new Event.
  op.controller.enqueueAll();
  await new Promise((r) => setTimeout(r, 2000));
  assert.deepEqual(await seen(), want, 'nothing repeated on resync');

  const described = await env.kubectl(['describe', 'tproxy', 'edge', '-n', NS]);
  assert.doesNotMatch(described, /Events:\s+<none>/);
  assert.match(described, /Normal\s+NodeDraining\s+.*tpfleet\.io\/operator.*\s+node\(s\) \S+ leave the active set/);
  assert.match(described, /Normal\s+Scaled\s+.*active nodes 2 -> 1 \(spec\.replicas 1\)/);
  const created = (await op.metrics.events.get()).values.find((v) => v.labels.outcome === 'created');
  assert.ok((created?.value ?? 0) >= want.length, 'tpfleet_operator_events_total{outcome="created"}');
});

test('a refused spec and a conflict: one Warning each naming the field, not one per requeue', async () => {
  await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'bad' },
    spec: {
      nodeSelector: { pool: 'none' },
      policy: {
        upstreams: [{ name: 'corp', type: 'SOCKS5', address: 'socks:1080', credentialsSecret: { name: 'corp' } }],
        rules: [{ name: 'all', action: 'Forward', upstream: 'corp' }],
      },
    },
  });
  await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'rival' },
    spec: { nodeSelector: { pool: 'edge' } },
  });
  await waitFor('the Warnings', async () => (await events('bad')).length > 0 && (await events('rival')).length > 0);
  // Missing credentials are re-checked every few seconds (a requeue), and a resync on top.
  op.controller.enqueueAll();
  await new Promise((r) => setTimeout(r, 16_000));
  assert.deepEqual(await seen('bad'), [
    `Warning InvalidSpec: spec.policy.upstreams[0].credentialsSecret: Secret ${NS}/corp not found`,
  ]);
  const rival = await seen('rival');
  assert.equal(rival.length, 1, rival.join('\n'));
  assert.match(
    rival[0]!,
    /^Warning Conflict: spec\.nodeSelector: node\(s\) n1, n2 are also selected by TransparentProxy events\/edge/,
  );
  await c.delete(tpPath(NS, 'rival'));
});

test('the recorder: a repeat within the window is one Event with a series count; past the burst, Events are dropped', async () => {
  const t = (await tp())!;
  const outcomes: string[] = [];
  // No refill during the test: the burst alone decides (a slow machine must not add tokens).
  const rec = new EventRecorder(c, pino({ level: 'silent' }), {
    onOutcome: (o) => outcomes.push(o),
    refillMs: 3_600_000,
  });
  const spec = { type: 'Warning', reason: 'Degraded', action: 'Observe', note: 'NodesNotReady: flapping' } as const;
  for (let i = 0; i < 3; i++) await rec.record(t, spec);
  const flaps = (await events()).filter((e) => e.note === spec.note);
  assert.equal(flaps.length, 1, 'one object');
  assert.equal(flaps[0]?.series?.count, 3, 'the series counts the repeats');
  const described = await env.kubectl(['describe', 'tproxy', 'edge', '-n', NS]);
  assert.match(described, /Warning\s+Degraded\s+.*\(x3 over .*\)\s+tpfleet\.io\/operator\s+NodesNotReady: flapping/);
  for (let i = 0; i < BURST + 5; i++) await rec.record(t, { ...spec, note: `distinct ${i}` });
  assert.deepEqual(
    {
      created: outcomes.filter((o) => o === 'created').length,
      dropped: outcomes.filter((o) => o === 'dropped').length,
    },
    { created: BURST - 2, dropped: 8 },
    'a burst of BURST per object (3 taken by the series above), then dropped',
  );
});
