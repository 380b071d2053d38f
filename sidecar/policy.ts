// Compiles the egress policy (api/policy.ts PolicyConfig) into the table the engine looks decisions up
// in (sidecar/native/src/policy.h describes the layout). TypeScript owns the rules, their order and
// every match; the engine only finds, per connection, the lowest-numbered rule whose criteria all hold:
// each dimension (destination, source, port, name) maps to a bitset of the rules it allows, and the
// bitsets are ANDed. Also the reference matcher `decide()`, which the tests hold the engine to.
import type { PolicyConfig } from '../api/policy.ts';
import { ipToBigInt, type Cidr } from '../api/net.ts';

export interface ResolvedUpstream {
  name: string;
  type: 'HTTPConnect' | 'SOCKS5';
  address: { family: 4 | 6; address: string; port: number };
  connectTimeoutMs: number;
  username?: string;
  password?: string;
}

export interface CompiledPolicy {
  blob: Uint8Array;
  ruleNames: string[];
  upstreamNames: string[];
}

const ACTION = { Allow: 0, Deny: 1, Forward: 2 } as const;
const PN_SNI = 1,
  PN_HOST = 2;

/** FNV-1a 64 of UTF-8 text, as the engine hashes names (policy.c fnv1a). */
export function fnv1a(text: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(text)) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n);
  return h;
}

class Writer {
  private buf = Buffer.alloc(1 << 16);
  private n = 0;
  private room(k: number): void {
    if (this.n + k <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.n + k));
    this.buf.copy(next, 0, 0, this.n);
    this.buf = next;
  }
  u8(v: number): void {
    this.room(1);
    this.buf.writeUInt8(v, this.n);
    this.n += 1;
  }
  u16(v: number): void {
    this.room(2);
    this.buf.writeUInt16LE(v, this.n);
    this.n += 2;
  }
  u32(v: number): void {
    this.room(4);
    this.buf.writeUInt32LE(v >>> 0, this.n);
    this.n += 4;
  }
  u64(v: bigint): void {
    this.room(8);
    this.buf.writeBigUInt64LE(v, this.n);
    this.n += 8;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.n);
    this.n += b.length;
  }
  done(): Uint8Array {
    return new Uint8Array(this.buf.subarray(0, this.n));
  }
}

type Bits = BigUint64Array;
const newBits = (words: number): Bits => new BigUint64Array(words);
const setBit = (b: Bits, i: number): void => {
  b[i >> 6] = b[i >> 6]! | (1n << BigInt(i & 63));
};

/** A range of keys [start, end] of one width (bits: 32 for IPv4 and ports, 128 for IPv6). */
interface Range {
  start: bigint;
  end: bigint;
}

function cidrRange(c: Cidr): Range {
  const width = c.family === 'IPv4' ? 32 : 128;
  const start = ipToBigInt(c.address);
  return { start, end: start + (1n << BigInt(width - c.prefix)) - 1n };
}

/**
 * An interval table over a key space: sorted starts, each with the bits of the rules whose ranges
 * cover it, plus the rules with no criterion in this dimension (they match any key).
 */
function intervals(ranges: (Range[] | undefined)[], width: number, words: number): { start: bigint; bits: Bits }[] {
  const max = (1n << BigInt(width)) - 1n;
  const cuts = new Set<bigint>([0n]);
  for (const list of ranges)
    for (const r of list ?? []) {
      cuts.add(r.start);
      if (r.end < max) cuts.add(r.end + 1n);
    }
  const starts = [...cuts].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const table = starts.map((start) => ({ start, bits: newBits(words) }));
  const index = (k: bigint): number => {
    // last start <= k
    let lo = 0,
      hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= k) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  for (const [rule, list] of ranges.entries()) {
    if (list === undefined) {
      for (const e of table) setBit(e.bits, rule);
      continue;
    }
    for (const r of list)
      for (let i = index(r.start); i < table.length && table[i]!.start <= r.end; i++) setBit(table[i]!.bits, rule);
  }
  return table;
}

function writeIntervals(w: Writer, table: { start: bigint; bits: Bits }[], width: number): void {
  w.u32(table.length);
  for (const e of table) {
    if (width === 128) {
      const b = Buffer.alloc(16);
      b.writeBigUInt64BE(e.start >> 64n, 0);
      b.writeBigUInt64BE(e.start & 0xffffffffffffffffn, 8);
      w.bytes(b);
    } else {
      const b = Buffer.alloc(8);
      b.writeUInt32BE(Number(e.start), 0); // network order compares as numbers do; 4 bytes of padding
      w.bytes(b);
    }
    for (const x of e.bits) w.u64(x);
  }
}

/** name -> bits, for exact names and for wildcards (keyed by the parent: *.example.com -> example.com). */
function nameTables(
  patterns: (string[] | undefined)[],
  words: number,
): { exact: Map<string, Bits>; wild: Map<string, Bits> } {
  const exact = new Map<string, Bits>(),
    wild = new Map<string, Bits>();
  patterns.forEach((list, rule) => {
    for (const p of list ?? []) {
      const [map, key] = p.startsWith('*.') ? [wild, p.slice(2)] : [exact, p];
      const bits = map.get(key) ?? newBits(words);
      setBit(bits, rule);
      map.set(key, bits);
    }
  });
  return { exact, wild };
}

class Strings {
  private parts: Buffer[] = [];
  private n = 0;
  add(text: string): { off: number; len: number } {
    const b = Buffer.from(text);
    this.parts.push(b);
    const at = { off: this.n, len: b.length };
    this.n += b.length;
    return at;
  }
  write(w: Writer): void {
    w.u32(this.n);
    for (const p of this.parts) w.bytes(p);
  }
}

function writeNames(w: Writer, map: Map<string, Bits>, strings: Strings): void {
  const entries = [...map].map(([name, bits]) => ({ hash: fnv1a(name), name, bits }));
  entries.sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
  w.u32(entries.length);
  for (const e of entries) {
    const s = strings.add(e.name);
    w.u64(e.hash);
    w.u32(s.off);
    w.u32(s.len);
    for (const x of e.bits) w.u64(x);
  }
}

const portRange = (p: { port: number; endPort?: number }): Range => ({
  start: BigInt(p.port),
  end: BigInt(p.endPort ?? p.port),
});
/** A criterion's ranges for one family: undefined (any) when the rule does not restrict it. */
const byFamily = (list: Cidr[] | undefined, family: Cidr['family']): Range[] | undefined =>
  list && list.length > 0 ? list.filter((c) => c.family === family).map(cidrRange) : undefined;
const names = (list: string[] | undefined): string[] | undefined => (list && list.length > 0 ? list : undefined);

export function compilePolicy(p: PolicyConfig, upstreams: ResolvedUpstream[]): CompiledPolicy {
  const rules = p.rules;
  const words = Math.max(1, Math.ceil(rules.length / 64));
  const upIndex = new Map(upstreams.map((u, i) => [u.name, i]));
  const w = new Writer();
  w.u32(0x4c505054); // "TPPL"
  w.u32(1);
  w.u32(rules.length);
  w.u32(words);
  w.u32(p.defaultAction === 'Deny' ? 1 : 0);
  w.u32(upstreams.length);
  w.u32(p.peek.maxBytes);
  w.u32(p.peek.timeout);
  const nameless = newBits(words);
  rules.forEach((r, i) => {
    const needs = (names(r.match.serverNames) ? PN_SNI : 0) | (names(r.match.hosts) ? PN_HOST : 0);
    if (!needs) setBit(nameless, i);
    w.u8(ACTION[r.action]);
    w.u8(r.upstream !== undefined ? (upIndex.get(r.upstream) ?? 255) : 255);
    w.u8(needs);
    w.u8(r.proxyProtocol === 'v1' ? 1 : r.proxyProtocol === 'v2' ? 2 : 0);
    w.u32(r.limits?.connectionsPerSecond ?? 0);
    w.u32(r.limits?.burst ?? r.limits?.connectionsPerSecond ?? 0);
    w.u32(r.limits?.openConnections ?? 0);
    w.u64(fnv1a(r.name));
  });
  for (const x of nameless) w.u64(x);
  const m = rules.map((r) => r.match);
  writeIntervals(
    w,
    intervals(
      m.map((x) => byFamily(x.destinations, 'IPv4')),
      32,
      words,
    ),
    32,
  );
  writeIntervals(
    w,
    intervals(
      m.map((x) => byFamily(x.destinations, 'IPv6')),
      128,
      words,
    ),
    128,
  );
  writeIntervals(
    w,
    intervals(
      m.map((x) => byFamily(x.sources, 'IPv4')),
      32,
      words,
    ),
    32,
  );
  writeIntervals(
    w,
    intervals(
      m.map((x) => byFamily(x.sources, 'IPv6')),
      128,
      words,
    ),
    128,
  );
  writeIntervals(
    w,
    intervals(
      m.map((x) => (x.ports && x.ports.length > 0 ? x.ports.map(portRange) : undefined)),
      32,
      words,
    ),
    32,
  );
  const strings = new Strings();
  const sni = nameTables(
    m.map((x) => names(x.serverNames)),
    words,
  );
  const host = nameTables(
    m.map((x) => names(x.hosts)),
    words,
  );
  writeNames(w, sni.exact, strings);
  writeNames(w, sni.wild, strings);
  writeNames(w, host.exact, strings);
  writeNames(w, host.wild, strings);
  const creds = upstreams.map((u) => ({ user: strings.add(u.username ?? ''), pass: strings.add(u.password ?? '') }));
  strings.write(w);
  w.u32(upstreams.length);
  upstreams.forEach((u, i) => {
    const a = Buffer.alloc(16);
    const n = ipToBigInt(u.address.address);
    if (u.address.family === 4) a.writeUInt32BE(Number(n), 0);
    else {
      a.writeBigUInt64BE(n >> 64n, 0);
      a.writeBigUInt64BE(n & 0xffffffffffffffffn, 8);
    }
    w.u8(u.type === 'HTTPConnect' ? 1 : 2);
    w.u8(u.address.family);
    w.u16(u.address.port);
    w.bytes(a);
    w.u32(u.connectTimeoutMs);
    w.u32(creds[i]!.user.off);
    w.u32(creds[i]!.user.len);
    w.u32(creds[i]!.pass.off);
    w.u32(creds[i]!.pass.len);
  });
  return { blob: w.done(), ruleNames: rules.map((r) => r.name), upstreamNames: upstreams.map((u) => u.name) };
}

// --- the reference matcher: what the table must decide (tests hold the engine to it) -----------

export interface Connection {
  src: string;
  dst: string;
  port: number;
  /** What the client's first bytes said, if anything. */
  sni?: string;
  host?: string;
}

const inCidr = (ip: string, c: Cidr): boolean => {
  const fam = ip.includes(':') ? 'IPv6' : 'IPv4';
  if (fam !== c.family) return false;
  const r = cidrRange(c),
    v = ipToBigInt(ip);
  return v >= r.start && v <= r.end;
};
const nameMatches = (name: string, pattern: string): boolean =>
  pattern.startsWith('*.')
    ? name.endsWith(pattern.slice(1)) &&
      !name.slice(0, -pattern.length + 1).includes('.') &&
      name.length > pattern.length - 1
    : name === pattern;

type Match = PolicyConfig['rules'][number]['match'];

/** Whether the destination, source and port criteria of a rule hold (its names aside). */
export function addressMatches(m: Match, c: Connection): boolean {
  if (m.destinations?.length && !m.destinations.some((x) => inCidr(c.dst, x))) return false;
  if (m.sources?.length && !m.sources.some((x) => inCidr(c.src, x))) return false;
  return !m.ports?.length || m.ports.some((x) => c.port >= x.port && c.port <= (x.endPort ?? x.port));
}

/** The index of the rule that decides `c` (first match in order), or -1 for the default action. */
export function decide(p: PolicyConfig, c: Connection): number {
  return p.rules.findIndex((r) => {
    const m = r.match;
    if (!addressMatches(m, c)) return false;
    const sni = m.serverNames?.length ? m.serverNames : undefined,
      hosts = m.hosts?.length ? m.hosts : undefined;
    if (!sni && !hosts) return true;
    return (
      (!!sni && !!c.sni && sni.some((x) => nameMatches(c.sni!, x))) ||
      (!!hosts && !!c.host && hosts.some((x) => nameMatches(c.host!, x)))
    );
  });
}
