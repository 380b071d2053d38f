import assert from 'node:assert/strict';
import { test } from 'node:test';
import { endpoint, isLoop, localAddresses, normalizeAddress } from './address.ts';

test('IPv4-mapped IPv6 addresses from dual-stack sockets become plain IPv4', () => {
  assert.deepEqual(normalizeAddress('::ffff:10.1.2.3'), { address: '10.1.2.3', family: 4 });
  assert.deepEqual(normalizeAddress('::FFFF:192.168.0.1'), { address: '192.168.0.1', family: 4 });
  assert.deepEqual(normalizeAddress('10.0.0.1'), { address: '10.0.0.1', family: 4 });
});

test('IPv6 addresses are lower-cased and lose their zone index', () => {
  assert.deepEqual(normalizeAddress('FD00:1::2'), { address: 'fd00:1::2', family: 6 });
  assert.deepEqual(normalizeAddress('fe80::1%eth0'), { address: 'fe80::1', family: 6 });
  // Mapped-looking text that is not a valid IPv4 tail stays IPv6 or is rejected, never misread.
  assert.equal(normalizeAddress('::ffff:999.1.1.1'), undefined);
});

test('anything that is not an address (socket already gone) yields undefined', () => {
  assert.equal(normalizeAddress(undefined), undefined);
  assert.equal(normalizeAddress(''), undefined);
  assert.equal(normalizeAddress('example.com'), undefined);
  assert.equal(endpoint('10.0.0.1', undefined), undefined);
  assert.equal(endpoint('10.0.0.1', 0), undefined);
  assert.deepEqual(endpoint('::ffff:10.0.0.1', 443), { address: '10.0.0.1', family: 4, port: 443 });
});

test('a destination is a loop only on the listen port of a local address', () => {
  const local = () => new Set(['10.9.0.1', 'fd00::1']);
  assert.equal(isLoop({ address: '10.9.0.1', port: 15101, family: 4 }, 15101, local), true);
  assert.equal(isLoop({ address: 'fd00::1', port: 15101, family: 6 }, 15101, local), true);
  assert.equal(isLoop({ address: '127.0.0.1', port: 15101, family: 4 }, 15101, local), true);
  assert.equal(isLoop({ address: '::1', port: 15101, family: 6 }, 15101, local), true);
  // Same port on another host, or another port on this host: ordinary traffic.
  assert.equal(isLoop({ address: '10.9.0.2', port: 15101, family: 4 }, 15101, local), false);
  assert.equal(isLoop({ address: '10.9.0.1', port: 443, family: 4 }, 15101, local), false);
});

test('the interface list of this host includes loopback', () => {
  assert.ok(localAddresses().has('127.0.0.1'));
});
