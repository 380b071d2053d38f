import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNodeConfig } from '../api/load.ts';
import { settingsFrom } from './settings.ts';

const cfg = (proxy: object, interception: object = {}) =>
  parseNodeConfig({ apiVersion: 'tpfleet.io/v1alpha1', kind: 'NodeConfig', proxy, interception });

test('workers 0 means one per CPU; maxConnections is split across workers, rounding up', () => {
  const s = settingsFrom(cfg({ workers: 0, maxConnections: 10 }), 3);
  assert.equal(s.workers, 3);
  assert.equal(s.worker.maxConnections, 4);
  assert.equal(settingsFrom(cfg({ workers: 2, maxConnections: 10 }), 8).worker.maxConnections, 5);
  assert.equal(settingsFrom(cfg({ workers: 4, maxConnections: 1 }), 8).worker.maxConnections, 1, 'never 0');
});

test('durations, families and ports reach the workers as numbers', () => {
  const s = settingsFrom(
    cfg({ listenPort: 16000, timeouts: { connect: '250ms', idle: '2m', drain: '5s' } }, { ipFamilies: ['IPv6'] }),
    1,
  );
  assert.deepEqual(
    {
      port: s.worker.listenPort,
      families: s.worker.families,
      c: s.worker.connectTimeoutMs,
      i: s.worker.idleTimeoutMs,
      d: s.drainTimeoutMs,
    },
    { port: 16000, families: [6], c: 250, i: 120_000, d: 5_000 },
  );
  // What the primary hands to a worker survives the JSON round trip of cluster.fork's env.
  assert.deepEqual(JSON.parse(JSON.stringify(s.worker)), s.worker);
});
