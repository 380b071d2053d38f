// Per-node tuning in status.nodes[] and the Degraded condition it drives (pure status computation
// over pods as the API server returns them).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import type { KubeObject } from './kube/client.ts';
import { fleetPods, TUNING_CONDITION } from './pods.ts';
import { computeStatus, stableJson, type StatusInput } from './status.ts';

const pod = (node: string, conds: { type: string; status: string; reason?: string; message?: string }[], o: { ns?: string; instance?: string; deleting?: boolean } = {}): KubeObject => ({
  metadata: { name: `web-${node}`, namespace: o.ns ?? 'fleet', labels: { 'app.kubernetes.io/instance': o.instance ?? 'web' }, ...(o.deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}) },
  spec: { nodeName: node }, status: { conditions: conds },
});
const ready = { type: 'Ready', status: 'True' };
const tuning = (reason: string, message: string) => ({ type: TUNING_CONDITION, status: reason === 'Applied' ? 'True' : 'False', reason, message });

function status(pods: KubeObject[], prev?: TransparentProxyStatus, now = '2026-01-01T00:00:00Z') {
  const input: StatusInput = {
    generation: 1, prev, now, selector: 's', configHash: 'h', candidates: 2,
    active: [{ name: 'n1' }, { name: 'n2' }] as StatusInput['active'],
    daemonSet: { generation: 1, status: { observedGeneration: 1, desiredNumberScheduled: 2, updatedNumberScheduled: 2, numberReady: 2 } },
    ...fleetPods(pods, 'fleet', 'web'),
  };
  return computeStatus(input);
}
const degraded = (s: TransparentProxyStatus) => s.conditions!.find((c) => c.type === 'Degraded')!;

test('status.nodes[] carries each node\'s tuning; only this fleet\'s live pods count', () => {
  const s = status([
    pod('n1', [ready, tuning('Applied', '12 values applied')]),
    pod('n2', [ready]),
    pod('n2', [ready, tuning('TuningDrift', 'x')], { instance: 'other' }),
    pod('n2', [ready, tuning('TuningDrift', 'x')], { ns: 'elsewhere' }),
    pod('n2', [ready, tuning('TuningDrift', 'x')], { deleting: true }),
  ]);
  assert.deepEqual(s.nodes!.map((n) => [n.name, n.ready, n.tuning]), [['n1', true, { reason: 'Applied', message: '12 values applied' }], ['n2', true, undefined]]);
  assert.deepEqual([degraded(s).status, degraded(s).reason], ['False', 'AsExpected']);
  assert.ok(TransparentProxyStatus.safeParse(s).success, 'valid against the CRD status schema');
});

test('Degraded names the nodes and keys on drift, refused writes and irqbalance conflicts (worst reason first); not on partial tuning', () => {
  const drift = 'drifted: net.core.somaxconn want 4096 got 128';
  let s = status([pod('n1', [ready, tuning('TuningRefused', 'refused: net.core.rmem_max (EPERM)')]), pod('n2', [ready, tuning('TuningDrift', drift)])]);
  assert.deepEqual([degraded(s).status, degraded(s).reason], ['True', 'TuningDrift']);
  assert.equal(degraded(s).message, `tuning on 2 nodes: n1: TuningRefused: refused: net.core.rmem_max (EPERM) | n2: TuningDrift: ${drift}`);
  s = status([pod('n1', [ready, tuning('IrqbalanceConflict', 'irqbalance runs')]), pod('n2', [ready, tuning('TuningPartial', 'missing on this kernel: net.ipv4.tcp_notsent_lowat')])]);
  assert.deepEqual([degraded(s).reason, degraded(s).message], ['IrqbalanceConflict', 'tuning on 1 node: n1: IrqbalanceConflict: irqbalance runs']);
  s = status([pod('n1', [ready, tuning('TuningPartial', 'missing on this kernel: x')]), pod('n2', [ready])]);
  assert.equal(degraded(s).status, 'False', 'a key the kernel lacks is reported per node, not fatal');
});

test('an unchanged report recomputes to an identical status (no write); a cleared drift flips Degraded back', () => {
  const bad = [pod('n1', [ready, tuning('TuningDrift', 'drifted: k want 1 got 2')]), pod('n2', [ready])];
  const s1 = status(bad);
  const s2 = status(bad, s1, '2026-01-01T00:05:00Z');
  assert.equal(stableJson(s2), stableJson(s1));
  const s3 = status([pod('n1', [ready, tuning('Applied', '1 value applied')]), pod('n2', [ready])], s2, '2026-01-01T00:06:00Z');
  assert.deepEqual([degraded(s3).status, degraded(s3).reason, degraded(s3).lastTransitionTime], ['False', 'AsExpected', '2026-01-01T00:06:00Z']);
});

test('oversized tuning reports are clipped to the status schema bounds', () => {
  const s = status([pod('n1', [ready, { type: TUNING_CONDITION, status: 'False', reason: 'R'.repeat(100), message: 'm'.repeat(5000) }]), pod('n2', [ready])]);
  const t = s.nodes![0]!.tuning!;
  assert.deepEqual([t.reason.length, t.message.length], [64, 1024]);
  assert.ok(TransparentProxyStatus.safeParse(s).success);
});
