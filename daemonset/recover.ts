// Cleanup when both state copies are lost (issue 20, ADR 0015): what the owner markers (owner.ts)
// on the node name, and nothing else. The janitor also learns from them which owners a node holds.
import { readIpRules, readRoutes } from './facts.ts';
import type { Family } from '../api/net.ts';
import { iptMarkers, iptRemove, removeNftMangleIfOursAndEmpty } from './filter-ipt.ts';
import { nftMarker, nftRemove } from './filter-nft.ts';
import { cleanup, mutator, routeKey, type ExecOptions } from './executor.ts';
import type { RoutingRecord } from './owner.ts';
import { isOurRoute, isOurRule } from './parse.ts';
import { routingArgv } from './plan.ts';
import { removeProbeLink } from './selftest.ts';
import type { AgentState } from './state.ts';

const FAMILIES = ['IPv4', 'IPv6'] as const;

/** What cleanup assumes of a family's nft mangle table without a state: absent before, so removed if empty. */
const UNKNOWN_BEFORE = (f: Family): AgentState['before'] => ({
  nftMangle: { [f]: false },
  nftPrerouting: { [f]: false },
  legacyMangle: {},
});

/** The owners named by markers on this node (nft table comment, iptables hook comments): the janitor's second source. */
export async function markedOwners(): Promise<string[]> {
  const out = new Set<string>();
  const nft = await nftMarker().catch(() => undefined);
  if (nft) out.add(nft.owner);
  for (const v of ['iptables-nft', 'iptables-legacy'] as const)
    for (const f of FAMILIES) for (const m of await iptMarkers(v, f)) out.add(m.owner);
  return [...out].sort();
}

/**
 * Both state copies lost: removes what `owner`'s markers name and nothing else: our table if its
 * comment names the owner, our chains and hook per variant and family if the hook's comment does,
 * the ip rule and local route of the numbers those markers record, and the probe link; and
 * iptables-nft's mangle table and PREROUTING chain when they are left empty (see below).
 */
export async function cleanupByMarker(owner: string, opts: ExecOptions): Promise<boolean> {
  const mutate = mutator(opts);
  const routing = new Map<string, RoutingRecord>();
  let found = false;
  const nft = await nftMarker();
  if (nft?.owner === owner) {
    await nftRemove(mutate);
    for (const r of nft.routing) routing.set(routeKey(r), r);
    found = true;
  }
  for (const v of ['iptables-nft', 'iptables-legacy'] as const)
    for (const f of FAMILIES) {
      const marks = (await iptMarkers(v, f)).filter((m) => m.owner === owner);
      if (marks.length === 0) continue;
      await iptRemove(v, f, mutate);
      // No state says whether iptables-nft's `mangle` table and PREROUTING base chain existed before
      // our first apply. Empty, with policy accept, they match nothing and iptables-nft creates them
      // again for the next rule anyone adds, so they go only when empty; one that holds anything, or
      // has another policy, stays. On a node with no mangle rules of its own (the common case: our
      // hook rule created both) this leaves it exactly as before (issue 20, path 5b).
      if (v === 'iptables-nft') await removeNftMangleIfOursAndEmpty(f, UNKNOWN_BEFORE(f), mutate);
      for (const m of marks) routing.set(routeKey(m.routing), m.routing);
      found = true;
    }
  for (const r of routing.values()) {
    const p = routingArgv(r.family, r.mark, r.mask, r.table, r.priority);
    if ((await readIpRules(r.family)).some((x) => isOurRule(x, p))) await mutate(p.ruleDel);
    if ((await readRoutes(r.family, r.table)).some((x) => isOurRoute(x, p))) await mutate(p.routeDel);
  }
  if (found) await removeProbeLink(mutate);
  if (found) opts.log.info({ owner }, 'no state: removed what the owner markers name');
  return found;
}

/** The state's exact cleanup; with no state and an owner, what that owner's markers name. */
export async function cleanupOwned(opts: ExecOptions): Promise<boolean> {
  if (await cleanup(opts)) return true;
  return opts.owner ? cleanupByMarker(opts.owner, opts) : false;
}
