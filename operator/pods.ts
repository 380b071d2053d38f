// What the proxy pods of one TransparentProxy tell about their nodes: readiness (the kubelet's
// Ready condition) and tuning (the condition the node agent publishes on its own pod, see
// daemonset/tuning-publish.ts). Pure over the pod cache's contents.
import { parseDecisionsMessage, POLICY_CONDITION_TYPE, type DecisionTotals } from '../api/policy-condition.ts';
import type { NodeTuning } from '../api/transparentproxy-status.ts';
import { parseTrafficMessage, TRAFFIC_CONDITION_TYPE, type NodeTraffic } from '../api/traffic-condition.ts';
import { TUNING_CONDITION_TYPE, TUNING_MESSAGE_MAX, TUNING_REASON_MAX } from '../api/tuning-condition.ts';
import type { KubeObject } from '../kube/client.ts';
import { CONFIG_CONDITION_TYPE, parseConfigCondition, type NodeConfigReport } from '../api/reload.ts';
import { leaveSelectorLabels, selectorLabels } from './render/names.ts';

interface PodCond {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
type Pod = KubeObject & { spec?: { nodeName?: string }; status?: { conditions?: PodCond[] } };

export interface FleetPods {
  /** Nodes whose proxy pod reports Ready. */
  readyNodes: Set<string>;
  /** Per node, the tuning its agent reported (absent: no report yet). */
  tuning: Map<string, NodeTuning>;
  /** Per node, the policy decision totals its agent reported (absent: none yet, or no policy). */
  decisions: Map<string, DecisionTotals>;
  /** Per node, the config hash its agent enforces and a refusal (daemonset/reload.ts). */
  configs: Map<string, NodeConfigReport>;
  /** Per node, the traffic its agent reported (absent: none yet). */
  traffic: Map<string, NodeTraffic>;
}

const isPodOf = (p: KubeObject, namespace: string, sel: Record<string, string>) =>
  p.metadata.namespace === namespace && Object.entries(sel).every(([k, v]) => p.metadata.labels?.[k] === v);
const isReady = (p: Pod) =>
  !p.metadata.deletionTimestamp &&
  !!p.spec?.nodeName &&
  (p.status?.conditions ?? []).some((x) => x.type === 'Ready' && x.status === 'True');

/** Nodes whose leave pod is Ready: its init container restored the node (operator/nodes.ts). */
export function leftNodes(pods: KubeObject[], namespace: string, name: string): Set<string> {
  const sel = leaveSelectorLabels(name);
  return new Set((pods as Pod[]).filter((p) => isPodOf(p, namespace, sel) && isReady(p)).map((p) => p.spec!.nodeName!));
}

/**
 * Nodes where a pod of the fleet still runs, or is not yet a Ready cleanup pod (a cleanup pod
 * turns Ready once its init container removed the node's rules). Deletion waits for these.
 */
export function uncleanNodes(pods: KubeObject[], namespace: string, name: string, modeAnnotation: string): string[] {
  const sel = selectorLabels(name);
  const mine = (pods as Pod[]).filter((p) => isPodOf(p, namespace, sel) && p.spec?.nodeName);
  const clean = new Set(
    mine
      .filter((p) => p.metadata.annotations?.[modeAnnotation] === 'cleanup' && isReady(p))
      .map((p) => p.spec!.nodeName!),
  );
  return [...new Set(mine.map((p) => p.spec!.nodeName!))].filter((n) => !clean.has(n)).sort();
}

const clip = (s: string, max: number) => (s.length <= max ? s : `${s.slice(0, max - 1)}…`);

export function fleetPods(pods: KubeObject[], namespace: string, name: string): FleetPods {
  const out: FleetPods = {
    readyNodes: new Set(),
    tuning: new Map(),
    decisions: new Map(),
    configs: new Map(),
    traffic: new Map(),
  };
  // Oldest first: during a surge rollout a node briefly has two pods, and the newer one's tuning
  // report is the one that stays (creationTimestamp is RFC 3339 in UTC, so it sorts as text).
  const sel = selectorLabels(name);
  const byAge = (pods as Pod[])
    .filter((p) => isPodOf(p, namespace, sel))
    .sort((a, b) => (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? ''));
  for (const p of byAge) {
    const node = p.spec?.nodeName;
    if (p.metadata.deletionTimestamp || !node) continue;
    const conds = p.status?.conditions ?? [];
    if (conds.some((x) => x.type === 'Ready' && x.status === 'True')) out.readyNodes.add(node);
    const t = conds.find((x) => x.type === TUNING_CONDITION_TYPE);
    // The reason is the agent's closed set; anything else (a hand edit) is shown, not trusted. The
    // bounds are the status schema's; the agent already sends less.
    if (t?.reason)
      out.tuning.set(node, {
        reason: clip(t.reason, TUNING_REASON_MAX),
        message: clip(t.message ?? '', TUNING_MESSAGE_MAX),
      });
    const d = parseDecisionsMessage(conds.find((x) => x.type === POLICY_CONDITION_TYPE)?.message);
    if (d) out.decisions.set(node, d);
    const c = parseConfigCondition(conds.find((x) => x.type === CONFIG_CONDITION_TYPE));
    if (c) out.configs.set(node, c);
    const tr = parseTrafficMessage(conds.find((x) => x.type === TRAFFIC_CONDITION_TYPE)?.message);
    if (tr) out.traffic.set(node, tr);
  }
  return out;
}
