import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNodeConfig } from './load.ts';
import {
  changedFields,
  configCondition,
  parseConfigCondition,
  HOST_WIDE_SYSCTLS_FIELD,
  hostWideSysctls,
  podHash,
  restartChanges,
  restartFieldsIn,
  RESTART_FIELDS,
} from './reload.ts';

test('the pod hash covers the restart fields only, as written', () => {
  const doc = { interception: { ports: [{ port: 80 }] }, proxy: { listenPort: 15001, timeouts: { idle: '10s' } } };
  const base = podHash(doc);
  assert.equal(podHash({ ...doc, interception: { ports: [{ port: 81 }] } }), base, 'ports reload in place');
  assert.equal(podHash({ ...doc, proxy: { listenPort: 15001, timeouts: { idle: '20s' } } }), base, 'idle too');
  assert.notEqual(podHash({ ...doc, proxy: { listenPort: 15002 } }), base, 'listenPort needs a new process');
  assert.notEqual(
    podHash({ ...doc, proxy: { ...doc.proxy, timeouts: { drain: '5s' } } }),
    base,
    'drain is the grace period',
  );
  assert.notEqual(podHash(doc, ['corp']), base, 'a mounted Secret is in the pod spec');
  assert.equal(podHash(doc, ['b', 'a']), podHash(doc, ['a', 'b']));
});

test('changed fields are named as NodeConfig paths; restart fields among them are found', () => {
  const head = { apiVersion: 'tpfleet.io/v1alpha1', kind: 'NodeConfig' };
  const a = parseNodeConfig({ ...head, proxy: { timeouts: { idle: '10s' } } });
  const b = parseNodeConfig({
    ...head,
    proxy: { timeouts: { idle: '11s' }, listenPort: 15009 },
    interception: { routingTable: 3000 },
  });
  const changed = changedFields(a, b);
  assert.deepEqual(changed, ['interception.routingTable', 'proxy.listenPort', 'proxy.timeouts.idle']);
  assert.deepEqual(restartFieldsIn(changed), ['proxy.listenPort']);
  assert.deepEqual(restartFieldsIn(['tuning.affinity.mode', 'policy.rules']), ['tuning.affinity.mode']);
  assert.deepEqual(restartFieldsIn(['tuning.sysctls.overrides.net.core.somaxconn']), [], 'net.* sysctls reload');
  // Every restart field exists in a parsed config (a typo would silently reload in place).
  for (const f of RESTART_FIELDS) {
    const v = f.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], a);
    assert.notEqual(v, undefined, f);
  }
});

test('the config condition round-trips and refuses anything else', () => {
  const h = '0123456789abcdef',
    n = 'fedcba9876543210';
  assert.deepEqual(parseConfigCondition(configCondition({ hash: h })), { hash: h });
  const refused = { hash: h, refused: { hash: n, message: 'changing interception.routingTable: in use\nsecond line' } };
  const c = configCondition(refused);
  assert.equal(c.status, 'False');
  assert.equal(c.reason, 'Refused');
  assert.deepEqual(parseConfigCondition(c), refused);
  assert.equal(parseConfigCondition({ reason: 'Applied', message: 'x' }), undefined);
  assert.equal(parseConfigCondition({ reason: 'Other', message: h }), undefined);
  assert.ok(configCondition({ hash: h, refused: { hash: n, message: 'x'.repeat(5000) } }).message.length <= 1024);
});

test('tuning (ADR 0020): net.* sysctls apply in place; affinity and host-wide sysctls roll', () => {
  const head = { apiVersion: 'tpfleet.io/v1alpha1', kind: 'NodeConfig' };
  const doc = (sysctls: unknown, affinity?: unknown) => ({
    ...head,
    tuning: { sysctls, ...(affinity ? { affinity } : {}) },
  });
  const base = doc({ profile: 'latency', overrides: { 'net.core.somaxconn': 4096 } });
  const hash = podHash(base);
  // latency and throughput both resolve fs.file-max to at least 1048576: only net.* keys differ.
  assert.equal(podHash(doc({ profile: 'throughput', overrides: { 'net.core.somaxconn': 8192 } })), hash);
  assert.equal(podHash(doc({ profile: 'throughput' })), hash, 'a net.* override that leaves reloads too');
  assert.notEqual(podHash(doc({ profile: 'conntrack-heavy' })), hash, 'fs.file-max 4194304 and fs.nr_open roll');
  assert.notEqual(podHash(doc({ profile: 'none' })), hash, 'fs.file-max leaves the spec: rolls');
  assert.notEqual(podHash(doc({ profile: 'latency', overrides: { 'fs.file-max': 2097152 } })), hash);
  assert.notEqual(podHash(doc({ profile: 'latency' }, { mode: 'auto' })), hash, 'affinity rolls');
  assert.deepEqual(hostWideSysctls(doc({ profile: 'none' })), {});
  assert.deepEqual(hostWideSysctls({}), {}, 'no tuning: nothing host-wide (pod hash as before ADR 0020)');
  assert.deepEqual(hostWideSysctls(base), { 'fs.file-max': '>=1048576' });
  // On parsed configs, as the node agent compares them.
  const a = parseNodeConfig(base),
    b = parseNodeConfig(doc({ profile: 'throughput', overrides: { 'net.ipv4.tcp_fin_timeout': 20 } })),
    c = parseNodeConfig(doc({ profile: 'conntrack-heavy' }));
  assert.deepEqual(restartChanges(a, b), []);
  assert.deepEqual(restartChanges(a, c), [HOST_WIDE_SYSCTLS_FIELD]);
});
