import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNodeConfig } from '../api/load.ts';
import { settingsFrom } from './settings.ts';

const cfg = (proxy: object, interception: object = {}) =>
  parseNodeConfig({ apiVersion: 'tpfleet.io/v1alpha1', kind: 'NodeConfig', proxy, interception });

test('workers 0 means one engine thread per CPU; maxConnections is one budget for all of them', () => {
  const s = settingsFrom(cfg({ workers: 0, maxConnections: 10 }), 3);
  assert.equal(s.workers, 3);
  assert.equal(s.live.maxConnections, 10);
  assert.equal(settingsFrom(cfg({ workers: 2 }), 8).workers, 2);
  assert.equal(s.threadCpus, null, 'not pinned without tuning.affinity');
});

test('durations, families and ports reach the engine as numbers; debug turns connection events on', () => {
  const s = settingsFrom(
    cfg({ listenPort: 16000, timeouts: { connect: '250ms', idle: '2m', drain: '5s' } }, { ipFamilies: ['IPv6'] }),
    1,
  );
  assert.deepEqual(
    {
      port: s.listenPort,
      v4: s.ipv4,
      v6: s.ipv6,
      c: s.live.connectTimeoutMs,
      i: s.live.idleTimeoutMs,
      d: s.drainTimeoutMs,
    },
    { port: 16000, v4: false, v6: true, c: 250, i: 120_000, d: 5_000 },
  );
  assert.equal(s.live.logConnections, false);
  assert.equal(settingsFrom(cfg({ logLevel: 'debug' }), 1).live.logConnections, true);
  assert.equal(s.live.hook, false, 'no decision hook without a policy');
});
