// Owner markers (issue 20, ADR 0015): what the agent writes into the node's rule sets so that, with
// both state copies lost, cleanup and the janitor still recognise exactly the objects a given
// TransparentProxy installed, by a marker it wrote, never by a name prefix. nftables: the table
// comment names the owner, the base chain's comment records the routing numbers; iptables: the one
// hook rule's comment carries both (per family). The routing record steers privileged deletes, so
// it is parsed strictly and only ever yields the argv the planner renders (plan.ts routingArgv).
import { z } from 'zod';
import { routingTable, rulePriority } from '../api/fields.ts';
import type { Family } from '../api/net.ts';

/** `<namespace>.<name>`: a DNS-1123 label, a dot, a DNS-1035 label (api/transparentproxy.ts NAME_RULE). */
export const OWNER_KEY = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.[a-z]([-a-z0-9]{0,48}[a-z0-9])?$/;

export const ownerMarker = (owner: string): string => `tpfleet owner=${owner}`;

/** The owner a table comment names, or undefined for anything that is not exactly our marker. */
export function parseOwnerMarker(text: string | undefined): string | undefined {
  const m = /^tpfleet owner=(\S+)$/.exec(text ?? '');
  return m && OWNER_KEY.test(m[1]!) ? m[1] : undefined;
}

export interface RoutingRecord {
  family: Family;
  mark: number;
  mask: number;
  table: number;
  priority: number;
}

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;
export const routingEntry = (r: RoutingRecord): string =>
  `${r.family}:${hex(r.mark)}/${hex(r.mask)}:${r.table}:${r.priority}`;

const ENTRY = /^(IPv4|IPv6):0x([0-9a-f]{1,8})\/0x([0-9a-f]{1,8}):(\d{1,10}):(\d{1,10})$/;
const u32 = z.number().int().min(1).max(0xffffffff);

/** One `IPv4:0x2000/0x2000:2000:32000` entry, checked; throws naming what is wrong. */
export function parseRoutingEntry(text: string): RoutingRecord {
  const m = ENTRY.exec(text);
  if (!m) throw new Error(`owner marker: not a routing entry: ${JSON.stringify(text)}`);
  const r: RoutingRecord = {
    family: m[1] as Family,
    mark: parseInt(m[2]!, 16),
    mask: parseInt(m[3]!, 16),
    table: Number(m[4]),
    priority: Number(m[5]),
  };
  if (
    !u32.safeParse(r.mark).success ||
    !u32.safeParse(r.mask).success ||
    (r.mark & ~r.mask) >>> 0 !== 0 ||
    !routingTable.safeParse(r.table).success ||
    !rulePriority.safeParse(r.priority).success
  )
    throw new Error(`owner marker: routing entry out of bounds: ${JSON.stringify(text)}`);
  return r;
}

/** The nftables base chain's comment: every family's routing numbers. */
export const routingComment = (rs: readonly RoutingRecord[]): string => `routing ${rs.map(routingEntry).join(' ')}`;

export function parseRoutingComment(text: string | undefined): RoutingRecord[] {
  const m = /^routing ((?:\S+ ?){1,2})$/.exec(text ?? '');
  if (!m) return [];
  return m[1]!.trim().split(' ').map(parseRoutingEntry);
}

/** The iptables hook comment's owner part (after the fixed text, so an unmarked hook stays recognisable). */
export const hookMarker = (owner: string, r: RoutingRecord): string => `owner=${owner} routing=${routingEntry(r)}`;

export function parseHookMarker(comment: string): { owner: string; routing: RoutingRecord } | undefined {
  const m = / owner=(\S+) routing=(\S+)$/.exec(comment);
  if (!m || !OWNER_KEY.test(m[1]!)) return undefined;
  return { owner: m[1]!, routing: parseRoutingEntry(m[2]!) };
}
