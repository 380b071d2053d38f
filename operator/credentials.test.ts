// What makes a Secret unusable as an upstream's credentials (pure); the API-server side is in
// credentials.apiserver.test.ts. No message ever quotes a value.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { secretProblem } from './credentials.ts';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const secret = (data?: Record<string, string>) => ({ metadata: { name: 's' }, ...(data ? { data } : {}) });

test('missing Secret, missing keys, empty or oversized values, ":" in a Basic-auth user', () => {
  assert.equal(secretProblem(undefined, 'SOCKS5'), 'not found');
  assert.equal(secretProblem(secret(), 'SOCKS5'), 'has no key username or password');
  assert.equal(secretProblem(secret({ username: b64('u') }), 'SOCKS5'), 'has no key password');
  assert.equal(
    secretProblem(secret({ username: '', password: b64('p') }), 'SOCKS5'),
    'key username must hold 1 to 255 bytes',
  );
  const long = 'p'.repeat(256);
  assert.equal(
    secretProblem(secret({ username: b64('u'), password: b64(long) }), 'SOCKS5'),
    'key password must hold 1 to 255 bytes',
  );
  assert.equal(secretProblem(secret({ username: b64('a:b'), password: b64('hunter2') }), 'SOCKS5'), undefined);
  const m = secretProblem(secret({ username: b64('a:b'), password: b64('hunter2') }), 'HTTPConnect');
  assert.equal(m, 'key username must not contain ":" (HTTP Basic auth)');
  assert.equal(secretProblem(secret({ username: b64('u'), password: b64('p'.repeat(255)) }), 'HTTPConnect'), undefined);
  for (const v of [m, secretProblem(secret({ username: b64('u'), password: b64(long) }), 'SOCKS5')])
    assert.ok(!v?.includes('hunter2') && !v?.includes(long), 'no value in a message');
});
