// Per-node tuning in status.nodes[] and the Degraded condition it drives (pure status computation
// over pods as the API server returns them).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import type { KubeObject } from '../kube/client.ts';
import { TUNING_CONDITION_TYPE as TUNING_CONDITION } from '../api/tuning-condition.ts';
import { formatMs } from './finalize.ts';
import { fleetPods, leftNodes, uncleanNodes } from './pods.ts';
import { MODE_ANNOTATION } from './render/names.ts';
import { computeStatus, stableJson, type StatusInput } from './status.ts';

const pod = (
  node: string,
  conds: { type: string; status: string; reason?: string; message?: string }[],
  o: { ns?: string; instance?: string; deleting?: boolean; leave?: boolean } = {},
): KubeObject => ({
  metadata: {
    name: `web-${node}`,
    namespace: o.ns ?? 'fleet',
    ...(o.deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}),
    labels: {
      'app.kubernetes.io/name': o.leave ? 'tpfleet-leave' : 'tpfleet',
      'app.kubernetes.io/instance': o.instance ?? 'web',
    },
  },
  spec: { nodeName: node },
  status: { conditions: conds },
});
const ready = { type: 'Ready', status: 'True' };
const tuning = (reason: string, message: string) => ({
  type: TUNING_CONDITION,
  status: reason === 'Applied' ? 'True' : 'False',
  reason,
  message,
});

function status(pods: KubeObject[], prev?: TransparentProxyStatus, now = '2026-01-01T00:00:00Z') {
  const input: StatusInput = {
    generation: 1,
    prev,
    now,
    selector: 's',
    configHash: 'h',
    candidates: 2,
    active: [{ name: 'n1' }, { name: 'n2' }] as StatusInput['active'],
    daemonSet: {
      generation: 1,
      status: { observedGeneration: 1, desiredNumberScheduled: 2, updatedNumberScheduled: 2, numberReady: 2 },
    },
    ...fleetPods(pods, 'fleet', 'web'),
  };
  return computeStatus(input);
}
const degraded = (s: TransparentProxyStatus) => s.conditions!.find((c) => c.type === 'Degraded')!;

test("status.nodes[] carries each node's tuning; only this fleet's live pods count", () => {
  const s = status([
    pod('n1', [ready, tuning('Applied', '12 values applied')]),
    pod('n2', [ready]),
    pod('n2', [ready, tuning('TuningDrift', 'x')], { instance: 'other' }),
    pod('n2', [ready, tuning('TuningDrift', 'x')], { ns: 'elsewhere' }),
    pod('n2', [ready, tuning('TuningDrift', 'x')], { deleting: true }),
    pod('n3', [ready], { leave: true }),
  ]);
  assert.deepEqual(
    s.nodes!.map((n) => [n.name, n.ready, n.tuning]),
    [
      ['n1', true, { reason: 'Applied', message: '12 values applied' }],
      ['n2', true, undefined],
    ],
  );
  assert.deepEqual([degraded(s).status, degraded(s).reason], ['False', 'AsExpected']);
  assert.ok(TransparentProxyStatus.safeParse(s).success, 'valid against the CRD status schema');
});

test("during a surge rollout (two pods on a node) the newer pod's tuning report is shown, whatever the list order", () => {
  const at = (p: KubeObject, t: string): KubeObject => ({ ...p, metadata: { ...p.metadata, creationTimestamp: t } });
  const older = at(pod('n1', [ready, tuning('TuningDrift', 'net.core.somaxconn drifted')]), '2026-01-01T00:00:00Z');
  const newer = at(pod('n1', [tuning('Applied', '3 values applied')]), '2026-01-01T00:05:00Z');
  for (const order of [
    [older, newer],
    [newer, older],
  ]) {
    const s = status([...order, pod('n2', [ready])]);
    assert.deepEqual(s.nodes!.find((n) => n.name === 'n1')!.tuning, { reason: 'Applied', message: '3 values applied' });
    assert.equal(s.nodes!.find((n) => n.name === 'n1')!.ready, true, 'the node is Ready while either pod is');
  }
});

test('Degraded names the nodes and keys on drift, refused writes and irqbalance conflicts (worst reason first); not on partial tuning', () => {
  const drift = 'drifted: net.core.somaxconn want 4096 got 128';
  let s = status([
    pod('n1', [ready, tuning('TuningRefused', 'refused: net.core.rmem_max (EPERM)')]),
    pod('n2', [ready, tuning('TuningDrift', drift)]),
  ]);
  assert.deepEqual([degraded(s).status, degraded(s).reason], ['True', 'TuningDrift']);
  assert.equal(
    degraded(s).message,
    `tuning on 2 nodes: n1: TuningRefused: refused: net.core.rmem_max (EPERM) | n2: TuningDrift: ${drift}`,
  );
  s = status([
    pod('n1', [ready, tuning('IrqbalanceConflict', 'irqbalance runs')]),
    pod('n2', [ready, tuning('TuningPartial', 'missing on this kernel: net.ipv4.tcp_notsent_lowat')]),
  ]);
  assert.deepEqual(
    [degraded(s).reason, degraded(s).message],
    ['IrqbalanceConflict', 'tuning on 1 node: n1: IrqbalanceConflict: irqbalance runs'],
  );
  s = status([pod('n1', [ready, tuning('TuningPartial', 'missing on this kernel: x')]), pod('n2', [ready])]);
  assert.equal(degraded(s).status, 'False', 'a key the kernel lacks is reported per node, not fatal');
});

test('an unchanged report recomputes to an identical status (no write); a cleared drift flips Degraded back', () => {
  const bad = [pod('n1', [ready, tuning('TuningDrift', 'drifted: k want 1 got 2')]), pod('n2', [ready])];
  const s1 = status(bad);
  const s2 = status(bad, s1, '2026-01-01T00:05:00Z');
  assert.equal(stableJson(s2), stableJson(s1));
  const s3 = status(
    [pod('n1', [ready, tuning('Applied', '1 value applied')]), pod('n2', [ready])],
    s2,
    '2026-01-01T00:06:00Z',
  );
  assert.deepEqual(
    [degraded(s3).status, degraded(s3).reason, degraded(s3).lastTransitionTime],
    ['False', 'AsExpected', '2026-01-01T00:06:00Z'],
  );
});

test('oversized tuning reports are clipped to the status schema bounds', () => {
  const s = status([
    pod('n1', [ready, { type: TUNING_CONDITION, status: 'False', reason: 'R'.repeat(100), message: 'm'.repeat(5000) }]),
    pod('n2', [ready]),
  ]);
  const t = s.nodes![0]!.tuning!;
  assert.deepEqual([t.reason.length, t.message.length], [64, 1024]);
  assert.ok(TransparentProxyStatus.safeParse(s).success);
});

test('a node leaving the active set is listed as Draining and keeps Progressing true; it leaves when its leave pod is Ready', () => {
  const input: StatusInput = {
    generation: 2,
    now: '2026-01-01T00:00:00Z',
    selector: 's',
    configHash: 'h',
    candidates: 1,
    requested: 1,
    active: [{ name: 'n1' }] as StatusInput['active'],
    draining: ['n2'],
    readyNodes: new Set(['n1']),
    daemonSet: {
      generation: 2,
      status: { observedGeneration: 2, desiredNumberScheduled: 1, updatedNumberScheduled: 1, numberReady: 1 },
    },
  };
  const s = computeStatus(input);
  assert.deepEqual(
    s.nodes!.map((n) => [n.name, n.state, n.ready]),
    [
      ['n1', 'Active', true],
      ['n2', 'Draining', false],
    ],
  );
  assert.equal(s.replicas, 1, '/scale counts only active nodes');
  const progressing = s.conditions!.find((c) => c.type === 'Progressing')!;
  assert.deepEqual([progressing.status, progressing.reason], ['True', 'NodesLeaving']);
  assert.match(progressing.message!, /1 node\(s\) draining.*: n2$/);
  assert.equal(
    s.conditions!.find((c) => c.type === 'Ready')!.status,
    'True',
    'a leaving node does not make the fleet unready',
  );
  assert.ok(TransparentProxyStatus.safeParse(s).success);
  const done = computeStatus({ ...input, draining: [] });
  assert.equal(done.conditions!.find((c) => c.type === 'Progressing')!.reason, 'RolloutComplete');
  // Leave pods: only Ready, live, of this object and namespace, count as "left".
  const left = leftNodes(
    [
      pod('n2', [ready], { leave: true }),
      pod('n3', [], { leave: true }),
      pod('n4', [ready], { leave: true, deleting: true }),
      pod('n5', [ready], { leave: true, instance: 'other' }),
      pod('n6', [ready]),
    ],
    'fleet',
    'web',
  );
  assert.deepEqual([...left], ['n2']);
});

test('deletion: nodes still holding rules are named; past the timeout Degraded says the finalizer stays', () => {
  const cleanup = (node: string, conds: { type: string; status: string }[]) => {
    const p = pod(node, conds);
    p.metadata.name = `web-cleanup-${node}`;
    p.metadata.annotations = { [MODE_ANNOTATION]: 'cleanup' };
    return p;
  };
  const pods = [
    pod('a', [ready]), // a running proxy pod: its node has rules
    cleanup('b', [ready]), // cleaned
    cleanup('c', []), // cleanup still running
    pod('d', [ready], { ns: 'other' }), // not this fleet
  ];
  assert.deepEqual(uncleanNodes(pods, 'fleet', 'web', MODE_ANNOTATION), ['a', 'c']);
  const base = { generation: 1, now: '2026-01-01T00:00:00Z', selector: 's' };
  const conds = (cleanup: StatusInput['cleanup']) =>
    Object.fromEntries((computeStatus({ ...base, cleanup }).conditions ?? []).map((c) => [c.type, c]));
  const waiting = conds({ pending: 2, total: 3, nodes: ['a', 'c'] });
  assert.equal(waiting.Progressing?.message, '2 of 3 nodes still removing their rules (a, c)');
  assert.equal(waiting.Degraded?.status, 'False');
  const late = conds({ pending: 2, total: 3, nodes: ['a', 'c'], timedOut: formatMs(300_000) });
  assert.equal(late.Degraded?.status, 'True');
  assert.equal(late.Degraded?.reason, 'CleanupTimedOut');
  assert.equal(
    late.Degraded?.message,
    'still waiting after 5m for nodes to remove their rules (a, c); the finalizer stays until they do or the nodes are deleted',
  );
  const many = Array.from({ length: 25 }, (_, i) => `n${i}`);
  assert.match(conds({ pending: 25, total: 25, nodes: many }).Progressing?.message ?? '', /n19 and 5 more\)$/);
  assert.equal(formatMs(90_500), '1m30s500ms');
});
