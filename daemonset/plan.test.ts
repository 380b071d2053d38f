// Golden-file tests of the pure planner. TPFLEET_UPDATE_GOLDEN=1 rewrites testdata/*.golden (review the diff).
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { parseNodeConfigText } from '../api/load.ts';
import { assertGolden } from '../e2e/golden.ts';
import { parseHookMarker, parseOwnerMarker, parseRoutingComment, parseRoutingEntry } from './owner.ts';
import { formatPlan, plan } from './plan.ts';
import type { Backend, HostFacts } from './types.ts';

const head = 'apiVersion: tpfleet.io/v1alpha1\nkind: NodeConfig\n';
const facts = (b: Backend): HostFacts => ({
  detectedBackend: b,
  iptablesVariant: b === 'iptables-legacy' ? 'iptables-legacy' : 'iptables-nft',
});

const full = `interception:
  ports: [{port: 80}, {port: 443}, {port: 8000, endPort: 8100}]
  destinations: {include: [10.0.0.0/8, "fd00::/8"], exclude: [10.96.0.0/12, 10.1.2.3, "fd00:0:0:1::/64"]}
  sources: {include: [192.168.0.0/16], exclude: [192.168.9.0/24]}
  interfaces: [eth0, "veth*"]
  mark: "0x400"
  mask: "0xf00"
  routingTable: 3000
  rulePriority: 100
proxy: {listenPort: 9000}
`;

// TCP and UDP with ports each; UDP alone on every port (TCP stays out of the rules entirely).
const udp = `interception:
  protocols: [TCP, UDP]
  ports: [{port: 80}]
  udpPorts: [{port: 53}, {port: 443}, {port: 5000, endPort: 5100}]
  destinations: {exclude: [10.96.0.0/12]}
`;
const udpOnly = 'interception: {protocols: [UDP], failurePolicy: FailOpen}\n';

const cases: Array<[string, string, Backend]> = [
  ['defaults-nftables', '', 'nftables'],
  ['defaults-iptables-nft', '', 'iptables-nft'],
  ['full-nftables', full, 'nftables'],
  ['full-iptables-legacy', full, 'iptables-legacy'],
  ['failopen-nftables', 'interception: {failurePolicy: FailOpen, ports: [{port: 80}]}', 'nftables'],
  ['failopen-iptables-nft', 'interception: {failurePolicy: FailOpen, ports: [{port: 80}]}', 'iptables-nft'],
  ['ipv4only-nftables', 'interception: {ipFamilies: [IPv4], localDestinations: true}', 'nftables'],
  ['ipv4only-iptables-nft', 'interception: {ipFamilies: [IPv4], localDestinations: true}', 'iptables-nft'],
  ['udp-nftables', udp, 'nftables'],
  ['udp-iptables-nft', udp, 'iptables-nft'],
  ['udponly-failopen-nftables', udpOnly, 'nftables'],
  ['udponly-failopen-iptables-legacy', udpOnly, 'iptables-legacy'],
];

for (const [name, body, backend] of cases) {
  test(`plan ${name} matches testdata/${name}.golden`, () => {
    const config = parseNodeConfigText(head + body, `${name}.yaml`);
    const got = formatPlan(plan(config, facts(backend)));
    assertGolden(fileURLToPath(new URL(`./testdata/${name}.golden`, import.meta.url)), got);
  });
}

test('auto uses the detected backend; iptables uses the detected variant', () => {
  const auto = parseNodeConfigText(head);
  assert.equal(plan(auto, facts('iptables-legacy')).backend, 'iptables-legacy');
  const ipt = parseNodeConfigText(`${head}interception: {backend: iptables}`);
  assert.equal(
    plan(ipt, { detectedBackend: 'nftables', iptablesVariant: 'iptables-legacy' }).backend,
    'iptables-legacy',
  );
  const nft = parseNodeConfigText(`${head}interception: {backend: nftables}`);
  assert.equal(plan(nft, facts('iptables-nft')).backend, 'nftables');
});

test('the watchdog bypass comes first, then the divert rule, which never matches pure SYNs', () => {
  for (const backend of ['nftables', 'iptables-nft'] as const) {
    for (const body of ['', 'proxy: {keepClientIp: true}', full]) {
      const p = plan(parseNodeConfigText(head + body), facts(backend));
      // nftables: the base chain (the listen stage is declared before it).
      const text = p.nft?.document.split('chain prerouting')[1] ?? p.iptables!.map((x) => x.document).join('\n');
      const [first = '', second = ''] = text.split('\n').filter((l) => /^\s*(meta|jump|-A TPFLEET-PREROUTING)/.test(l));
      assert.match(first, backend === 'nftables' ? /^\s*jump bypass / : /-j TPFLEET-BYPASS$/);
      assert.match(
        second,
        backend === 'nftables'
          ? /tcp flags & \(fin\|syn\|rst\|ack\) != syn socket transparent 1/
          : /! --syn -m socket --transparent/,
      );
    }
  }
});

test('FailClosed ends the nft listen stage with an explicit drop; FailOpen does not', () => {
  const closed = plan(parseNodeConfigText(head), facts('nftables')).nft!;
  const open = plan(parseNodeConfigText(`${head}interception: {failurePolicy: FailOpen}`), facts('nftables')).nft!;
  assert.match(closed.document, /\n\t\tdrop comment "FailClosed[^\n]*\n\t}\n\tchain prerouting/);
  assert.match(closed.document, /\n\t\tgoto listen comment "candidate[^\n]*\n\t}\n}/);
  assert.doesNotMatch(open.document.replace(/comment "[^"]*"/g, ''), /\bdrop\b/);
});

test('IPv4-only plans render no IPv6 rules, routes or ip6tables documents', () => {
  const c = parseNodeConfigText(`${head}interception: {ipFamilies: [IPv4]}`);
  const p = plan(c, facts('iptables-nft'));
  assert.deepEqual(
    p.iptables!.map((x) => x.restore),
    ['iptables-nft-restore'],
  );
  assert.deepEqual(
    p.routing.map((r) => r.family),
    ['IPv4'],
  );
  assert.match(plan(c, facts('nftables')).nft!.document, /meta nfproto ipv6 return/);
});

test('with an owner, the rules carry its marker (table and base chain comments, hook comment) and parse back', () => {
  const config = parseNodeConfigText(head + full);
  const nft = plan(config, facts('nftables'), 'fleet.egress').nft!;
  assert.match(nft.document, /^table inet tpfleet \{\n\tcomment "tpfleet owner=fleet\.egress"$/m);
  const chain = /\tchain prerouting \{\n\t\tcomment "([^"]*)"/.exec(nft.document)?.[1];
  assert.equal(chain, 'routing IPv4:0x400/0xf00:3000:100 IPv6:0x400/0xf00:3000:100');
  assert.deepEqual(parseRoutingComment(chain), [
    { family: 'IPv4', mark: 0x400, mask: 0xf00, table: 3000, priority: 100 },
    { family: 'IPv6', mark: 0x400, mask: 0xf00, table: 3000, priority: 100 },
  ]);
  const [v4, v6] = plan(config, facts('iptables-legacy'), 'fleet.egress').iptables!;
  assert.equal(
    v4!.hookComment,
    'tpfleet: intercept via TPFLEET-PREROUTING owner=fleet.egress routing=IPv4:0x400/0xf00:3000:100',
  );
  assert.deepEqual(parseHookMarker(v6!.hookComment), {
    owner: 'fleet.egress',
    routing: { family: 'IPv6', mark: 0x400, mask: 0xf00, table: 3000, priority: 100 },
  });
  // The rules themselves are the same as without an owner: only the markers differ.
  const bare = plan(config, facts('nftables')).nft!;
  assert.deepEqual(nft.expected, bare.expected);
  assert.doesNotMatch(bare.document, /owner=|comment "routing/);
});

test('owner markers parse strictly: anything else names no owner or is refused', () => {
  assert.equal(parseOwnerMarker('tpfleet owner=fleet.web'), 'fleet.web');
  for (const bad of [
    'tpfleet owner=Fleet.web',
    'tpfleet owner=fleet',
    'tpfleet owner=a.b extra',
    'owner=a.b',
    undefined,
  ])
    assert.equal(parseOwnerMarker(bad), undefined, String(bad));
  assert.throws(() => parseRoutingEntry('IPv4:0x3/0x1:2000:100'), /out of bounds/); // mark outside mask
  assert.throws(() => parseRoutingEntry('IPv4:0x1/0x1:0:100'), /out of bounds/); // table 0
  assert.throws(() => parseRoutingEntry('IPv4:0x1/0x1:2000:100; rm'), /not a routing entry/);
  assert.equal(parseHookMarker('tpfleet: intercept via TPFLEET-PREROUTING'), undefined);
});
