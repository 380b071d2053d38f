import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INTERCEPTION_TAINT } from '../api/defaults.ts';
import type { KubeObject } from '../kube/client.ts';
import { candidates, selectActive, type Candidate } from './scheduling.ts';

const node = (
  name: string,
  o: {
    zone?: string;
    ready?: boolean;
    labels?: Record<string, string>;
    taints?: { key: string; value?: string; effect: string }[];
    unschedulable?: boolean;
  } = {},
): KubeObject => ({
  metadata: { name, labels: { ...(o.zone ? { 'topology.kubernetes.io/zone': o.zone } : {}), ...o.labels } },
  spec: { taints: o.taints, unschedulable: o.unschedulable },
  status: { conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }] },
});

test('candidates: selector, readiness, cordon and taints (tolerated or not)', () => {
  const nodes = [
    node('a', { labels: { pool: 'x' } }),
    node('b', { labels: { pool: 'y' } }),
    node('c', { labels: { pool: 'x' }, ready: false }),
    node('d', { labels: { pool: 'x' }, unschedulable: true }),
    node('e', { labels: { pool: 'x' }, taints: [{ key: 'dedicated', value: 'proxy', effect: 'NoSchedule' }] }),
    node('f', { labels: { pool: 'x' }, taints: [{ key: 'other', effect: 'NoExecute' }] }),
    node('g', { labels: { pool: 'x' }, taints: [{ key: 'soft', effect: 'PreferNoSchedule' }] }),
  ];
  assert.deepEqual(
    candidates(nodes, { pool: 'x' }).map((c) => c.name),
    ['a', 'g'],
  );
  assert.deepEqual(
    candidates(nodes, { pool: 'x' }, [
      { key: 'dedicated', operator: 'Equal', value: 'proxy', effect: 'NoSchedule' },
    ]).map((c) => c.name),
    ['a', 'e', 'g'],
  );
  assert.deepEqual(
    candidates(nodes, { pool: 'x' }, [{ operator: 'Exists' }]).map((c) => c.name),
    ['a', 'e', 'f', 'g'],
  );
});

test('our own interception readiness taint does not make a node less of a candidate', () => {
  const nodes = [
    node('a', { taints: [{ key: INTERCEPTION_TAINT, effect: 'NoSchedule' }] }),
    node('b', {
      taints: [
        { key: INTERCEPTION_TAINT, effect: 'NoSchedule' },
        { key: 'other', effect: 'NoSchedule' },
      ],
    }),
  ];
  assert.deepEqual(
    candidates(nodes).map((c) => c.name),
    ['a'],
  );
});

const zoned = (spec: string): Candidate[] =>
  spec.split(' ').map((s) => {
    const [name, zone] = s.split('@');
    return { name: name!, zone: zone! };
  });
const cands = zoned('a1@a a2@a a3@a b1@b b2@b c1@c');

test('growing from nothing spreads across zones', () => {
  assert.deepEqual(selectActive(cands, new Set(), 3).active, ['a1', 'b1', 'c1']);
  assert.deepEqual(selectActive(cands, new Set(), 5).active, ['a1', 'a2', 'b1', 'b2', 'c1']);
});

test('scaling by k changes exactly k nodes and keeps the rest', () => {
  const cur = new Set(['a1', 'b1', 'c1']);
  const up = selectActive(cands, cur, 4);
  assert.deepEqual(up.removed, []);
  assert.equal(up.added.length, 1);
  const down = selectActive(cands, new Set(up.active), 2);
  assert.deepEqual(down.added, []);
  assert.equal(down.removed.length, 2);
  assert.ok(down.active.every((n) => up.active.includes(n)));
});

test('shrinking leaves the fullest zone first', () => {
  const r = selectActive(cands, new Set(['a1', 'a2', 'a3', 'b1']), 2);
  assert.deepEqual(r.active, ['a1', 'b1']);
});

test('a node that stopped being a candidate is replaced by one in its zone when possible', () => {
  const without = cands.filter((c) => c.name !== 'b1');
  const r = selectActive(without, new Set(['a1', 'b1', 'c1']), 3);
  assert.deepEqual(r.removed, ['b1']);
  assert.deepEqual(r.added, ['b2']);
});

test('on a tie, the replacement goes to the zone of the node that was lost', () => {
  const without = cands.filter((c) => c.name !== 'b1');
  const r = selectActive(without, new Set(['b1', 'c1']), 2, (n) => (n === 'b1' ? 'b' : undefined));
  assert.deepEqual(r.added, ['b2'], 'zones a and b are both empty; b lost its node');
  assert.deepEqual(
    selectActive(without, new Set(['b1', 'c1']), 2).added,
    ['a1'],
    'without the hint the first zone wins',
  );
});

test('asking for more nodes than candidates activates every candidate', () => {
  assert.equal(selectActive(cands, new Set(), 50).active.length, cands.length);
});
