// Unit tests of fact parsing and the pure preflight checks, on outputs captured from real tools.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNodeConfigText } from '../api/load.ts';
import {
  hasListener,
  nftTableIsEmpty,
  parseIpRoutes,
  parseIpRules,
  parseIptablesSave,
  parseNftTableJson,
  parseProcNetTcp,
  procNetAddress,
} from './parse.ts';
import { routingPlan } from './plan.ts';
import { binaryProblems, interceptedInterfaces, routingProblems, rpFilterProblems } from './preflight.ts';
import { gateFor, step, type Streaks } from './watchdog.ts';

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:3AFD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40158 1 0000000000000000 100 0 0 10 0
   1: 0100007F:3B26 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000     0        0 40160 1 0000000000000000 20 4 30 10 -1
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
`;

test('/proc/net/tcp: ports and states are hex; LISTEN is 0A', () => {
  const s = parseProcNetTcp(TCP);
  assert.deepEqual(
    s.map((x) => [x.localPort, x.state]),
    [
      [15101, 0x0a],
      [15142, 1],
    ],
  );
  assert.equal(hasListener([TCP, TCP6], 15101), true);
  assert.equal(hasListener([TCP, TCP6], 8080), true, 'tcp6 listener');
  // 15142 is an ESTABLISHED socket, not a listener.
  assert.equal(hasListener([TCP, TCP6], 15142), false);
  assert.equal(hasListener([''], 15101), false);
});

test('/proc/net/tcp: owner uid and inode; addresses decoded from the kernel byte order', () => {
  const [l] = parseProcNetTcp(TCP);
  assert.deepEqual([l!.uid, l!.inode], [0, 40158]);
  assert.equal(procNetAddress('0100007F'), '127.0.0.1');
  assert.equal(procNetAddress('00000000'), '0.0.0.0');
  assert.equal(procNetAddress('00000000000000000000000000000000'), '::');
  assert.equal(procNetAddress('00000000000000000000000001000000'), '::1');
  assert.equal(procNetAddress('B80D0120000000000000000001000000'), '2001:db8::1');
});

const RULES =
  '[{"priority":0,"src":"all","table":"local"},{"priority":32000,"src":"all","fwmark":"0x2000","fwmask":"0x2000","table":"2000"},' +
  '{"priority":100,"src":"all","fwmark":"0x1","table":"77"},{"priority":32766,"src":"all","table":"main"}]';

test('ip -j rule: fwmark/fwmask parsed as numbers, missing fwmask means all bits', () => {
  const r = parseIpRules(RULES);
  assert.deepEqual(
    r.map((x) => [x.priority, x.table, x.fwmark, x.fwmask]),
    [
      [0, 'local', undefined, undefined],
      [32000, '2000', 0x2000, 0x2000],
      [100, '77', 1, 0xffffffff],
      [32766, 'main', undefined, undefined],
    ],
  );
});

const config = (body = '') => parseNodeConfigText(`apiVersion: tpfleet.io/v1alpha1\nkind: NodeConfig\n${body}`);

test('routing preflight: our own rule is fine, a foreign rule at our priority, table or mark bits is reported', () => {
  const p = routingPlan(config(), 'IPv4');
  assert.deepEqual(routingProblems(p, parseIpRules(RULES), []), []);
  const clash = parseIpRules(
    '[{"priority":32000,"src":"all","table":"main"},{"priority":5,"src":"10.0.0.0/8","table":"2000"},' +
      '{"priority":6,"src":"all","fwmark":"0x2000","fwmask":"0xf000","table":"9"}]',
  );
  const problems = routingProblems(p, clash, parseIpRoutes('[{"type":"unicast","dst":"10.0.0.0/8","dev":"eth0"}]'));
  assert.equal(problems.length, 4);
  assert.match(problems[0]!, /priority 32000 is already used/);
  assert.match(problems[1]!, /looks up routing table 2000/);
  assert.match(problems[2]!, /fwmark bits in our mask 0x2000/);
  assert.match(problems[3]!, /table 2000 already holds a route we did not create/);
  const ours = parseIpRoutes('[{"type":"local","dst":"default","dev":"lo","scope":"host","flags":[]}]');
  assert.deepEqual(routingProblems(p, [], ours), []);
});

test('rp_filter: effective value is max(all, iface); conflict only with src_valid_mark=1', () => {
  const ok = { rp_filter: 0, src_valid_mark: 0 };
  assert.deepEqual(rpFilterProblems({ all: ok, eth0: { rp_filter: 1, src_valid_mark: 0 } }, ['eth0']), []);
  const [msg] = rpFilterProblems(
    { all: { rp_filter: 2, src_valid_mark: 0 }, eth0: { rp_filter: 0, src_valid_mark: 1 }, eth1: ok },
    ['eth0', 'eth1'],
  );
  assert.match(msg!, /net\.ipv4\.conf\.all\.rp_filter=2/);
  assert.match(msg!, /net\.ipv4\.conf\.eth0\.src_valid_mark=1/);
  assert.doesNotMatch(msg!, /eth1/);
  assert.equal(
    rpFilterProblems({ all: { rp_filter: 0, src_valid_mark: 1 }, eth1: { rp_filter: 1, src_valid_mark: 0 } }, ['eth1'])
      .length,
    1,
  );
});

test('intercepted interfaces: configured names with * prefixes, or all but lo', () => {
  const all = ['all', 'default', 'lo', 'eth0', 'veth12', 'wg0'];
  assert.deepEqual(interceptedInterfaces(all, []), ['eth0', 'veth12', 'wg0']);
  assert.deepEqual(interceptedInterfaces(all, ['veth*', 'eth0']), ['eth0', 'veth12']);
  assert.deepEqual(binaryProblems(['nft', 'ip'], new Set(['ip'])), ['required programs not found in PATH: nft']);
});

test('iptables-save: chains, comments per chain (quoted or bare) and verbatim lines', () => {
  const t = parseIptablesSave(`# Generated by iptables-nft-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
*mangle
:PREROUTING ACCEPT [10:600]
:TPFLEET-GATE - [0:0]
-A PREROUTING -m comment --comment "tpfleet: intercept via TPFLEET-PREROUTING" -j TPFLEET-PREROUTING
-A TPFLEET-GATE -m comment --comment mark -j ACCEPT
COMMIT
`);
  assert.equal(t.present, true);
  assert.deepEqual([...t.chains], ['PREROUTING', 'TPFLEET-GATE']);
  assert.deepEqual(t.comments.get('PREROUTING'), ['tpfleet: intercept via TPFLEET-PREROUTING']);
  assert.deepEqual(t.comments.get('TPFLEET-GATE'), ['mark']);
  assert.equal(t.comments.has('INPUT'), false, 'other tables are ignored');
  assert.equal(parseIptablesSave('*filter\nCOMMIT\n').present, false);
});

test('nft -j: rule comments per chain, sets, and the empty-table check', () => {
  const doc = JSON.stringify({
    nftables: [
      { metainfo: {} },
      { table: { family: 'inet', name: 'tpfleet' } },
      { chain: { family: 'inet', table: 'tpfleet', name: 'prerouting', hook: 'prerouting', policy: 'accept' } },
      { set: { name: 'ports' } },
      { rule: { chain: 'prerouting', comment: 'a' } },
      { rule: { chain: 'prerouting', comment: 'b' } },
    ],
  });
  const got = parseNftTableJson(doc);
  assert.deepEqual(got.chains.get('prerouting'), ['a', 'b']);
  assert.equal(got.sets.has('ports'), true);
  assert.equal(nftTableIsEmpty(doc), false);
  const empty = JSON.stringify({
    nftables: [{ table: { name: 'mangle' } }, { chain: { name: 'PREROUTING', hook: 'prerouting', policy: 'accept' } }],
  });
  assert.equal(nftTableIsEmpty(empty), true);
  const regular = JSON.stringify({ nftables: [{ chain: { name: 'X' } }] });
  assert.equal(nftTableIsEmpty(regular), false, 'a user chain is content');
});

test('watchdog hysteresis: 2 failures switch to failed, 2 successes back to healthy', () => {
  let s: Streaks = { health: 'unknown', ok: 0, fail: 0 };
  const seq = [false, false, false, true, false, true, true, true];
  const changes: Array<string | undefined> = [];
  for (const ok of seq) {
    const r = step(s, ok);
    s = r.next;
    changes.push(r.changed);
  }
  assert.deepEqual(changes, [undefined, 'failed', undefined, undefined, undefined, undefined, 'healthy', undefined]);
  assert.equal(gateFor('failed', 'FailOpen'), 'bypass');
  assert.equal(gateFor('failed', 'FailClosed'), 'drop');
  assert.equal(gateFor('healthy', 'FailClosed'), 'pass');
});
