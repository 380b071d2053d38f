// The compiled policy: the engine's lookup (native policyEvaluate) must decide exactly as the
// TypeScript reference (decide) on the same rules, for thousands of random policies and connections,
// and the named cases of docs/egress.md (wildcards, ports, families, the default action, peeking).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PolicyConfig } from '../api/policy.ts';
import { native } from './native/index.ts';
import { addressMatches, compilePolicy, decide, type Connection } from './policy.ts';

const parse = (p: unknown) => PolicyConfig.parse(p);
const evaluate = (p: ReturnType<typeof parse>, c: Connection) => native().policyEvaluate(compilePolicy(p, []).blob, c);

/** A small deterministic PRNG, so a failure names its seed and can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const V4 = ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '10.1.2.3', '192.168.0.0/16', '0.0.0.0/0', '172.16.5.0/28'];
const V6 = ['fd00::/8', 'fd00:1::/32', '::/0', 'fd00:1::5', '2001:db8::/48'];
const NAMES = [
  'example.com',
  '*.example.com',
  'a.example.com',
  'github.com',
  '*.github.com',
  'x.y.z.test',
  '*.y.z.test',
];
const PORTS = [{ port: 443 }, { port: 80 }, { port: 8000, endPort: 8100 }, { port: 1, endPort: 1024 }];

function randomPolicy(r: () => number) {
  const pick = <T>(xs: T[], max: number): T[] => xs.filter(() => r() < max / xs.length);
  const rules = Array.from({ length: 1 + Math.floor(r() * 40) }, (_, i) => {
    const match: Record<string, unknown> = {};
    if (r() < 0.5) match.destinations = pick([...V4, ...V6], 2);
    if (r() < 0.3) match.sources = pick([...V4, ...V6], 2);
    if (r() < 0.4) match.ports = pick(PORTS, 1.5);
    if (r() < 0.3) match.serverNames = pick(NAMES, 2);
    if (r() < 0.2) match.hosts = pick(NAMES, 2);
    return { name: `r${i}`, match, action: r() < 0.5 ? 'Allow' : 'Deny' };
  });
  return parse({ defaultAction: r() < 0.5 ? 'Allow' : 'Deny', rules });
}

const ADDRS = [
  '10.1.2.3',
  '10.1.2.4',
  '10.9.9.9',
  '192.168.1.1',
  '172.16.5.7',
  '8.8.8.8',
  'fd00:1::5',
  'fd00:2::1',
  '2001:db8::1',
  '::1',
];
const ASK = [
  'example.com',
  'a.example.com',
  'b.a.example.com',
  'github.com',
  'api.github.com',
  'x.y.z.test',
  'w.y.z.test',
  'other.org',
];

function randomConnection(r: () => number): Connection {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const v6 = r() < 0.3;
  const fam = ADDRS.filter((a) => a.includes(':') === v6);
  const c: Connection = { src: pick(fam), dst: pick(fam), port: pick([443, 80, 8050, 22, 1024, 65535]) };
  const k = r();
  if (k < 0.4) c.sni = pick(ASK);
  else if (k < 0.6) c.host = pick(ASK);
  return c;
}

test('the engine decides as the TypeScript reference: 300 random policies x 200 connections', () => {
  for (let seed = 1; seed <= 300; seed++) {
    const r = rng(seed);
    const p = randomPolicy(r);
    const blob = compilePolicy(p, []).blob;
    for (let i = 0; i < 200; i++) {
      const c = randomConnection(r);
      const want = decide(p, c);
      const got = native().policyEvaluate(blob, c);
      assert.equal(
        got.rule,
        want,
        `seed ${seed}, connection ${JSON.stringify(c)}: engine rule ${got.rule}, reference ${want}`,
      );
      // Held for its first bytes exactly when the first rule its addresses allow needs a name.
      const first = firstByAddress(p, c);
      assert.equal(got.peek, first >= 0 && needsName(p, first), `seed ${seed}: peek`);
    }
  }
});

/** The first rule whose addresses and port match (names aside): what the engine looks at on accept. */
const firstByAddress = (p: ReturnType<typeof parse>, c: Connection): number =>
  p.rules.findIndex((r) => addressMatches(r.match, c));
const needsName = (p: ReturnType<typeof parse>, i: number) =>
  !!(p.rules[i]!.match.serverNames?.length || p.rules[i]!.match.hosts?.length);

test('wildcards match exactly one label; names, ports, families and the default action', () => {
  const p = parse({
    defaultAction: 'Deny',
    rules: [
      { name: 'wild', match: { serverNames: ['*.example.com'] }, action: 'Allow' },
      { name: 'exact', match: { serverNames: ['example.com'], ports: [{ port: 443 }] }, action: 'Allow' },
      { name: 'web', match: { hosts: ['plain.test'], destinations: ['10.0.0.0/8'] }, action: 'Allow' },
      { name: 'v6', match: { destinations: ['fd00::/8'] }, action: 'Allow' },
    ],
  });
  const c = (x: Partial<Connection>): Connection => ({ src: '10.1.1.1', dst: '10.2.2.2', port: 443, ...x });
  assert.deepEqual(evaluate(p, c({ sni: 'a.example.com' })), { rule: 0, peek: true });
  assert.deepEqual(
    evaluate(p, c({ sni: 'a.b.example.com' })),
    { rule: -1, peek: true },
    'two labels: not the wildcard',
  );
  assert.deepEqual(evaluate(p, c({ sni: 'example.com' })), { rule: 1, peek: true }, 'the bare name: the exact rule');
  assert.deepEqual(
    evaluate(p, c({ sni: 'example.com', port: 8443 })),
    { rule: -1, peek: true },
    'the exact rule is for 443 only',
  );
  assert.deepEqual(evaluate(p, c({ host: 'plain.test', port: 80 })), { rule: 2, peek: true });
  assert.deepEqual(
    evaluate(p, c({ sni: 'plain.test' })),
    { rule: -1, peek: true },
    'hosts are for plaintext HTTP, not SNI',
  );
  assert.deepEqual(evaluate(p, c({})), { rule: -1, peek: true }, 'no name seen: only rules without names');
  assert.deepEqual(evaluate(p, { src: 'fd00::1', dst: 'fd00::2', port: 22 }), { rule: 3, peek: true });
  const addressOnly = parse({ rules: [{ name: 'a', match: { destinations: ['10.0.0.0/8'] }, action: 'Deny' }] });
  assert.deepEqual(evaluate(addressOnly, c({})), { rule: 0, peek: false }, 'address rules decide at accept');
  assert.deepEqual(evaluate(addressOnly, c({ dst: '11.0.0.1' })), { rule: -1, peek: false });
});

test('1,000 rules compile into one table (mixed CIDRs and SNI wildcards) and still decide as the reference', () => {
  const rules = Array.from({ length: 1000 }, (_, i) =>
    i % 2
      ? { name: `cidr-${i}`, match: { destinations: [`10.${i >> 8}.${i & 255}.0/24`] }, action: 'Allow' }
      : { name: `sni-${i}`, match: { serverNames: [`*.s${i}.example.com`] }, action: i % 4 ? 'Allow' : 'Deny' },
  );
  const p = parse({ defaultAction: 'Deny', rules });
  const blob = compilePolicy(p, []).blob;
  assert.ok(blob.length < 2 << 20, `${blob.length} bytes`);
  for (const c of [
    { src: '10.9.9.9', dst: '10.3.233.7', port: 443 },
    { src: '10.9.9.9', dst: '10.200.1.1', port: 443, sni: 'a.s998.example.com' },
    { src: '10.9.9.9', dst: '10.200.1.1', port: 443, sni: 'a.s996.example.com' },
    { src: '10.9.9.9', dst: '10.200.1.1', port: 443, sni: 'x.y.s996.example.com' },
  ])
    assert.equal(native().policyEvaluate(blob, c).rule, decide(p, c), JSON.stringify(c));
});

test('a malformed table is refused by the engine, naming what does not add up', () => {
  const blob = compilePolicy(parse({ rules: [{ name: 'a', action: 'Allow' }] }), []).blob;
  assert.throws(
    () => native().policyEvaluate(blob.subarray(0, blob.length - 3), { src: '10.0.0.1', dst: '10.0.0.2', port: 1 }),
    /upstreams|strings|trailing/,
  );
  const bad = new Uint8Array(blob);
  bad[0] = 0;
  assert.throws(() => native().policyEvaluate(bad, { src: '10.0.0.1', dst: '10.0.0.2', port: 1 }), /magic/);
});
