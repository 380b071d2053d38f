// fwmark collisions (issue 20): every rule on the node that sets or matches packet-mark bits in
// our mask, in iptables-nft, iptables-legacy and nftables alike, whichever backend we use. A
// foreign MARK would clear or fake our bit (diverting traffic that is not ours, or losing ours);
// a foreign mark match would change meaning once our bit is set. apply refuses and names the rule
// and, where its chain says so, its owner. Pure parsers here; marksInUse() reads the host.
import { OUR_CHAINS } from './render-ipt.ts';
import { run } from './run.ts';

export interface MarkUse {
  /** Where the rule lives: "iptables-nft", "ip6tables-legacy", "nftables". */
  source: string;
  table: string;
  chain: string;
  /** Packet-mark bits the rule sets or matches. */
  bits: number;
  /** The rule as its tool prints it. */
  text: string;
}

const ALL = 0xffffffff;
const num = (s: string | undefined, dflt: number) => (s === undefined ? dflt : Number.parseInt(s, 16) >>> 0);
/** "0x4000/0x4000" or "0x1" (mask defaults to every bit). */
function valueMask(text: string): { value: number; mask: number } {
  const [v, m] = text.split('/');
  return { value: num(v?.replace(/^0x/, ''), 0), mask: num(m?.replace(/^0x/, ''), ALL) };
}

/** Mark bits one `-A ...` line of iptables-save touches (0: none). */
export function iptablesLineBits(line: string): number {
  let bits = 0;
  const target = / -j (\S+)/.exec(line)?.[1];
  // MARK --set-xmark V/M: mark = (mark & ~M) ^ V, so bits M | V. (--set-mark/--or-mark/... are saved as it.)
  const xmark = / --set-xmark (\S+)/.exec(line)?.[1];
  if (target === 'MARK' && xmark) {
    const { value, mask } = valueMask(xmark);
    bits |= mask | value;
  }
  for (const m of line.matchAll(/ -m mark (?:! )?--mark (\S+)/g)) bits |= valueMask(m[1]!).mask;
  const tproxy = / --tproxy-mark (\S+)/.exec(line)?.[1];
  if (tproxy) bits |= valueMask(tproxy).mask | valueMask(tproxy).value;
  // CONNMARK --restore-mark writes the packet-mark bits of --nfmask.
  if (target === 'CONNMARK' && / --restore-mark/.test(line))
    bits |= num(/ --nfmask (\S+)/.exec(line)?.[1]?.slice(2), ALL);
  return bits >>> 0;
}

/** Every foreign rule of an iptables-save dump (all tables) that touches mark bits. */
export function iptablesMarkUses(text: string, source: string): MarkUse[] {
  const out: MarkUse[] = [];
  let table = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1).trim();
    if (!line.startsWith('-A ')) continue;
    const chain = line.split(' ')[1] ?? '';
    if (OUR_CHAINS.has(chain)) continue;
    const bits = iptablesLineBits(line);
    if (bits) out.push({ source, table, chain, bits, text: line });
  }
  return out;
}

type Json = Record<string, unknown>;
const isMetaMark = (e: unknown) => (e as { meta?: { key?: string } })?.meta?.key === 'mark';

/** Bits an nft expression over `meta mark` writes: a constant replaces all, | ^ set, & clears. */
function writtenBits(v: unknown): number {
  if (typeof v === 'number') return ALL;
  const o = v as Json;
  for (const op of ['|', '^', '&'] as const) {
    const args = o?.[op] as unknown[] | undefined;
    if (!Array.isArray(args)) continue;
    let bits = 0;
    for (const a of args) {
      if (typeof a === 'number') bits |= op === '&' ? ~a >>> 0 : a;
      else if (!isMetaMark(a)) bits |= writtenBits(a);
    }
    return bits >>> 0;
  }
  return ALL; // ct mark, a map, anything else: every bit may change
}

/** Mark bits an nft rule (one `nft -j` rule object) sets or matches. */
export function nftRuleBits(expr: unknown[]): number {
  let bits = 0;
  for (const e of expr as Json[]) {
    const mangle = e.mangle as { key?: unknown; value?: unknown } | undefined;
    if (mangle && isMetaMark(mangle.key)) bits |= writtenBits(mangle.value);
    const match = e.match as { left?: unknown } | undefined;
    if (match) {
      const and = (match.left as Json)?.['&'] as unknown[] | undefined;
      if (isMetaMark(match.left)) bits |= ALL;
      else if (Array.isArray(and) && and.some(isMetaMark)) for (const a of and) if (typeof a === 'number') bits |= a;
    }
  }
  return bits >>> 0;
}

/** Every rule of `nft -j list ruleset` outside our table that touches mark bits. */
export function nftMarkUses(text: string, ourTable: string): MarkUse[] {
  const out: MarkUse[] = [];
  const items = (JSON.parse(text) as { nftables?: Json[] }).nftables ?? [];
  for (const item of items) {
    const r = item.rule as { family: string; table: string; chain: string; expr?: unknown[] } | undefined;
    if (!r?.expr) continue;
    if ((r.family === 'inet' && r.table === ourTable) || OUR_CHAINS.has(r.chain)) continue;
    const bits = nftRuleBits(r.expr);
    if (bits)
      out.push({
        source: 'nftables',
        table: `${r.family} ${r.table}`,
        chain: r.chain,
        bits,
        text: JSON.stringify(r.expr),
      });
  }
  return out;
}

/** Who a chain belongs to, by the names the common networking components give theirs. */
export function knownOwner(chain: string): string | undefined {
  if (/^KUBE-/.test(chain) || /^kube-proxy/i.test(chain)) return 'kube-proxy';
  if (/^cali-/.test(chain)) return 'Calico';
  if (/^(CILIUM_|cilium)/.test(chain)) return 'Cilium';
  if (/^FLANNEL/.test(chain)) return 'flannel';
  return undefined;
}

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

/** The refusals for `mask`: one per foreign rule touching its bits. */
export function markProblems(uses: MarkUse[], mask: number): string[] {
  return uses
    .filter((u) => (u.bits & mask) >>> 0 !== 0)
    .map((u) => {
      const owner = knownOwner(u.chain);
      return (
        `fwmark bits ${hex((u.bits & mask) >>> 0)} of our mask ${hex(mask)} are used by ${owner ? `${owner}'s` : 'a foreign'} rule ` +
        `(${u.source}, table ${u.table}, chain ${u.chain}): ${u.text}; choose interception.mark/mask outside ${hex(u.bits)}`
      );
    });
}

/** Reads every rule set on the node; a tool that is missing or has nothing loaded adds nothing. */
export async function marksInUse(ourTable: string): Promise<MarkUse[]> {
  const uses: MarkUse[] = [];
  for (const tool of ['iptables-nft', 'ip6tables-nft', 'iptables-legacy', 'ip6tables-legacy']) {
    // `-save` without -t dumps only tables already in use: reading never initializes a legacy table.
    const r = await run([`${tool}-save`]);
    if (r.code === 0) uses.push(...iptablesMarkUses(r.stdout, tool));
  }
  const n = await run(['nft', '-j', 'list', 'ruleset']);
  if (n.code === 0 && n.stdout.trim()) uses.push(...nftMarkUses(n.stdout, ourTable));
  return uses;
}
