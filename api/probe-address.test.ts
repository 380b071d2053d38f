import assert from 'node:assert/strict';
import { test } from 'node:test';
import { probeAddress } from './probe-address.ts';

test('the probe address is a loopback address of the token, never 127.0.x.x, and two tokens rarely share one', () => {
  assert.equal(probeAddress('a6cb46f2737d5d9f'), '127.167.203.70');
  assert.equal(probeAddress('000001'), '127.1.0.1');
  assert.equal(probeAddress('ffffff'), '127.2.255.255');
  assert.notEqual(probeAddress('a6cb46f2737d5d9f'), probeAddress('a6cb47f2737d5d9f'));
  for (const bad of ['', 'a6cb4', 'A6CB46', 'xyz123'])
    assert.throws(() => probeAddress(bad), /at least 6 lowercase hex digits/);
});
