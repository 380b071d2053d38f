// Which nodes are candidates and which are active. Pure functions over Node objects.
//
// Candidates: match spec.nodeSelector, Ready, schedulable, every NoSchedule/NoExecute taint
// tolerated (what the DaemonSet controller would accept, minus nodes about to be drained).
// Active (only when spec.replicas is set): keep the already-active candidates when possible
// (minimal churn: scaling by k changes exactly k nodes), grow into the least-populated zone first
// and shrink from the most-populated one (spread over topology.kubernetes.io/zone); ties break
// by node name so the choice is deterministic across operator restarts.
import { INTERCEPTION_TAINT } from '../api/defaults.ts';
import type { Toleration } from '../api/transparentproxy.ts';
import type { KubeObject } from '../kube/client.ts';
import { ZONE_LABEL } from './render/names.ts';

interface Taint {
  key: string;
  value?: string;
  effect: string;
}
interface NodeShape extends KubeObject {
  spec?: { taints?: Taint[]; unschedulable?: boolean };
  status?: { conditions?: { type: string; status: string }[] };
}

export interface Candidate {
  name: string;
  zone: string;
}

function tolerates(t: Toleration, taint: Taint): boolean {
  if (t.effect && t.effect !== taint.effect) return false;
  if ((t.operator ?? 'Equal') === 'Exists') return !t.key || t.key === taint.key;
  return t.key === taint.key && (t.value ?? '') === (taint.value ?? '');
}

/** The node's labels carry every key=value of the selector (an empty selector matches every node). */
export function matchesSelector(node: KubeObject, selector: Record<string, string> = {}): boolean {
  return Object.entries(selector).every(([k, v]) => node.metadata.labels?.[k] === v);
}

export function isCandidate(
  node: KubeObject,
  nodeSelector: Record<string, string> = {},
  tolerations: Toleration[] = [],
): boolean {
  const n = node as NodeShape;
  if (!matchesSelector(n, nodeSelector)) return false;
  if (n.spec?.unschedulable) return false;
  if (n.status?.conditions?.find((c) => c.type === 'Ready')?.status !== 'True') return false;
  // Our own readiness taint (taint.ts) is no reason not to run the proxy: the fleet tolerates it.
  return (n.spec?.taints ?? []).every(
    (taint) =>
      taint.effect === 'PreferNoSchedule' ||
      taint.key === INTERCEPTION_TAINT ||
      tolerations.some((t) => tolerates(t, taint)),
  );
}

export function candidates(
  nodes: KubeObject[],
  nodeSelector?: Record<string, string>,
  tolerations?: Toleration[],
): Candidate[] {
  return nodes
    .filter((n) => isCandidate(n, nodeSelector, tolerations))
    .map((n) => ({ name: n.metadata.name, zone: n.metadata.labels?.[ZONE_LABEL] ?? '' }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

export interface Selection {
  active: string[];
  added: string[];
  removed: string[];
}

/**
 * Chooses `desired` active nodes among `cands`, given the currently active set (which may hold
 * nodes that are no longer candidates: they are removed first; `lostZoneOf` tells their zone).
 */
export function selectActive(
  cands: Candidate[],
  current: ReadonlySet<string>,
  desired: number,
  lostZoneOf: (node: string) => string | undefined = () => undefined,
): Selection {
  const byName = new Map(cands.map((c) => [c.name, c]));
  const kept = cands.filter((c) => current.has(c.name));
  const perZone = new Map<string, number>();
  for (const c of kept) perZone.set(c.zone, (perZone.get(c.zone) ?? 0) + 1);
  const active = new Set(kept.map((c) => c.name));
  // Shrink: drop from the fullest zone; within a zone the last name goes first.
  while (active.size > desired) {
    const zone = [...perZone.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0]![0];
    const victim = [...active]
      .filter((n) => byName.get(n)!.zone === zone)
      .sort()
      .pop()!;
    active.delete(victim);
    perZone.set(zone, perZone.get(zone)! - 1);
  }
  // Grow: add to the emptiest zone that still has a spare candidate; first name first.
  // Among equally filled zones, prefer one that just lost an active node (it was chosen for a
  // reason, e.g. capacity or locality): a replacement stays in the failed node's zone.
  const lostZones = new Set(
    [...current]
      .filter((n) => !byName.has(n))
      .map((n) => lostZoneOf(n))
      .filter((z) => z !== undefined),
  );
  const spare = cands.filter((c) => !active.has(c.name));
  while (active.size < desired && spare.length > 0) {
    const zones = [...new Set(spare.map((c) => c.zone))];
    const lost = (z: string) => (lostZones.has(z) ? 0 : 1);
    zones.sort((a, b) => (perZone.get(a) ?? 0) - (perZone.get(b) ?? 0) || lost(a) - lost(b) || a.localeCompare(b));
    const idx = spare.findIndex((c) => c.zone === zones[0]);
    const pick = spare.splice(idx, 1)[0]!;
    active.add(pick.name);
    perZone.set(pick.zone, (perZone.get(pick.zone) ?? 0) + 1);
  }
  const list = [...active].sort();
  return {
    active: list,
    added: list.filter((n) => !current.has(n)),
    removed: [...current].filter((n) => !active.has(n)).sort(),
  };
}
