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

export interface ActiveNodesPlan extends ActiveNodes {
  /** Removes the label from nodes leaving the set. Call it after the DaemonSet was applied: if
   * the DaemonSet still required the label while every label went (replicas → omitted), the
   * DaemonSet controller would delete the pods on every node at once. */
  finish: () => Promise<void>;
}

/**
 * Brings node labels in line with the spec: labels joining nodes now (a replacement intercepts
 * before the node it replaces stops) and returns `finish` for the leaving ones. spec undefined:
 * the object is gone; every label goes in finish().
 */
export async function syncActiveNodes(ctx: ReconcileContext, namespace: string, name: string, spec: TransparentProxySpec | undefined): Promise<ActiveNodesPlan> {
  const key = activeLabelKey(namespace, name);
  const nodes = ctx.caches.nodes.list();
  const labeled = new Set(nodes.filter((n) => n.metadata.labels?.[key] === 'true').map((n) => n.metadata.name));
  const leave = (keep: readonly string[]) => async () => {
    for (const node of [...labeled].filter((n) => !keep.includes(n)).sort()) await leaveNode(ctx, node, key);
  };
  if (!spec || spec.replicas === undefined) {
    const all = spec ? candidates(nodes, spec.nodeSelector, spec.tolerations) : [];
    return { active: all, candidates: all.length, finish: leave([]) };
  }
  const cands = candidates(nodes, spec.nodeSelector, spec.tolerations);
  let current: Set<string> = labeled;
  if (labeled.size === 0 && runsOnEveryCandidate(ctx.caches.daemonSets.get(namespace, names(name).daemonSet), key)) {
    // Switching from "every candidate" to a count: keep nodes that already run the proxy.
    current = new Set(cands.map((c) => c.name));
  }
  const zoneOf = (node: string) => nodes.find((n) => n.metadata.name === node)?.metadata.labels?.[ZONE_LABEL];
  const sel = selectActive(cands, current, spec.replicas, zoneOf);
  for (const node of sel.active) if (!labeled.has(node)) await setLabel(ctx, node, key, true);
  const byName = new Map(cands.map((c) => [c.name, c]));
  return { active: sel.active.map((n) => byName.get(n)!), candidates: cands.length, finish: leave(sel.active) };
}

function runsOnEveryCandidate(ds: KubeObject | undefined, key: string): boolean {
  const sel = (ds as { spec?: { template?: { spec?: { nodeSelector?: Record<string, string> } } } } | undefined)?.spec?.template?.spec?.nodeSelector;
  return !!ds && !(sel && key in sel);
}
