// Pure parsing of addresses, CIDRs, durations and hex masks used by the API schemas.
// No I/O here: the node agent, the sidecar and the operator all share these functions.
import { isIPv4, isIPv6 } from 'node:net';

export type Family = 'IPv4' | 'IPv6';

export interface Cidr {
  family: Family;
  /** Network address in canonical text form (host bits are zero). */
  address: string;
  prefix: number;
}

/** IPv4/IPv6 address → bigint (IPv4 in 32 bits, IPv6 in 128 bits). */
export function ipToBigInt(ip: string): bigint {
  if (isIPv4(ip)) {
    return ip.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
  }
  if (!isIPv6(ip)) throw new Error(`not an IP address: ${ip}`);
  let text = ip;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const n = ipToBigInt(v4[1]);
    text = `${text.slice(0, -v4[1].length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

export function bigIntToIp(n: bigint, family: Family): string {
  if (family === 'IPv4') {
    return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join('.');
  }
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((n >> s) & 0xffffn).toString(16));
  // Canonical form (RFC 5952): compress the longest run (>= 2) of zero groups.
  let best = -1,
    bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export function familyOf(ip: string): Family | undefined {
  if (isIPv4(ip)) return 'IPv4';
  if (isIPv6(ip)) return 'IPv6';
  return undefined;
}

/**
 * Parses "10.0.0.0/8", "fd00::/64" or a bare address (a host route). Returns an error message
 * instead of throwing so schema refinements can name the field. Host bits must be zero: a user
 * writing 10.0.0.1/8 almost always meant something else, and nft/iptables would silently differ.
 */
export function parseCidr(text: string): Cidr | string {
  const [ip = '', prefixText, extra] = text.split('/');
  if (extra !== undefined) return `"${text}" is not a CIDR`;
  const family = familyOf(ip);
  if (!family) return `"${text}" is not an IPv4 or IPv6 CIDR`;
  const bits = family === 'IPv4' ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return `"${text}" has an invalid prefix length`;
  const prefix = prefixText === undefined ? bits : Number(prefixText);
  if (prefix > bits) return `"${text}" has a prefix length over ${bits}`;
  const n = ipToBigInt(ip);
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  if ((n & hostMask) !== 0n) {
    const net = bigIntToIp(n & ~hostMask & ((1n << BigInt(bits)) - 1n), family);
    return `"${text}" has host bits set (did you mean ${net}/${prefix}?)`;
  }
  return { family, address: bigIntToIp(n, family), prefix };
}

export function cidrText(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Kubernetes-style duration text: "500ms", "5s", "1m30s", "2h" (also the CRD's pattern). */
export const DURATION = /^([0-9]+(ms|s|m|h))+$/;

/** Kubernetes-style durations: "500ms", "5s", "1m30s", "2h". Returns milliseconds or an error. */
export function parseDuration(text: string): number | string {
  if (!DURATION.test(text)) return `"${text}" is not a duration like 500ms, 5s, 1m30s or 2h`;
  let total = 0;
  for (const m of text.matchAll(/(\d+)(ms|s|m|h)/g)) total += Number(m[1]) * (UNIT_MS[m[2] ?? 's'] ?? 0);
  return total;
}

/** Milliseconds of a duration a schema already accepted; throws on one it would not have. */
export function durationMs(text: string): number {
  const ms = parseDuration(text);
  if (typeof ms === 'string') throw new Error(ms);
  return ms;
}
