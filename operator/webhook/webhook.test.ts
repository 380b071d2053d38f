// The admission decision (pure) and the certificate material: issue, verify, renew when due.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import { tenancy } from '../tenancy.ts';
import { decode, encode, renew, type CertSettings } from './certs.ts';
import { admit, type AdmissionRequest } from './server.ts';
import { issue, servesFor } from './x509.ts';

const T = tenancy({ namespaces: ['fleet'], allowedImages: ['registry.example/node:'], allowControlPlane: false });
const node = (name: string, labels: Record<string, string>) => ({ metadata: { name, labels } });
const view = {
  tenancy: T,
  proxies: [
    {
      metadata: { name: 'old', namespace: 'fleet', uid: 'u1', creationTimestamp: '2026-01-01T00:00:00Z' },
      spec: { nodeSelector: { pool: 'a' } },
    },
  ],
  nodes: [node('a1', { pool: 'a' }), node('b1', { pool: 'b' })],
};
const req = (spec: unknown, o: Partial<AdmissionRequest> = {}): AdmissionRequest => ({
  uid: 'x',
  kind: { group: 'tpfleet.io', kind: 'TransparentProxy' },
  namespace: 'fleet',
  operation: 'CREATE',
  object: { metadata: { name: 'new' }, spec },
  ...o,
});
const now = new Date('2026-06-01T00:00:00Z');

test('admit: the operator checks CEL cannot make are refused naming the field', () => {
  const cases: [unknown, RegExp][] = [
    [{ interception: { mark: 0x1000, mask: 0x2000 } }, /^spec\.interception\.mark: must lie within mask/],
    [
      { interception: { ipFamilies: ['IPv4'], sources: { include: ['fd00::/8'] } } },
      /sources\.include\[0\]: fd00::\/8 is IPv6/,
    ],
    [
      { interception: { destinations: { include: ['10.0.0.1/32'], exclude: ['10.0.0.1'] } } },
      /exclude\[0\]: 10\.0\.0\.1\/32 is both/,
    ],
    [{ proxy: { image: 'evil/x:1' } }, /^spec\.proxy\.image: "evil\/x:1" is not an allowed node image/],
    [
      { nodeSelector: { pool: 'b' }, tolerations: [{ operator: 'Exists' }] },
      /^spec\.tolerations\[0\]: tolerates the control-plane taint/,
    ],
    [{}, /^spec\.nodeSelector: node\(s\) a1 are also selected by TransparentProxy fleet\/old, which is older/],
  ];
  for (const [spec, msg] of cases) {
    const r = admit(req(spec), view, now);
    assert.equal(r.allowed, false, JSON.stringify(spec));
    assert.equal(r.status?.code, 422);
    assert.match(r.status?.message ?? '', msg);
  }
  assert.equal(
    admit(req({ nodeSelector: { pool: 'b' }, proxy: { image: 'registry.example/node:2' } }), view, now).allowed,
    true,
  );
});

test('admit: metadata-only updates, deletions and other kinds pass; other namespaces get a warning', () => {
  const bad = { interception: { mark: 0x1000, mask: 0x2000 } };
  const old = { metadata: { name: 'new' }, spec: bad };
  assert.equal(admit(req(bad, { operation: 'UPDATE', oldObject: old }), view, now).allowed, true);
  assert.equal(admit(req(bad, { operation: 'UPDATE', oldObject: { ...old, spec: {} } }), view, now).allowed, false);
  const deleting = { metadata: { name: 'new', deletionTimestamp: '2026-06-01T00:00:00Z' }, spec: bad };
  assert.equal(admit(req(bad, { operation: 'UPDATE', object: deleting }), view, now).allowed, true);
  assert.equal(admit(req(bad, { kind: { kind: 'Pod' } }), view, now).allowed, true);
  const r = admit(req({}, { namespace: 'team-x' }), view, now);
  assert.equal(r.allowed, true, 'objects of other namespaces take no nodes');
  assert.match(r.warnings?.[0] ?? '', /team-x is not a namespace this tpfleet installation reconciles \(fleet\)/);
});

test('admit: on update an object is judged against the objects older than it only', () => {
  const mine = { metadata: { name: 'old', namespace: 'fleet', uid: 'u1', creationTimestamp: '2026-01-01T00:00:00Z' } };
  const r = admit(
    req(
      { nodeSelector: { pool: 'a' }, replicas: 1 },
      {
        operation: 'UPDATE',
        object: { ...mine, spec: { nodeSelector: { pool: 'a' }, replicas: 1 } },
        oldObject: { ...mine, spec: {} },
      },
    ),
    view,
    now,
  );
  assert.equal(r.allowed, true);
});

test('x509: a CA and a serving certificate that verify and name their hosts', () => {
  const from = new Date(Date.now() - 1000),
    to = new Date(Date.now() + 3600_000);
  const ca = issue({ commonName: 'ca', notBefore: from, notAfter: to });
  const leaf = issue({
    commonName: 'svc',
    notBefore: from,
    notAfter: to,
    hosts: ['svc.ns.svc', '127.0.0.1'],
    issuer: ca,
  });
  const x = new X509Certificate(leaf.cert);
  assert.equal(x.issuer, 'CN=ca');
  assert.ok(x.verify(new X509Certificate(ca.cert).publicKey));
  assert.ok(new X509Certificate(ca.cert).ca);
  assert.ok(!x.ca);
  assert.ok(servesFor(leaf.cert, ca.cert, ['svc.ns.svc', '127.0.0.1']));
  assert.ok(!servesFor(leaf.cert, ca.cert, ['other.ns.svc']));
  assert.ok(!servesFor(leaf.cert, leaf.cert, ['svc.ns.svc']), 'not signed by itself');
  assert.throws(() => issue({ commonName: 'x', notBefore: from, notAfter: to, hosts: ['bad host'], issuer: ca }));
});

test('renew: created when missing, kept while fresh, serving renewed at 2/3 of its life, CA rotated with the old one kept', () => {
  const s: CertSettings = {
    secret: { namespace: 'ns', name: 'tls' },
    hosts: ['svc.ns.svc'],
    validityMs: 3000_000,
    caValidityMs: 30_000_000,
    checkMs: 1000,
  };
  const t0 = new Date('2026-06-01T00:00:00Z');
  const first = renew(undefined, s, t0);
  assert.equal(first?.why, 'created');
  const m = decode({ metadata: { name: 'tls' }, data: encode(first!.next) } as never)!;
  assert.equal(m.bundle.length, 1);
  assert.equal(renew(m, s, new Date(+t0 + 1000_000)), undefined, 'fresh: nothing to do');
  const second = renew(m, s, new Date(+t0 + 2100_000));
  assert.equal(second?.why, 'serving certificate renewed');
  assert.equal(second?.next.bundle[0], m.bundle[0], 'same CA');
  assert.notEqual(second?.next.serving.cert, m.serving.cert);
  const third = renew(second!.next, s, new Date(+t0 + 21_000_000));
  assert.equal(third?.why, 'CA rotated');
  assert.equal(third?.next.bundle.length, 2, 'new CA first, previous CA kept until it expires');
  assert.equal(third?.next.bundle[1], m.bundle[0]);
  assert.ok(servesFor(third!.next.serving.cert, third!.next.bundle[0]!, s.hosts));
  const moved = renew(m, { ...s, hosts: ['other.ns.svc'] }, new Date(+t0 + 1000_000));
  assert.equal(moved?.why, 'serving certificate renewed', 'a changed host list re-issues');
});
