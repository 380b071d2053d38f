// Cleanup when both state copies are lost (issue 20, ADR 0015): what the owner markers (owner.ts)
// on the node name, and nothing else. The janitor also learns from them which owners a node holds.
import { readIpRules, readRoutes } from './facts.ts';
import { iptMarkers, iptRemove } from './filter-ipt.ts';
import { nftMarker, nftRemove } from './filter-nft.ts';
import { cleanup, mutator, routeKey, type ExecOptions } from './executor.ts';
import type { RoutingRecord } from './owner.ts';
import { isOurRoute, isOurRule } from './parse.ts';
import { routingArgv } from './plan.ts';
import { removeProbeLink } from './selftest.ts';

const FAMILIES = ['IPv4', 'IPv6'] as const;

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
 * the ip rule and local route of the numbers those markers record, and the probe link. Without a
 * state, an empty `table ip mangle` iptables-nft created stays (whether it existed before is unknown).
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
