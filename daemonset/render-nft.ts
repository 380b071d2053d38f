// Pure rendering of the nftables backend: one `nft -f -` document that replaces our own table
// `inet tpfleet` in a single transaction, plus the watchdog's gate documents. No I/O.
import { cidrText, type Cidr, type Family } from '../api/net.ts';
import type { Interception } from '../api/nodeconfig.ts';
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
  if (ic.ports.length > 0) {
    const elements = ic.ports.map((p) =>
      p.endPort !== undefined && p.endPort !== p.port ? `${p.port}-${p.endPort}` : `${p.port}`,
    );
    sets.push({ name: 'ports', type: 'inet_service', elements });
    add('tcp dport != @ports return', 'ports: only these destination ports are intercepted');
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
  add(
    `meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn socket transparent 1 ${mark} accept`,
    'divert: established transparent sockets (never pure SYNs) go to the local socket',
  );
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
  add('meta l4proto != tcp return', 'only TCP is intercepted');
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
  add(
    `tcp flags & (fin|syn|rst|ack) == syn tproxy to :${listenPort} ${mark} accept`,
    `tproxy: new connections to the transparent listener on :${listenPort}`,
    LISTEN,
  );
  if (ic.failurePolicy === 'FailClosed') {
    // nft tproxy falls through when no transparent listener exists (reference pitfall 2).
    add('drop', 'FailClosed: drop new connections no listener took and flows the proxy does not hold', LISTEN);
  }
  return { sets, rules };
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
