// Conflict checks indexed by node (issue 17): 50 fleets with disjoint selectors over 500 nodes,
// driven through the controller's own informer handlers (watch events fed to the real Informer and
// Controller, no API server needed: nothing is listed or written). One change re-enqueues only the
// fleets it could affect, not all 50.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { KubeClient, type KubeObject, type WatchEvent } from '../kube/client.ts';
import { Controller } from './controller.ts';
import { OperatorMetrics } from './metrics.ts';
import { TEST_TENANCY } from '../e2e/testenv/operator.ts';

const FLEETS = 50;
const PER_POOL = 10;
const pool = (i: number) => `p${String(i).padStart(2, '0')}`;
const fleet = (i: number) => `f${String(i).padStart(2, '0')}`;

function node(name: string, labels: Record<string, string>, ready = true, rv = '1'): KubeObject {
  return {
    metadata: { name, labels, resourceVersion: rv },
    spec: {},
    status: { conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  };
}
function tp(i: number, spec: Record<string, unknown>, generation = 1): KubeObject {
  return {
    metadata: {
      namespace: 'fleet',
      name: fleet(i),
      uid: `uid-${i}`,
      generation,
      resourceVersion: String(generation),
      creationTimestamp: `2026-01-01T00:00:${String(i).padStart(2, '0')}Z`,
    },
    spec,
  };
}

function setup() {
  // A server that is never contacted: the caches are fed their watch events directly.
  const client = new KubeClient({ server: 'https://127.0.0.1:1', applyToHTTPSOptions: async () => {} }, 'test');
  const c = new Controller({
    client,
    log: pino({ level: 'silent' }),
    metrics: new OperatorMetrics(false),
    settings: { defaultImage: 'registry.example/tpfleet-node:test', cleanupTimeoutMs: 60_000, tenancy: TEST_TENANCY },
  });
  const feed = (cache: 'nodes' | 'proxies', e: WatchEvent) =>
    (c.caches[cache] as unknown as { handle(e: WatchEvent): void }).handle(e);
  const drain = async () => {
    const keys = new Set<string>();
    while (c.queue.depth > 0) {
      const k = (await c.queue.get())!;
      keys.add(k.replace('fleet/', ''));
      c.queue.done(k);
    }
    return [...keys].sort();
  };
  for (let p = 0; p < FLEETS; p++)
    for (let n = 0; n < PER_POOL; n++)
      feed('nodes', { type: 'ADDED', object: node(`${pool(p)}-n${n}`, { pool: pool(p) }) });
  for (let i = 0; i < FLEETS; i++)
    feed('proxies', { type: 'ADDED', object: tp(i, { replicas: 3, nodeSelector: { pool: pool(i) } }) });
  return { c, feed, drain };
}

test('50 fleets: a re-specified fleet re-enqueues itself and the fleets on its old or new nodes only', async () => {
  const { c, feed, drain } = setup();
  assert.equal((await drain()).length, FLEETS, 'the initial list enqueues every fleet once');

  // f07 moves onto f08's pool: f07 and f08 (its new nodes' claimant) are checked, no other.
  feed('proxies', { type: 'MODIFIED', object: tp(7, { replicas: 3, nodeSelector: { pool: pool(8) } }, 2) });
  assert.deepEqual(await drain(), ['f07', 'f08']);
  assert.deepEqual(
    c.queue.depth === 0 && [...c.claims.rivals('fleet/f08')],
    ['fleet/f07'],
    'f08 now has one rival to check',
  );
  assert.deepEqual([...c.claims.rivals('fleet/f09')], [], 'f09 has none');

  // Moving back frees f08's nodes: f08 must be told (its NodesShared/refusal clears), and f07.
  feed('proxies', { type: 'MODIFIED', object: tp(7, { replicas: 3, nodeSelector: { pool: pool(7) } }, 3) });
  assert.deepEqual(await drain(), ['f07', 'f08']);

  // A status-only update (same generation) concerns the object alone.
  feed('proxies', { type: 'MODIFIED', object: { ...tp(7, { replicas: 3, nodeSelector: { pool: pool(7) } }, 3) } });
  assert.deepEqual(await drain(), ['f07']);

  // Deleting a fleet re-checks the fleets sharing its nodes: none here.
  feed('proxies', { type: 'DELETED', object: tp(20, { replicas: 3, nodeSelector: { pool: pool(20) } }) });
  assert.deepEqual(await drain(), ['f20']);
});

test('50 fleets: a node change re-enqueues the fleets whose selectors match it before or after', async () => {
  const { feed, drain } = setup();
  await drain();
  // Relabelled from f03's pool into f04's.
  feed('nodes', { type: 'MODIFIED', object: node('p03-n0', { pool: pool(4) }, true, '2') });
  assert.deepEqual(await drain(), ['f03', 'f04']);
  // Goes NotReady: only its fleet's candidates change.
  feed('nodes', { type: 'MODIFIED', object: node('p10-n1', { pool: pool(10) }, false, '3') });
  assert.deepEqual(await drain(), ['f10']);
  // A heartbeat (nothing scheduling looks at): nothing.
  feed('nodes', { type: 'MODIFIED', object: node('p10-n1', { pool: pool(10) }, false, '4') });
  assert.deepEqual(await drain(), []);
  // A node no fleet selects, added and deleted: nothing.
  feed('nodes', { type: 'ADDED', object: node('spare', { pool: 'none' }) });
  feed('nodes', { type: 'DELETED', object: node('spare', { pool: 'none' }) });
  assert.deepEqual(await drain(), []);
  // Deleted: its fleet.
  feed('nodes', { type: 'DELETED', object: node('p11-n2', { pool: pool(11) }) });
  assert.deepEqual(await drain(), ['f11']);
});

test('a fleet over every node is a rival of all: its creation re-checks all 50', async () => {
  const { c, feed, drain } = setup();
  await drain();
  feed('proxies', { type: 'ADDED', object: tp(50, {}) });
  assert.equal((await drain()).length, FLEETS + 1);
  assert.equal(c.claims.rivals('fleet/f50').size, FLEETS);
  assert.deepEqual([...c.claims.rivals('fleet/f01')], ['fleet/f50']);
});
