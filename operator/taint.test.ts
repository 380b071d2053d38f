import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KubeObject } from '../kube/client.ts';
import { INTERCEPTION_TAINT } from '../api/defaults.ts';
import { fleetPods } from './pods.ts';
import { activeLabelKey, leaveSelectorLabels, selectorLabels } from './render/names.ts';
import { claimed, taintChanges } from './taint.ts';

const node = (name: string, labels: Record<string, string> = {}): KubeObject => ({ metadata: { name, labels } });
const proxy = (name: string, spec: object, deleting = false): KubeObject =>
  ({
    metadata: { name, namespace: 'apps', ...(deleting ? { deletionTimestamp: '2026-12-02T00:00:00Z' } : {}) },
    spec,
  }) as KubeObject;
const key = activeLabelKey('apps', 'p');

test('claimed: a node a live object means to intercept keeps the taint; others lose it', () => {
  const every = proxy('p', { nodeSelector: { pool: 'x' } });
  assert.equal(claimed(node('a', { pool: 'x' }), [every]), true, 'every candidate intercepts');
  assert.equal(claimed(node('b', { pool: 'y' }), [every]), false, 'selector does not match');
  assert.equal(claimed(node('c', { pool: 'x', [key]: 'leaving' }), [every]), false, 'a leaving node stops');
  const counted = proxy('p', { replicas: 1 });
  assert.equal(claimed(node('d', { [key]: 'true' }), [counted]), true, 'active with replicas');
  assert.equal(claimed(node('e'), [counted]), false, 'a non-active candidate does not intercept');
  assert.equal(claimed(node('f'), [proxy('p', {}, true)]), false, 'an object being deleted claims nothing');
  assert.equal(claimed(node('g'), []), false, 'no object at all');
});

const tainted = (name: string, labels: Record<string, string> = {}): KubeObject =>
  ({ metadata: { name, labels }, spec: { taints: [{ key: INTERCEPTION_TAINT, effect: 'NoSchedule' }] } }) as KubeObject;
const pod = (node: string, o: { ready?: boolean; deleting?: boolean; labels?: Record<string, string> } = {}) =>
  ({
    metadata: {
      name: `p-${node}-${Math.random()}`,
      namespace: 'apps',
      labels: o.labels ?? selectorLabels('p'),
      creationTimestamp: '2026-12-02T00:00:00Z',
      ...(o.deleting ? { deletionTimestamp: '2026-12-02T00:01:00Z' } : {}),
    },
    spec: { nodeName: node },
    status: { conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }] },
  }) as KubeObject;
/** What one reconcile of object apps/p writes, as "node:on|off", from the pods as the cache holds them. */
const plan = (nodes: KubeObject[], pods: KubeObject[], intercepting: string[], proxies: KubeObject[] = []) =>
  taintChanges(nodes, proxies, intercepting, fleetPods(pods, 'apps', 'p').readyNodes).map(
    (c) => `${c.node.metadata.name}:${c.on ? 'on' : 'off'}`,
  );

test('a proxy pod being deleted is not Ready for the taint, even while its Ready condition still says True', () => {
  // kubectl delete pod: the kubelet keeps Ready=True until the containers stop (the drain), the
  // interception goes with them. The taint must come back at the deletion, not after the drain.
  assert.deepEqual(plan([node('a')], [pod('a', { deleting: true })], ['a']), ['a:on']);
  assert.deepEqual(plan([tainted('a')], [pod('a', { deleting: true })], ['a']), [], 'stays on');
  // Its replacement Ready beside it: the node intercepts again.
  assert.deepEqual(plan([tainted('a')], [pod('a', { deleting: true }), pod('a')], ['a']), ['a:off']);
});

test("only this object's own Ready proxy pod on the node itself lifts the taint", () => {
  const n = [tainted('a')];
  assert.deepEqual(plan(n, [pod('b')], ['a', 'b']), [], 'a Ready pod on another node');
  assert.deepEqual(plan(n, [pod('a', { labels: selectorLabels('q') })], ['a']), [], "another object's pod");
  assert.deepEqual(plan(n, [pod('a', { labels: leaveSelectorLabels('p') })], ['a']), [], 'a Ready leave pod');
  assert.deepEqual(plan(n, [pod('a', { ready: false })], ['a']), [], 'a pod not Ready yet');
  assert.deepEqual(plan(n, [pod('a')], ['a']), ['a:off']);
});

test('steady states write nothing; unclaimed nodes lose the taint, nodes claimed by another object keep it', () => {
  assert.deepEqual(plan([tainted('a'), node('b')], [pod('b')], ['a', 'b']), [], 'both as wanted');
  const other = proxy('q', { nodeSelector: { pool: 'q' } });
  assert.deepEqual(
    plan([tainted('c', { pool: 'q' }), tainted('d'), node('e')], [], [], [other]),
    ['d:off'],
    "c is q's (its reconcile decides), d nobody's, e has none",
  );
});
