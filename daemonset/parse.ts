// Pure parsers of what the host reports: /proc/net/tcp, `ip -j rule`, `ip -j route`, iptables-save
// and `nft -j list table`. Tested with captured outputs; no I/O here.
import type { RoutingPlan } from './types.ts';

export interface TcpSocket {
  /** As the kernel prints it: hex, each 32-bit word in host (little-endian) byte order. */
  localAddress: string;
  localPort: number;
  state: number;
  /** Owner uid and socket inode (the link /proc/<pid>/fd/<n> -> socket:[inode] names its process). */
  uid: number;
  inode: number;
}

export const TCP_LISTEN = 0x0a;

/** /proc/net/tcp and /proc/net/tcp6: "sl local_address rem_address st ..." with hex ADDR:PORT. */
export function parseProcNetTcp(text: string): TcpSocket[] {
  const out: TcpSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    const local = cols[1],
      st = cols[3];
    if (!local || !st) continue;
    const [addr = '', port = ''] = local.split(':');
    if (!/^[0-9A-Fa-f]+$/.test(port) || !/^[0-9A-Fa-f]+$/.test(st)) continue;
    out.push({
      localAddress: addr,
      localPort: parseInt(port, 16),
      state: parseInt(st, 16),
      uid: Number(cols[7] ?? -1),
      inode: Number(cols[9] ?? 0),
    });
  }
  return out;
}

/** "0100007F" -> 127.0.0.1; 32 hex digits -> an IPv6 address (words little-endian, as printed). */
export function procNetAddress(hex: string): string {
  const word = (w: string) => (w.match(/../g) ?? []).reverse().join('');
  if (hex.length === 8) return (word(hex).match(/../g) ?? []).map((b) => parseInt(b, 16)).join('.');
  const full = ((hex.match(/.{8}/g) ?? []).map(word).join('').match(/.{4}/g) ?? []).join(':');
  return new URL(`http://[${full}]/`).hostname.slice(1, -1); // the canonical (RFC 5952) form
}

export function hasListener(procTexts: string[], port: number): boolean {
  return procTexts.some((t) => parseProcNetTcp(t).some((s) => s.localPort === port && s.state === TCP_LISTEN));
}

export interface IpRule {
  priority: number;
  table: string;
  fwmark?: number;
  fwmask?: number;
  text: string;
}

function parseJsonArray(text: string, what: string): Record<string, unknown>[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  const v: unknown = JSON.parse(trimmed);
  if (!Array.isArray(v)) throw new Error(`${what}: expected a JSON array`);
  return v as Record<string, unknown>[];
}

const num = (v: unknown): number | undefined =>
  typeof v === 'number' ? v : typeof v === 'string' && v !== '' ? Number(v) : undefined;

/** `ip -j rule show`. ip omits fwmask when it is 0xffffffff. */
export function parseIpRules(text: string): IpRule[] {
  return parseJsonArray(text, 'ip -j rule').map((r) => {
    const fwmark = num(r.fwmark);
    const rule: IpRule = { priority: num(r.priority) ?? 0, table: String(r.table ?? ''), text: JSON.stringify(r) };
    if (fwmark !== undefined) {
      rule.fwmark = fwmark;
      rule.fwmask = num(r.fwmask) ?? 0xffffffff;
    }
    return rule;
  });
}

export interface IpRoute {
  type: string;
  dst: string;
  dev: string;
  text: string;
}

export function parseIpRoutes(text: string): IpRoute[] {
  return parseJsonArray(text, 'ip -j route').map((r) => ({
    type: String(r.type ?? 'unicast'),
    dst: String(r.dst ?? ''),
    dev: String(r.dev ?? ''),
    text: JSON.stringify(r),
  }));
}

export function isOurRule(r: IpRule, p: Pick<RoutingPlan, 'mark' | 'mask' | 'table' | 'priority'>): boolean {
  return r.priority === p.priority && r.table === String(p.table) && r.fwmark === p.mark && r.fwmask === p.mask;
}

export function isOurRoute(r: IpRoute, _p: RoutingPlan): boolean {
  return r.type === 'local' && r.dev === 'lo' && ['default', '0.0.0.0/0', '::/0'].includes(r.dst);
}

/** Chains declared and rule comments per chain, from `iptables-save -t mangle`. */
export interface SavedTable {
  present: boolean;
  chains: Set<string>;
  comments: Map<string, string[]>;
  /** `-A CHAIN ...` lines per chain, verbatim (for rollback). */
  lines: Map<string, string[]>;
  policies: Map<string, string>;
}

export function parseIptablesSave(text: string, table = 'mangle'): SavedTable {
  const out: SavedTable = {
    present: false,
    chains: new Set(),
    comments: new Map(),
    lines: new Map(),
    policies: new Map(),
  };
  let inTable = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      inTable = line === `*${table}`;
      out.present ||= inTable;
      continue;
    }
    if (!inTable) continue;
    if (line.startsWith(':')) {
      const [name = '', policy = '-'] = line.slice(1).split(/\s+/);
      out.chains.add(name);
      out.policies.set(name, policy);
    } else if (line.startsWith('-A ')) {
      const chain = line.split(/\s+/)[1] ?? '';
      const m = /--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))/.exec(line);
      const comment = (m?.[1] ?? m?.[2] ?? '').replace(/\\(.)/g, '$1');
      out.comments.set(chain, [...(out.comments.get(chain) ?? []), comment]);
      out.lines.set(chain, [...(out.lines.get(chain) ?? []), line]);
    }
  }
  return out;
}

/** Rule comments per chain and set names from `nft -j list table ...`. */
export function parseNftTableJson(text: string): { chains: Map<string, string[]>; sets: Set<string> } {
  const doc = JSON.parse(text) as {
    nftables?: Array<Record<string, { name?: string; chain?: string; comment?: string }>>;
  };
  const chains = new Map<string, string[]>();
  const sets = new Set<string>();
  for (const item of doc.nftables ?? []) {
    if (item.chain?.name) chains.set(item.chain.name, chains.get(item.chain.name) ?? []);
    if (item.set?.name) sets.add(item.set.name);
    const rule = item.rule;
    if (rule?.chain) chains.set(rule.chain, [...(chains.get(rule.chain) ?? []), rule.comment ?? '']);
  }
  return { chains, sets };
}

/** An nft table with only base chains, no rules, policy accept: what iptables-nft leaves behind. */
export function nftTableIsEmpty(text: string): boolean {
  const doc = JSON.parse(text) as { nftables?: Array<Record<string, { policy?: string; hook?: string }>> };
  for (const item of doc.nftables ?? []) {
    if (item.rule || item.set || item.map || item.flowtable) return false;
    if (item.chain && (!item.chain.hook || (item.chain.policy ?? 'accept') !== 'accept')) return false;
  }
  return true;
}
