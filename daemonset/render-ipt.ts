// Pure rendering of the iptables backend (iptables-nft or iptables-legacy): one
// `iptables-restore --noflush` document per family for the mangle table, using our own chains.
// Declaring `:CHAIN - [0:0]` under --noflush flushes that chain, so re-applying is idempotent; the
// one hook rule in the builtin PREROUTING chain is added by the executor only when absent.
import { cidrText, type Family } from '../api/net.ts';
import type { Interception } from '../api/nodeconfig.ts';
import type { GateMode, IptablesFamilyPlan, IptablesVariant, RenderedRule } from './types.ts';
import { DRAIN_COMMENT, has } from './render-nft.ts';
import { PROBE_ADDR, PROBE_IN } from '../api/selftest.ts';
import { hookMarker, type RoutingRecord } from './owner.ts';

const C = {
  entry: 'TPFLEET-PREROUTING',
  divert: 'TPFLEET-DIVERT',
  cand: 'TPFLEET-CANDIDATE',
  iface: 'TPFLEET-IFACE',
  exclude: 'TPFLEET-EXCLUDE',
  dst: 'TPFLEET-DST',
  src: 'TPFLEET-SRC',
  ports: 'TPFLEET-PORTS',
  gate: 'TPFLEET-GATE',
  bypass: 'TPFLEET-BYPASS',
  tproxy: 'TPFLEET-TPROXY',
} as const;
/**
 * Our chains, by their exact names: cleanup and stale-chain removal touch these and nothing else,
 * so a TPFLEET-* chain someone else made (another tool, an older install by hand) is never deleted.
 */
export const OUR_CHAINS: ReadonlySet<string> = new Set(Object.values(C));
export const ENTRY_CHAIN = C.entry;
export const HOOK_COMMENT = 'tpfleet: intercept via TPFLEET-PREROUTING';

export function binaries(variant: IptablesVariant, f: Family): { restore: string; save: string } {
  const base = f === 'IPv4' ? 'iptables' : 'ip6tables';
  const v = variant === 'iptables-nft' ? 'nft' : 'legacy';
  return { restore: `${base}-${v}-restore`, save: `${base}-${v}-save` };
}

const hexMark = (n: number) => `0x${(n >>> 0).toString(16)}`;

/**
 * Multi-value matches are staged chains entered with -g (goto): a RETURN or falling off the end
 * of a stage returns to the builtin PREROUTING (not intercepted); a match goes to the next stage.
 * That way exclude->RETURN and include->next stage work with any number of entries.
 */
function stageRules(ic: Interception, f: Family): { chains: string[]; rules: RenderedRule[]; first: string } {
  const stages: Array<{ chain: string; build: (next: string) => RenderedRule[] }> = [];
  const r = (chain: string, text: string, comment: string): RenderedRule => ({ chain, text, comment });
  if (ic.interfaces.length > 0) {
    stages.push({
      chain: C.iface,
      build: (next) =>
        ic.interfaces.map((i) =>
          r(C.iface, `-i ${i.endsWith('*') ? `${i.slice(0, -1)}+` : i} -g ${next}`, `interface ${i}: intercepted`),
        ),
    });
  }
  const dstEx = ic.destinations.exclude.filter((c) => c.family === f);
  const srcEx = ic.sources.exclude.filter((c) => c.family === f);
  if (dstEx.length + srcEx.length > 0) {
    stages.push({
      chain: C.exclude,
      build: (next) => [
        ...dstEx.map((c) => r(C.exclude, `-d ${cidrText(c)} -j RETURN`, `destinations.exclude ${cidrText(c)}`)),
        ...srcEx.map((c) => r(C.exclude, `-s ${cidrText(c)} -j RETURN`, `sources.exclude ${cidrText(c)}`)),
        r(C.exclude, `-g ${next}`, 'not excluded: next stage'),
      ],
    });
  }
  for (const [key, chain, flag] of [
    ['destinations', C.dst, '-d'],
    ['sources', C.src, '-s'],
  ] as const) {
    if (ic[key].include.length === 0) continue;
    // A non-empty include without entries of this family leaves the stage empty: nothing matches.
    const list = ic[key].include.filter((c) => c.family === f);
    stages.push({
      chain,
      build: (next) => list.map((c) => r(chain, `${flag} ${cidrText(c)} -g ${next}`, `${key}.include ${cidrText(c)}`)),
    });
  }
  const tcpPorts = has(ic, 'TCP') ? ic.ports : [];
  const udpPorts = has(ic, 'UDP') ? ic.udpPorts : [];
  if (tcpPorts.length + udpPorts.length > 0) {
    const portRules = (proto: 'tcp' | 'udp', list: Interception['ports'], next: string, label: string) =>
      list.map((p) => {
        const spec = p.endPort !== undefined && p.endPort !== p.port ? `${p.port}:${p.endPort}` : `${p.port}`;
        return r(C.ports, `-p ${proto} --dport ${spec} -g ${next}`, `${label}${spec.replace(':', '-')}: intercepted`);
      });
    // A transport listed without ports intercepts every port: it passes the stage whole.
    const every = (proto: 'tcp' | 'udp', next: string) =>
      r(C.ports, `-p ${proto} -g ${next}`, `${proto === 'tcp' ? 'TCP' : 'UDP'}: every port intercepted`);
    stages.push({
      chain: C.ports,
      build: (next) => [
        ...(has(ic, 'TCP') && tcpPorts.length === 0 ? [every('tcp', next)] : portRules('tcp', tcpPorts, next, 'port ')),
        ...(has(ic, 'UDP') && udpPorts.length === 0
          ? [every('udp', next)]
          : portRules('udp', udpPorts, next, 'UDP port ')),
      ],
    });
  }
  const rules: RenderedRule[] = [];
  for (const [i, s] of stages.entries()) rules.push(...s.build(stages[i + 1]?.chain ?? C.tproxy));
  return { chains: stages.map((s) => s.chain), rules, first: stages[0]?.chain ?? C.tproxy };
}

export function iptablesRules(
  ic: Interception,
  listenPort: number,
  f: Family,
): { chains: string[]; rules: RenderedRule[] } {
  const m = `${hexMark(ic.mark)}/${hexMark(ic.mask)}`;
  const rules: RenderedRule[] = [];
  const add = (chain: string, text: string, comment: string) => rules.push({ chain, text, comment });
  // First, before the divert rule: see the nftables renderer (TIME_WAIT sockets of a dead proxy).
  add(C.entry, `-j ${C.bypass}`, 'watchdog bypass: empty while the proxy is healthy');
  // Also with UDP only: the self-test's TCP probe needs its later packets diverted (nftables renderer).
  add(
    C.entry,
    `-p tcp ! --syn -m socket --transparent -j ${C.divert}`,
    'divert: established transparent sockets (never pure SYNs) go to the local socket',
  );
  // See the nftables renderer: TPROXY's established lookup, not the socket match, picks the socket, so
  // a reply socket between bind() and connect() never takes a client's datagram (the listener does).
  // TPROXY sets the mark itself and drops only when neither a connected socket nor the listener exists.
  if (has(ic, 'UDP')) {
    add(
      C.entry,
      `-p udp -m socket --transparent -j TPROXY --on-port ${listenPort} --tproxy-mark ${m}`,
      'divert (UDP): to the connected socket of a flow the proxy holds, else to the UDP listener',
    );
    add(
      C.entry,
      `-p ${f === 'IPv4' ? 'icmp' : 'ipv6-icmp'} -m socket --transparent -j ${C.divert}`,
      "divert (ICMP errors): to the proxy's socket they are about",
    );
  }
  // The datapath self-test (ADR 0021), as in the nftables renderer: agent-watch's probe skips the
  // spec's interface and source stages and enters the same TPFLEET-TPROXY stage.
  const probe = PROBE_ADDR[f];
  add(
    C.entry,
    `-i ${PROBE_IN} -d ${probe.dst}/${probe.prefix} -p tcp -g ${C.tproxy}`,
    `self-test (${f}): the agent's probe goes to the listen stage`,
  );
  // One protocol: a negated match returns the rest. Both: iptables cannot negate two -p in one rule,
  // so each goes on to the candidate chain and everything else falls off the entry chain (returns).
  const both = has(ic, 'TCP') && has(ic, 'UDP');
  const cand = both ? C.cand : C.entry;
  if (both) {
    add(C.entry, `-p tcp -g ${C.cand}`, 'TCP: a candidate');
    add(C.entry, `-p udp -g ${C.cand}`, 'UDP: a candidate (every other protocol returns)');
  } else if (has(ic, 'TCP')) add(C.entry, '! -p tcp -j RETURN', 'only TCP is intercepted');
  else add(C.entry, '! -p udp -j RETURN', 'only UDP is intercepted');
  if (!ic.localDestinations) {
    add(
      cand,
      '-m addrtype --dst-type LOCAL -j RETURN',
      'traffic to the node itself and replies to its own connections pass',
    );
  } else {
    // Loop guard, as in the nftables renderer: the proxy's upstream connections to node-local addresses.
    add(C.entry, '-i lo -j RETURN', 'loop guard: connections from the node itself (also the proxy upstream ones) pass');
  }
  const stage = stageRules(ic, f);
  add(cand, `-g ${stage.first}`, 'candidate: on to the match stages');
  rules.push(...stage.rules);
  add(C.divert, `-j MARK --set-xmark ${m}`, 'divert: mark for the local routing table');
  add(C.divert, '-j ACCEPT', 'divert: accept');
  add(C.tproxy, `-j ${C.gate}`, 'watchdog gate: empty while the proxy is healthy (FailClosed drop when it is not)');
  // Only pure SYNs (--syn), as in the nftables backend: a mid-flow packet without a transparent
  // socket belongs to a flow the proxy never held (e.g. one that went direct during a FailOpen bypass).
  // TPROXY itself drops a SYN when no listener exists (fails closed natively, reference pitfall 2).
  // TCP whatever `protocols` says: a UDP-only fleet's TPFLEET-TPROXY still takes the self-test's TCP
  // probe, and no other TCP gets here (the entry chain returned it).
  add(
    C.tproxy,
    `-p tcp --syn -j TPROXY --on-port ${listenPort} --tproxy-mark ${m}`,
    `tproxy: new connections to the transparent listener on :${listenPort}`,
  );
  if (has(ic, 'UDP'))
    add(
      C.tproxy,
      `-p udp -j TPROXY --on-port ${listenPort} --tproxy-mark ${m}`,
      `tproxy (UDP): datagrams of new flows to the UDP listener on :${listenPort}`,
    );
  if (ic.failurePolicy === 'FailClosed') {
    add(C.tproxy, '-j DROP', 'FailClosed: drop flows the proxy does not hold');
  }
  const chains = [C.entry, C.bypass, C.divert, ...(both ? [C.cand] : []), ...stage.chains, C.gate, C.tproxy];
  return { chains, rules };
}

/** The comment goes before the target (-j/-g) so each line reads match, purpose, action. */
const line = (r: RenderedRule) =>
  `-A ${r.chain} ${r.text.replace(/(^| )(-[jg] )/, `$1-m comment --comment "${r.comment}" $2`)}`;

export function renderIptables(
  ic: Interception,
  listenPort: number,
  variant: IptablesVariant,
  f: Family,
  owner?: { key: string; routing: RoutingRecord },
): IptablesFamilyPlan {
  // The owner marker (owner.ts) rides on the one hook rule: the chains' own rules stay as rendered.
  const hookComment = owner ? `${HOOK_COMMENT} ${hookMarker(owner.key, owner.routing)}` : HOOK_COMMENT;
  const { chains, rules } = iptablesRules(ic, listenPort, f);
  const expected: Record<string, string[]> = {};
  for (const c of chains) expected[c] = rules.filter((r) => r.chain === c).map((r) => r.comment);
  const doc = [
    `# Generated by tpfleet node agent (${f}); apply with --noflush: only our chains are declared.`,
    '*mangle',
    ...chains.map((c) => `:${c} - [0:0]`),
    ...chains.flatMap((c) => rules.filter((r) => r.chain === c).map(line)),
    'COMMIT',
    '',
  ].join('\n');
  return {
    family: f,
    ...binaries(variant, f),
    document: doc,
    chains,
    expected,
    hookSpec: `-m comment --comment "${hookComment}" -j ${C.entry}`,
    hookComment,
    hookChain: C.entry,
    gateChains: [C.bypass, C.gate],
  };
}

/** Atomic rewrite of TPFLEET-BYPASS and TPFLEET-GATE only (declaring a chain flushes it). */
export function iptablesGateDocument(mode: GateMode): string {
  const lines = ['*mangle', `:${C.bypass} - [0:0]`, `:${C.gate} - [0:0]`];
  if (mode === 'bypass')
    lines.push(`-A ${C.bypass} -m comment --comment "watchdog: proxy down, FailOpen bypass" -j ACCEPT`);
  if (mode === 'drop') lines.push(`-A ${C.gate} -m comment --comment "watchdog: proxy down, FailClosed drop" -j DROP`);
  // TPFLEET-GATE comes after the divert chain: established flows still reach the draining proxy.
  if (mode === 'drain') lines.push(`-A ${C.gate} -m comment --comment "${DRAIN_COMMENT}" -j ACCEPT`);
  return [...lines, 'COMMIT', ''].join('\n');
}
