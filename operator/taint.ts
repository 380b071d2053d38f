// The interception readiness taint on nodes (ADR 0019): NoSchedule while a node that should
// intercept has no Ready proxy pod, so no workload starts there before its traffic is intercepted
// (for egress control, a pod that starts first is a bypass). The operator writes it: it already
// patches node labels and sees pod readiness; a node agent that wrote it would need patch on
// every node from every node. Only this key, as the node-write policy enforces
// (operator/deploy/node-write-policy.yaml).
import { INTERCEPTION_TAINT } from '../api/defaults.ts';
import { resourcePath, type KubeObject } from '../kube/client.ts';
import type { ReconcileContext } from './context.ts';
import { R } from './kinds.ts';
import { activeLabelKey } from './render/names.ts';
import { matchesSelector } from './scheduling.ts';
import { LEAVING } from './nodes.ts';

interface Taint {
  key: string;
  value?: string;
  effect: string;
}
type NodeObj = KubeObject & { spec?: { taints?: Taint[] } };
type ProxyObj = KubeObject & { spec?: { nodeSelector?: Record<string, string>; replicas?: number } };

export const OUR_TAINT: Taint = { key: INTERCEPTION_TAINT, effect: 'NoSchedule' };

export const hasTaint = (n: KubeObject): boolean =>
  ((n as NodeObj).spec?.taints ?? []).some((t) => t.key === INTERCEPTION_TAINT);

/**
 * Whether a live TransparentProxy means this node to intercept: its nodeSelector matches and, with
 * replicas, the node is active ("true"); without, the node is not leaving. Looser than candidacy
 * (no Ready or taint check) on purpose: a node that goes NotReady for a while keeps its taint.
 */
export function claimed(node: KubeObject, proxies: KubeObject[]): boolean {
  return (proxies as ProxyObj[]).some((p) => {
    if (p.metadata.deletionTimestamp || !matchesSelector(node, p.spec?.nodeSelector)) return false;
    const label = node.metadata.labels?.[activeLabelKey(p.metadata.namespace ?? '', p.metadata.name)];
    return p.spec?.replicas === undefined ? label !== LEAVING : label === 'true';
  });
}

/**
 * Sets or lifts the taint on one node. A JSON patch guarded by the resourceVersion: the taint list
 * is one field shared with the kubelet and node controllers, and a stale list written back would
 * drop their taints. A conflict fails the reconcile, which retries on fresh caches.
 */
async function setTaint(ctx: ReconcileContext, node: NodeObj, on: boolean): Promise<void> {
  const others = (node.spec?.taints ?? []).filter((t) => t.key !== INTERCEPTION_TAINT);
  const taints = on ? [...others, OUR_TAINT] : others;
  ctx.log.info({ node: node.metadata.name, taint: INTERCEPTION_TAINT, on }, 'interception readiness taint');
  await ctx.client.jsonPatch(resourcePath(R.nodes, undefined, node.metadata.name), [
    { op: 'test', path: '/metadata/resourceVersion', value: node.metadata.resourceVersion },
    { op: node.spec?.taints ? 'replace' : 'add', path: '/spec/taints', value: taints },
  ]);
}

/**
 * The taint changes one object's reconcile makes, pure over the caches' contents: its intercepting
 * nodes tainted while their proxy pod is not Ready, untainted once it is; every other node that
 * carries the taint and no live object claims any more loses it (an object deleted, a node
 * relabelled or leaving). Nodes already as wanted are left out: a steady state writes nothing.
 */
export function taintChanges(
  nodes: KubeObject[],
  proxies: KubeObject[],
  intercepting: readonly string[],
  readyNodes: ReadonlySet<string>,
): { node: KubeObject; on: boolean }[] {
  const want = new Map(intercepting.map((n) => [n, !readyNodes.has(n)]));
  const out: { node: KubeObject; on: boolean }[] = [];
  for (const node of nodes) {
    const has = hasTaint(node);
    const on = want.get(node.metadata.name) ?? (has && claimed(node, proxies));
    if (on !== has) out.push({ node, on });
  }
  return out;
}

/** Writes taintChanges() for one object's reconcile (readyNodes: operator/pods.ts fleetPods). */
export async function syncTaints(
  ctx: ReconcileContext,
  intercepting: readonly string[],
  readyNodes: ReadonlySet<string>,
): Promise<void> {
  const changes = taintChanges(ctx.caches.nodes.list(), ctx.caches.proxies.list(), intercepting, readyNodes);
  for (const { node, on } of changes) await setTaint(ctx, node as NodeObj, on);
}
