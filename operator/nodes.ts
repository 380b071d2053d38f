// Active nodes of a TransparentProxy with spec.replicas set: chosen by scheduling.ts and marked
// with a per-object node label that the DaemonSet's nodeSelector requires.
//
// Node labels are written with JSON merge patches of that one key, not with server-side apply:
// SSA would make one field manager own the whole label set it applies per node, so applying
// object B's label would drop object A's. A merge patch touches exactly one key.
import type { TransparentProxySpec } from '../api/transparentproxy.ts';
import { resourcePath, type KubeObject } from './kube/client.ts';
import type { ReconcileContext } from './context.ts';
import { candidates, selectActive, type Candidate } from './scheduling.ts';
import { activeLabelKey, names, ZONE_LABEL } from './render/names.ts';

const NODES = { group: '', version: 'v1', plural: 'nodes', namespaced: false };

export interface ActiveNodes { active: Candidate[]; candidates: number }

async function setLabel(ctx: ReconcileContext, node: string, key: string, on: boolean): Promise<void> {
  await ctx.client.mergePatch(resourcePath(NODES, undefined, node), { metadata: { labels: { [key]: on ? 'true' : null } } });
}

/**
 * Scale-in hook. Today a leaving node stops intercepting at once (its label goes, the DaemonSet
 * controller deletes the pod, the agent's failurePolicy covers the switch-over). Graceful
 * draining (wait for open connections, then remove the rules) plugs in here: it will report the
 * node as Draining in status.nodes until its connections are gone.
 */
export async function leaveNode(ctx: ReconcileContext, node: string, key: string): Promise<void> {
  ctx.log.info({ node, label: key }, 'node leaves the active set');
  await setLabel(ctx, node, key, false);
}

/** Brings node labels in line with the spec; spec undefined = the object is gone (clear all). */
export async function syncActiveNodes(ctx: ReconcileContext, namespace: string, name: string, spec: TransparentProxySpec | undefined): Promise<ActiveNodes> {
  const key = activeLabelKey(namespace, name);
  const nodes = ctx.caches.nodes.list();
  const labeled = new Set(nodes.filter((n) => n.metadata.labels?.[key] === 'true').map((n) => n.metadata.name));
  if (!spec || spec.replicas === undefined) {
    for (const node of [...labeled].sort()) await setLabel(ctx, node, key, false);
    const all = spec ? candidates(nodes, spec.nodeSelector, spec.tolerations) : [];
    return { active: all, candidates: all.length };
  }
  const cands = candidates(nodes, spec.nodeSelector, spec.tolerations);
  let current: Set<string> = labeled;
  if (labeled.size === 0 && runsOnEveryCandidate(ctx.caches.daemonSets.get(namespace, names(name).daemonSet), key)) {
    // Switching from "every candidate" to a count: keep nodes that already run the proxy.
    current = new Set(cands.map((c) => c.name));
  }
  const zoneOf = (node: string) => nodes.find((n) => n.metadata.name === node)?.metadata.labels?.[ZONE_LABEL];
  const sel = selectActive(cands, current, spec.replicas, zoneOf);
  // Add before removing, so a replacement node intercepts before the one it replaces stops.
  for (const node of sel.added) await setLabel(ctx, node, key, true);
  for (const node of sel.active) if (!labeled.has(node) && !sel.added.includes(node)) await setLabel(ctx, node, key, true);
  for (const node of [...labeled].filter((n) => !sel.active.includes(n)).sort()) await leaveNode(ctx, node, key);
  const byName = new Map(cands.map((c) => [c.name, c]));
  return { active: sel.active.map((n) => byName.get(n)!), candidates: cands.length };
}

function runsOnEveryCandidate(ds: KubeObject | undefined, key: string): boolean {
  const sel = (ds as { spec?: { template?: { spec?: { nodeSelector?: Record<string, string> } } } } | undefined)?.spec?.template?.spec?.nodeSelector;
  return !!ds && !(sel && key in sel);
}
