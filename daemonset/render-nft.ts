// Pure rendering of the nftables backend: one `nft -f -` document that replaces our own table
// `inet tpfleet` in a single transaction, plus the watchdog's gate documents. No I/O.
import { cidrText, type Cidr, type Family } from '../api/net.ts';
import type { Interception, Transport } from '../api/nodeconfig.ts';
import { PROBE_ADDR, PROBE_IN } from '../api/selftest.ts';
import { ownerMarker, routingComment, type RoutingRecord } from './owner.ts';
import type { GateMode, NftPlan, RenderedRule } from './types.ts';

// Not "tproxy": that is an nft keyword (reference pitfall 7).
export const NFT_TABLE = 'tpfleet';
const BASE = 'prerouting';
const GATE = 'gate';
const BYPASS = 'bypass';
/** The listen stage: the gate, the tproxy rule and FailClosed's drop; the spec's matches and the self-test probe both go there. */
const LISTEN = 'listen';
export const DRAIN_COMMENT = 'node leaving: new connections go direct while the proxy drains';

export const hex = (n: number): string => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

/** `meta mark set meta mark & ~mask | mark`: only our bits change, foreign mark bits survive. */
export const markStmt = (mark: number, mask: number): string =>
  `meta mark set meta mark & ${hex(~mask)} | ${hex(mark)}`;

interface NftSet {
  name: string;
  type: 'ipv4_addr' | 'ipv6_addr' | 'inet_service' | 'ifname';
  elements: string[];
}

export const has = (ic: Interception, t: Transport): boolean => ic.protocols.includes(t);

const fam = (f: Family) =>
  f === 'IPv4' ? { n: '4', sel: 'ip', proto: 'ipv4' } : { n: '6', sel: 'ip6', proto: 'ipv6' };

function cidrElements(list: Cidr[], f: Family): string[] {
  return list.filter((c) => c.family === f).map(cidrText);
}

/** Sets (only non-empty ones are declared) and the rules matching them, in order. */
function matchStage(ic: Interception, families: Family[]): { sets: NftSet[]; rules: RenderedRule[] } {
  const sets: NftSet[] = [];
  const rules: RenderedRule[] = [];
  const add = (text: string, comment: string) => rules.push({ chain: BASE, text, comment });
  for (const [key, dir] of [
    ['destinations', 'daddr'],
    ['sources', 'saddr'],
  ] as const) {
    for (const f of families) {
      const { n, sel } = fam(f);
      const name = `${key === 'destinations' ? 'dst' : 'src'}${n}_exclude`;
      const elements = cidrElements(ic[key].exclude, f);
      if (elements.length === 0) continue;
      sets.push({ name, type: f === 'IPv4' ? 'ipv4_addr' : 'ipv6_addr', elements });
      add(`${sel} ${dir} @${name} return`, `${key}.exclude (${f}): never intercepted`);
    }
  }
  for (const [key, dir] of [
    ['destinations', 'daddr'],
    ['sources', 'saddr'],
  ] as const) {
    if (ic[key].include.length === 0) continue;
    for (const f of families) {
      const { n, sel, proto } = fam(f);
      const name = `${key === 'destinations' ? 'dst' : 'src'}${n}_include`;
      const elements = cidrElements(ic[key].include, f);
      if (elements.length === 0) {
        // include is non-empty but lists no address of this family: nothing of it matches.
        add(`meta nfproto ${proto} return`, `${key}.include lists no ${f} CIDR`);
        continue;
      }
      sets.push({ name, type: f === 'IPv4' ? 'ipv4_addr' : 'ipv6_addr', elements });
      add(`${sel} ${dir} != @${name} return`, `${key}.include (${f}): only these are intercepted`);
    }
  }
  const portSet = (list: Interception['ports']) =>
    list.map((p) => (p.endPort !== undefined && p.endPort !== p.port ? `${p.port}-${p.endPort}` : `${p.port}`));
  // `tcp dport` implies `meta l4proto tcp`: a UDP datagram passes the TCP port rule, and vice versa.
  if (has(ic, 'TCP') && ic.ports.length > 0) {
    sets.push({ name: 'ports', type: 'inet_service', elements: portSet(ic.ports) });
    add('tcp dport != @ports return', 'ports: only these destination ports are intercepted');
  }
  if (has(ic, 'UDP') && ic.udpPorts.length > 0) {
    sets.push({ name: 'udp_ports', type: 'inet_service', elements: portSet(ic.udpPorts) });
    add('udp dport != @udp_ports return', 'udpPorts: only these UDP destination ports are intercepted');
  }
  return { sets, rules };
}

export function nftRules(ic: Interception, listenPort: number): { sets: NftSet[]; rules: RenderedRule[] } {
  const families = [...ic.ipFamilies].sort() as Family[];
  const rules: RenderedRule[] = [];
  const sets: NftSet[] = [];
  const add = (text: string, comment: string, chain = BASE) => rules.push({ chain, text, comment });
  const mark = markStmt(ic.mark, ic.mask);
  // First, before the divert rule: while the proxy is down and FailOpen bypasses it, replies of the
  // new direct flows must not be diverted to sockets the dead proxy left in TIME_WAIT with the
  // same addresses (it connected from the client's address when keepClientIp).
  add(`jump ${BYPASS}`, 'watchdog bypass: empty while the proxy is healthy');
  // Also with UDP only: the self-test's TCP probe (below) needs its later packets diverted, and no
  // other transparent TCP socket exists then.
  add(
    `meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn socket transparent 1 ${mark} accept`,
    'divert: established transparent sockets (never pure SYNs) go to the local socket',
  );
  // UDP has no handshake to tell new flows apart. The socket match alone would also take a datagram
  // for a transparent socket that is bound but not yet connected (a flow's reply socket between
  // bind() and connect()); by the time the UDP lookup runs that socket is connected elsewhere and the
  // datagram is dropped (NoPorts). tproxy's own established lookup returns only connected,
  // non-wildcard UDP sockets (nf_tproxy_get_sock_v4/v6) and otherwise the listener, which owns the
  // flow table, and it assigns the socket to the datagram, so no later lookup can miss. Before the
  // filters: a server's reply (keepClientIp) reaches its flow's upstream socket whatever its port.
  if (has(ic, 'UDP')) {
    add(
      `meta l4proto udp socket transparent 1 tproxy to :${listenPort} ${mark} accept`,
      'divert (UDP): to the connected socket of a flow the proxy holds, else to the UDP listener',
    );
    // The socket lookup reads the datagram an ICMP error quotes: a port unreachable about a
    // flow's upstream datagram reaches that socket (counted on the flow), not the client.
    add(
      `meta l4proto { icmp, ipv6-icmp } socket transparent 1 ${mark} accept`,
      "divert (ICMP errors): to the proxy's socket they are about",
    );
  }
  // The datapath self-test (ADR 0021): agent-watch's probe arrives on the probe interface, which no
  // interface or source filter of the spec names, so it skips them and goes straight to the listen
  // stage, through the same gate, tproxy rule, mark and routing as an intercepted connection.
  for (const f of families) {
    const { sel } = fam(f);
    add(
      `iifname "${PROBE_IN}" ${sel} daddr ${PROBE_ADDR[f].dst} meta l4proto tcp goto ${LISTEN}`,
      `self-test (${f}): the agent's probe goes to the listen stage`,
    );
  }
  if (ic.interfaces.length > 0) {
    sets.push({ name: 'ifaces', type: 'ifname', elements: ic.interfaces.map((i) => `"${i}"`) });
    add('iifname != @ifaces return', 'interfaces: only these ingress interfaces are intercepted');
  }
  for (const f of ['IPv4', 'IPv6'] as const) {
    if (!families.includes(f)) add(`meta nfproto ${fam(f).proto} return`, `${f} is not in ipFamilies`);
  }
  add(...l4Filter(ic));
  if (!ic.localDestinations) {
    add('fib daddr type local return', 'traffic to the node itself and replies to its own connections pass');
  } else {
    // Loop guard: the node's own connections to its own addresses arrive on lo, the proxy's upstream
    // ones included; diverting those back into the listener multiplies one connection without end.
    add('iifname "lo" return', 'loop guard: connections from the node itself (also the proxy upstream ones) pass');
  }
  const stage = matchStage(ic, families);
  sets.push(...stage.sets);
  rules.push(...stage.rules);
  add(`goto ${LISTEN}`, 'candidate: on to the listen stage');
  add(`jump ${GATE}`, 'watchdog gate: empty while the proxy is healthy (FailClosed drop when it is not)', LISTEN);
  // Only pure SYNs: later packets of proxied flows already matched the divert rule. A mid-flow packet
  // without a transparent socket belongs to a flow the proxy never held (e.g. one that went direct
  // while a FailOpen bypass was on): steering it to the listener would only get it reset.
  // TCP whatever `protocols` says: a UDP-only fleet's listen stage still takes the self-test's TCP
  // probe, and no other TCP gets here (the transport filter returned it).
  add(
    `tcp flags & (fin|syn|rst|ack) == syn tproxy to :${listenPort} ${mark} accept`,
    `tproxy: new connections to the transparent listener on :${listenPort}`,
    LISTEN,
  );
  if (has(ic, 'UDP'))
    add(
      `meta l4proto udp tproxy to :${listenPort} ${mark} accept`,
      `tproxy (UDP): datagrams of new flows to the UDP listener on :${listenPort}`,
      LISTEN,
    );
  if (ic.failurePolicy === 'FailClosed') {
    // nft tproxy falls through when no transparent listener exists (reference pitfall 2).
    add('drop', 'FailClosed: drop new connections no listener took and flows the proxy does not hold', LISTEN);
  }
  return { sets, rules };
}

/** The transport filter: only what `protocols` lists goes on to the match stages. */
function l4Filter(ic: Interception): [string, string] {
  if (!has(ic, 'UDP')) return ['meta l4proto != tcp return', 'only TCP is intercepted'];
  if (!has(ic, 'TCP')) return ['meta l4proto != udp return', 'only UDP is intercepted'];
  return ['meta l4proto != { tcp, udp } return', 'only TCP and UDP are intercepted'];
}

const ruleLine = (r: RenderedRule) => `${r.text} comment "${r.comment}"`;

/** Who installed the table (owner.ts): recognised by cleanup and the janitor when both state copies are lost. */
export interface NftOwner {
  key: string;
  routing: RoutingRecord[];
}

export function renderNft(ic: Interception, listenPort: number, owner?: NftOwner): NftPlan {
  const { sets, rules } = nftRules(ic, listenPort);
  const lines: string[] = [
    '# Generated by tpfleet node agent. Creating then deleting the table first makes this',
    '# document idempotent; the whole file is applied as one transaction.',
    `table inet ${NFT_TABLE} {}`,
    `delete table inet ${NFT_TABLE}`,
    `table inet ${NFT_TABLE} {`,
    ...(owner ? [`\tcomment "${ownerMarker(owner.key)}"`] : []),
  ];
  for (const s of sets) {
    // interval: CIDRs, port ranges and "veth*" wildcards; auto-merge folds overlapping entries.
    lines.push(
      `\tset ${s.name} { type ${s.type}; flags interval; auto-merge; elements = { ${s.elements.join(', ')} }; }`,
    );
  }
  lines.push(`\tchain ${BYPASS} {`, '\t}', `\tchain ${GATE} {`, '\t}', `\tchain ${LISTEN} {`);
  for (const r of rules.filter((x) => x.chain === LISTEN)) lines.push(`\t\t${ruleLine(r)}`);
  lines.push('\t}', `\tchain ${BASE} {`);
  if (owner) lines.push(`\t\tcomment "${routingComment(owner.routing)}"`);
  lines.push('\t\ttype filter hook prerouting priority mangle; policy accept;');
  for (const r of rules.filter((x) => x.chain === BASE)) lines.push(`\t\t${ruleLine(r)}`);
  lines.push('\t}', '}', '');
  return {
    family: 'inet',
    table: NFT_TABLE,
    document: lines.join('\n'),
    sets: sets.map((s) => s.name),
    expected: {
      [BYPASS]: [],
      [GATE]: [],
      [LISTEN]: rules.filter((r) => r.chain === LISTEN).map((r) => r.comment),
      [BASE]: rules.filter((r) => r.chain === BASE).map((r) => r.comment),
    },
    gateChains: [BYPASS, GATE],
  };
}

/** Atomic rewrite of the two watchdog chains only; the watchdog never touches anything else. */
export function nftGateDocument(mode: GateMode): string {
  const lines = [`flush chain inet ${NFT_TABLE} ${BYPASS}`, `flush chain inet ${NFT_TABLE} ${GATE}`];
  if (mode === 'bypass')
    lines.push(`add rule inet ${NFT_TABLE} ${BYPASS} accept comment "watchdog: proxy down, FailOpen bypass"`);
  if (mode === 'drop')
    lines.push(`add rule inet ${NFT_TABLE} ${GATE} drop comment "watchdog: proxy down, FailClosed drop"`);
  // GATE sits after the divert rule: established flows still reach the draining proxy.
  if (mode === 'drain') lines.push(`add rule inet ${NFT_TABLE} ${GATE} accept comment "${DRAIN_COMMENT}"`);
  return `${lines.join('\n')}\n`;
}
