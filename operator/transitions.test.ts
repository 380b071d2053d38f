import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NodeSummary, TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import { fleetTransitions, nodeList, refusalTransition } from './transitions.ts';

const node = (name: string, state: NodeSummary['state'] = 'Active'): NodeSummary => ({ name, state, ready: true });
const st = (nodes: NodeSummary[], degraded?: { reason: string; message: string }): TransparentProxyStatus =>
  ({
    replicas: nodes.filter((n) => n.state === 'Active').length,
    nodes,
    conditions: degraded
      ? [{ type: 'Degraded', status: 'True', ...degraded, lastTransitionTime: 't', observedGeneration: 1 }]
      : [{ type: 'Degraded', status: 'False', reason: 'AsExpected', lastTransitionTime: 't', observedGeneration: 1 }],
  }) as TransparentProxyStatus;
const reasons = (e: { reason: string; note: string }[]) => e.map((x) => `${x.reason}: ${x.note}`);

test('activation, scale-out, scale-in, restore: one Event per transition kind, naming the nodes', () => {
  assert.deepEqual(reasons(fleetTransitions(undefined, st([node('a')]), 1)), [
    'NodeActivated: node(s) a intercept now (active)',
  ]);
  assert.deepEqual(reasons(fleetTransitions(st([node('a')]), st([node('a'), node('b')]), 2)), [
    'NodeActivated: node(s) b intercept now (active)',
    'Scaled: active nodes 1 -> 2 (spec.replicas 2)',
  ]);
  const leaving = st([node('b'), node('a', 'Draining')]);
  assert.deepEqual(reasons(fleetTransitions(st([node('a'), node('b')]), leaving, 1)), [
    'NodeDraining: node(s) a leave the active set: draining, then restoring rules, routes and tuning',
    'Scaled: active nodes 2 -> 1 (spec.replicas 1)',
  ]);
  assert.deepEqual(reasons(fleetTransitions(leaving, st([node('b')]), 1)), [
    'NodeRestored: node(s) a left: rules, routes and tuning restored, active label removed',
  ]);
  assert.equal(fleetTransitions(undefined, st([node('a')]), 1)[0]?.node, 'a', 'one node: related');
});

test('an unchanged status yields nothing (requeue, resync, restart repeat no Event)', () => {
  const s = st([node('b'), node('a', 'Draining')], { reason: 'TuningFailed', message: 'b: sysctl' });
  assert.deepEqual(fleetTransitions(s, structuredClone(s), 1), []);
});

test('many nodes: one Event, a bounded list, no related node', () => {
  const names = Array.from({ length: 500 }, (_, i) => `node-${String(i).padStart(3, '0')}`);
  const e = fleetTransitions(undefined, st(names.map((n) => node(n))), undefined);
  assert.equal(e.length, 1);
  assert.match(e[0]!.note, /^node\(s\) node-000, .*node-009 and 490 more intercept now/);
  assert.equal(e[0]!.node, undefined);
  assert.ok(nodeList(names.map((n) => n.repeat(40))).length < 1000);
});

test('Degraded: a Warning when it turns True or its reason changes, not while it stays', () => {
  const ok = st([node('a')]);
  const short = st([node('a')], { reason: 'InsufficientNodes', message: '1 candidate nodes for 2 requested' });
  assert.deepEqual(reasons(fleetTransitions(ok, short, 2)), [
    'Degraded: InsufficientNodes: 1 candidate nodes for 2 requested',
  ]);
  assert.equal(fleetTransitions(ok, short, 2)[0]?.type, 'Warning');
  assert.deepEqual(fleetTransitions(short, short, 2), []);
  const tuning = st([node('a')], { reason: 'TuningFailed', message: 'a: sysctl' });
  assert.deepEqual(reasons(fleetTransitions(short, tuning, 1)), ['Degraded: TuningFailed: a: sysctl']);
  const invalid = st([node('a')], { reason: 'InvalidSpec', message: 'spec.x' });
  assert.deepEqual(fleetTransitions(ok, invalid, 1), [], 'InvalidSpec has its own Event');
});

test('NodesNotReady: a node losing readiness is a Warning naming it; a node just activated and starting is not', () => {
  const notReady = { reason: 'NodesNotReady', message: '1 active nodes not ready' };
  const starting = st([node('a'), { ...node('b'), ready: false }], notReady);
  assert.deepEqual(reasons(fleetTransitions(st([node('a')]), starting, 2)), [
    'NodeActivated: node(s) b intercept now (active)',
    'Scaled: active nodes 1 -> 2 (spec.replicas 2)',
  ]);
  assert.deepEqual(fleetTransitions(starting, structuredClone(starting), 2), [], 'still starting: nothing');
  const lost = st(
    [
      { ...node('a'), ready: false },
      { ...node('b'), ready: false },
    ],
    notReady,
  );
  const [e] = fleetTransitions(starting, lost, 2);
  assert.deepEqual(e, {
    type: 'Warning',
    reason: 'Degraded',
    action: 'Observe',
    note: 'NodesNotReady: node(s) a lost readiness (their proxy pod is not Ready)',
    node: 'a',
  });
});

test('a refused spec or a conflict: a Warning naming the field when the message is new', () => {
  const msg = 'spec.interception.ports[0].port: must be at most 65535';
  const [e] = refusalTransition(undefined, msg, false);
  assert.deepEqual(e, { type: 'Warning', reason: 'InvalidSpec', action: 'Refuse', note: msg });
  const stored = {
    conditions: [{ type: 'InvalidSpec', status: 'True', reason: 'SpecRejected', message: msg }],
  } as TransparentProxyStatus;
  assert.deepEqual(refusalTransition(stored, msg, false), [], 'the same problem again: no Event');
  assert.equal(refusalTransition(stored, 'spec.nodeSelector: node(s) n1 ...', true)[0]?.reason, 'Conflict');
});
