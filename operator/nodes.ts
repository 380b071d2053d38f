// Active nodes of a TransparentProxy with spec.replicas set: chosen by scheduling.ts and marked
// with a per-object node label that the DaemonSet's nodeSelector requires.
//
// The label's life on a node: absent -> "true" (active: the proxy pod runs there) -> "leaving"
// (scale-in: the proxy pod goes and drains; the leave DaemonSet's pod restores the node, see
// daemonset/leave.ts) -> absent once that pod is Ready (its init container finished the cleanup).
// A leaving node is not a candidate until it has left: re-activating it mid-cleanup would race the
// cleanup against the new pod's apply.
//
// Node labels are written with JSON merge patches of that one key, not with server-side apply:
// SSA would make one field manager own the whole label set it applies per node, so applying
// object B's label would drop object A's. A merge patch touches exactly one key.
import type { TransparentProxySpec } from '../api/transparentproxy.ts';
import { resourcePath, type KubeObject } from '../kube/client.ts';
import type { ReconcileContext } from './context.ts';
import { R } from './kinds.ts';
import { leftNodes } from './pods.ts';
import { candidates, selectActive, type Candidate } from './scheduling.ts';
import { activeLabelKey, names, ZONE_LABEL } from './render/names.ts';

export const LEAVING = 'leaving';

export interface ActiveNodes {
  active: Candidate[];
  candidates: number;
  /** Nodes still leaving once finish() ran (status.nodes shows them as Draining). */
  leaving: () => string[];
}

/** One key of one node's labels: "true", LEAVING, or null (removed). */
async function setLabel(
  ctx: ReconcileContext,
  node: string,
  key: string,
  value: 'true' | typeof LEAVING | null,
): Promise<void> {
  await ctx.client.mergePatch(resourcePath(R.nodes, undefined, node), { metadata: { labels: { [key]: value } } });
}

/** Scale-in: "true" -> "leaving". The proxy pod goes (and drains), the leave pod comes. */
export async function leaveNode(ctx: ReconcileContext, node: string, key: string): Promise<void> {
  ctx.log.info({ node, label: key }, 'node leaves the active set: draining, then restoring the node');
  await setLabel(ctx, node, key, LEAVING);
}

/** Nodes of this object still leaving: labelled "leaving" and their leave pod not Ready yet. */
export function pendingLeaves(ctx: ReconcileContext, namespace: string, name: string): string[] {
  const key = activeLabelKey(namespace, name);
  const left = leftNodes(ctx.caches.pods.list(), namespace, name);
  return ctx.caches.nodes
    .list()
    .filter((n) => n.metadata.labels?.[key] === LEAVING && !left.has(n.metadata.name))
    .map((n) => n.metadata.name)
    .sort();
}

export interface ActiveNodesPlan extends ActiveNodes {
  /** Moves nodes out of the active set: active ones that must go start leaving, leaving ones
   * whose leave pod is Ready lose the label. Call it after the DaemonSets were applied (and the
   * status written, see reconcile.ts): if the DaemonSet still required the label while every
   * label went (replicas → omitted), the DaemonSet controller would delete every pod at once. */
  finish: () => Promise<void>;
}

/**
 * Brings node labels in line with the spec: labels joining nodes now (a replacement intercepts
 * before the node it replaces stops) and returns `finish` for the leaving ones. spec undefined:
 * the object is gone; every label goes in finish().
 */
export async function syncActiveNodes(
  ctx: ReconcileContext,
  namespace: string,
  name: string,
  spec: TransparentProxySpec | undefined,
): Promise<ActiveNodesPlan> {
  const key = activeLabelKey(namespace, name);
  const nodes = ctx.caches.nodes.list();
  const withLabel = (v: string) =>
    new Set(nodes.filter((n) => n.metadata.labels?.[key] === v).map((n) => n.metadata.name));
  const labeled = withLabel('true'),
    leaving = withLabel(LEAVING);
  if (!spec || spec.replicas === undefined) {
    // Every candidate is active: "true" labels just go. A node still leaving keeps its label
    // until it has left (the proxy DaemonSet's affinity keeps its pods off such nodes meanwhile).
    // The object is gone (spec undefined): nothing restores anything any more, every label goes.
    const all = spec ? candidates(nodes, spec.nodeSelector, spec.tolerations) : [];
    const still = new Set(spec ? leaving : []);
    const finish = async () => {
      const left = leftNodes(ctx.caches.pods.list(), namespace, name);
      for (const node of [...labeled, ...leaving].sort()) {
        if (still.has(node) && !left.has(node)) continue;
        await setLabel(ctx, node, key, null);
        still.delete(node);
      }
    };
    return {
      active: all.filter((c) => !still.has(c.name)),
      candidates: all.length,
      leaving: () => [...still].sort(),
      finish,
    };
  }
  const eligible = candidates(nodes, spec.nodeSelector, spec.tolerations);
  const cands = eligible.filter((c) => !leaving.has(c.name));
  let current: Set<string> = labeled;
  if (labeled.size === 0 && runsOnEveryCandidate(ctx.caches.daemonSets.get(namespace, names(name).daemonSet), key)) {
    // Switching from "every candidate" to a count: keep nodes that already run the proxy.
    current = new Set(cands.map((c) => c.name));
  }
  const zoneOf = (node: string) => nodes.find((n) => n.metadata.name === node)?.metadata.labels?.[ZONE_LABEL];
  const sel = selectActive(cands, current, spec.replicas, zoneOf);
  for (const node of sel.active) if (!labeled.has(node)) await setLabel(ctx, node, key, 'true');
  const byName = new Map(cands.map((c) => [c.name, c]));
  const still = new Set(leaving);
  const finish = async () => {
    // Idempotency: a node already "leaving" is not patched again; a node whose leave pod is
    // Ready loses the label once (the next reconcile no longer sees it as leaving).
    for (const node of [...labeled].filter((n) => !sel.active.includes(n)).sort()) {
      await leaveNode(ctx, node, key);
      still.add(node);
    }
    const left = leftNodes(ctx.caches.pods.list(), namespace, name);
    for (const node of [...leaving].filter((n) => left.has(n)).sort()) {
      ctx.log.info({ node, label: key }, 'node has left: its rules, routes and tuning are restored');
      await setLabel(ctx, node, key, null);
      still.delete(node);
    }
  };
  return {
    active: sel.active.map((n) => byName.get(n)!),
    candidates: eligible.length,
    leaving: () => [...still].sort(),
    finish,
  };
}

function runsOnEveryCandidate(ds: KubeObject | undefined, key: string): boolean {
  const sel = (ds as { spec?: { template?: { spec?: { nodeSelector?: Record<string, string> } } } } | undefined)?.spec
    ?.template?.spec?.nodeSelector;
  return !!ds && !(sel && key in sel);
}
