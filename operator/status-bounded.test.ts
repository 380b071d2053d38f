// Status at fleet scale (issue 17): built for 5,000 active nodes with every per-node report at its
// largest, the written status fits in an object (< 1.5 MiB), passes the CRD's schema, keeps the
// /scale fields and lists the nodes a person must look at; the full list would not fit.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NODES_LISTED_MAX, TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import { computeStatus, type StatusInput } from './status.ts';
import { boundedStatus, isBounded } from './status-bounded.ts';

const MiB = 1024 * 1024;
const pad = (s: string, n: number) => s.padEnd(n, 'x');
const nodeName = (i: number) => pad(`node-${String(i).padStart(5, '0')}-`, 253);

/** 5,000 active nodes in 3 zones, each with the longest reports a node agent can publish. */
function input(total: number, o: { notReady?: number[]; refused?: number[]; draining?: number } = {}): StatusInput {
  const active = Array.from({ length: total }, (_, i) => ({ name: nodeName(i), zone: pad(`zone-${i % 3}-`, 253) }));
  const notReady = new Set((o.notReady ?? []).map(nodeName));
  const hash = 'h'.repeat(64);
  const configs = new Map(
    active.map((c, i) => [
      c.name,
      (o.refused ?? []).includes(i)
        ? { hash: 'o'.repeat(64), refused: { hash, message: pad('no: ', 1024) } }
        : { hash },
    ]),
  );
  return {
    generation: 3,
    now: '2026-12-03T06:00:00Z',
    selector: 'app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=edge',
    configHash: hash,
    active: active as StatusInput['active'],
    draining: Array.from({ length: o.draining ?? 0 }, (_, i) => pad(`leaving-${i}-`, 253)),
    candidates: total,
    requested: total,
    readyNodes: new Set(active.map((c) => c.name).filter((n) => !notReady.has(n))),
    tuning: new Map(active.map((c) => [c.name, { reason: 'TuningPartial', message: pad('missing: ', 1024) }])),
    decisions: new Map(active.map((c) => [c.name, { allow: 1e15, deny: 1e15, forward: 1e15, limited: 1e15 }])),
    configs: configs as StatusInput['configs'],
    traffic: new Map(
      active.map((c) => [c.name, { backend: 'iptables-legacy', verified: true, connections: 1e15, errors: 1e15 }]),
    ) as StatusInput['traffic'],
    daemonSet: {
      generation: 1,
      status: {
        observedGeneration: 1,
        desiredNumberScheduled: total,
        updatedNumberScheduled: total,
        numberReady: total,
      },
    },
  };
}
const size = (s: unknown) => Buffer.byteLength(JSON.stringify(s));

test('5,000 nodes: the written status stays under 1.5 MiB, valid, with /scale fields and counts', () => {
  const full = computeStatus(input(5000, { notReady: [7, 4999], refused: [12], draining: 3 }));
  assert.ok(size(full) > 1.5 * MiB, `the full list is what would not fit (${size(full)} bytes)`);
  const s = boundedStatus(full);
  assert.ok(size(s) < 1.5 * MiB, `${size(s)} bytes`);
  process.stdout.write(`# 5,000 nodes: full status ${size(full)} bytes, written ${size(s)} bytes\n`);
  assert.equal(TransparentProxyStatus.safeParse(s).success, true, 'the CRD schema (same zod source) accepts it');
  assert.equal(TransparentProxyStatus.safeParse(full).success, false, 'the schema bounds the list');
  // /scale reads status.replicas and status.selector (the CRD's scale subresource).
  assert.equal(s.replicas, 5000);
  assert.equal(s.readyReplicas, 4998);
  assert.equal(s.selector, 'app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=edge');
  assert.deepEqual(s.nodeCounts, {
    active: 5000,
    ready: 4998,
    notReady: 2,
    draining: 3,
    configRefused: 1,
    tuningDegraded: 0,
    omitted: 5003 - 6,
  });
  assert.deepEqual(
    s.nodes?.map((n) => [n.name.slice(0, 10), n.state, n.ready]),
    [
      ['leaving-0-', 'Draining', false],
      ['leaving-1-', 'Draining', false],
      ['leaving-2-', 'Draining', false],
      ['node-00007', 'Active', false],
      ['node-00012', 'Active', true],
      ['node-04999', 'Active', false],
    ],
  );
  assert.ok(isBounded(s));
});

test('the list is capped: the most urgent nodes first (refused, not ready, draining)', () => {
  const notReady = Array.from({ length: 300 }, (_, i) => i + 10);
  const s = boundedStatus(computeStatus(input(1000, { notReady, refused: [999], draining: 50 })));
  assert.equal(s.nodes?.length, NODES_LISTED_MAX);
  assert.ok(size(s) < 1.5 * MiB);
  process.stdout.write(`# ${NODES_LISTED_MAX} listed nodes with the longest reports: ${size(s)} bytes\n`);
  const names = new Set(s.nodes?.map((n) => n.name.slice(0, 10)));
  assert.ok(names.has('node-00999'), 'the refusing node is listed');
  assert.ok(names.has('node-00010') && !names.has('leaving-0-'), 'not-ready nodes before draining ones');
  assert.equal(s.nodeCounts?.omitted, 1050 - NODES_LISTED_MAX);
  assert.equal(s.nodeCounts?.notReady, 300);
});

test(`up to ${NODES_LISTED_MAX} nodes the status lists them all and has no counts`, () => {
  const full = computeStatus(input(NODES_LISTED_MAX));
  const s = boundedStatus(full);
  assert.equal(s.nodes?.length, NODES_LISTED_MAX);
  assert.equal(s.nodeCounts, undefined);
  assert.equal(isBounded(s), false);
  // Shrinking back under the threshold drops the counts a bounded status carried.
  const again = boundedStatus(computeStatus({ ...input(10), prev: boundedStatus(computeStatus(input(200))) }));
  assert.equal(again.nodeCounts, undefined);
  assert.equal(again.nodes?.length, 10);
});
