// DER as parsers demand it (X.690 8.3.2: an INTEGER in the fewest octets). The serial is 16 random
// bytes with the top bit cleared; when its first byte came out 0 and the second below 0x80 (1 in 256)
// the INTEGER kept a needless 0, and OpenSSL (Node's X509Certificate) refused the certificate,
// "illegal padding": seen as an unhandled rejection in admission.apiserver.test.ts (2026-12-03,
// the rotation test issues a few dozen). Go's DER parser, the API server's, also rejects non-minimal INTEGERs.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import { derInteger, issue } from './x509.ts';

test('an INTEGER is encoded in the fewest octets, positive', () => {
  const hex = (b: Buffer) => derInteger(b).toString('hex');
  assert.equal(hex(Buffer.from([0x00, 0x12, 0x34])), '02021234', 'leading zero dropped');
  assert.equal(hex(Buffer.from([0x00, 0x00, 0x80])), '02020080', 'one zero kept before a high bit');
  assert.equal(hex(Buffer.from([0x80, 0x01])), '0203008001', 'a zero added before a high bit');
  assert.equal(hex(Buffer.from([0x00])), '020100', 'zero is one octet');
  assert.equal(hex(Buffer.from([0x7f])), '02017f');
});

test('2000 issued certificates all parse (1 in 256 had a needless zero; all parsing by chance: 1 in 2,500)', () => {
  const now = Date.now();
  for (let i = 0; i < 2000; i++) {
    const { cert } = issue({
      commonName: 'tpfleet-test',
      notBefore: new Date(now),
      notAfter: new Date(now + 3600_000),
    });
    assert.doesNotThrow(() => new X509Certificate(cert), `certificate ${i}`);
  }
});
