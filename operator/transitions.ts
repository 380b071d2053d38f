// Which Events a status change deserves: the transitions a user of `kubectl describe` cares about,
// computed from the stored status (the operator's only memory) and the one just written. Pure. A
// reconcile that changes nothing a user sees yields nothing, so requeues, resyncs and operator
// restarts repeat no Event. One Event per kind of transition per reconcile, naming its nodes (a
// bounded list), not one per node: activating 500 nodes is one Event, not 500.
import type { NodeSummary, TransparentProxyStatus } from '../api/transparentproxy-status.ts';

export interface EventSpec {
  type: 'Normal' | 'Warning';
  /** CamelCase, from a closed set (also the aggregation key with the note). */
  reason: EventReason;
  /** What the operator did, CamelCase (events.k8s.io/v1 `action`). */
  action: string;
  note: string;
  /** The node concerned when exactly one is (events.k8s.io/v1 `related`). */
  node?: string;
}

export const EVENT_REASONS = [
  'NodeActivated',
  'NodeDraining',
  'NodeRestored',
  'Scaled',
  'Degraded',
  'InvalidSpec',
  'Conflict',
] as const;
export type EventReason = (typeof EVENT_REASONS)[number];

const SHOWN = 10;
/** "a, b, c" or "a, b, ... and 7 more": notes stay far below the API's 1 kB. */
export function nodeList(nodes: readonly string[]): string {
  const head = nodes
    .slice(0, SHOWN)
    .map((n) => n.slice(0, 63))
    .join(', ');
  return nodes.length > SHOWN ? `${head} and ${nodes.length - SHOWN} more` : head;
}

const byState = (s: TransparentProxyStatus | undefined, state: NodeSummary['state']) =>
  new Set((s?.nodes ?? []).filter((n) => n.state === state).map((n) => n.name));

function nodesEvent(reason: EventReason, action: string, nodes: string[], what: (list: string) => string): EventSpec[] {
  if (nodes.length === 0) return [];
  nodes.sort();
  return [
    { type: 'Normal', reason, action, note: what(nodeList(nodes)), ...(nodes.length === 1 ? { node: nodes[0] } : {}) },
  ];
}

/** Node and scale transitions between two statuses of a running fleet. */
export function fleetTransitions(
  prev: TransparentProxyStatus | undefined,
  next: TransparentProxyStatus,
  requested: number | undefined,
): EventSpec[] {
  const [wasActive, wasDraining] = [byState(prev, 'Active'), byState(prev, 'Draining')];
  const [active, draining] = [byState(next, 'Active'), byState(next, 'Draining')];
  const out = [
    ...nodesEvent(
      'NodeActivated',
      'Activate',
      [...active].filter((n) => !wasActive.has(n)),
      (l) => `node(s) ${l} intercept now (active)`,
    ),
    ...nodesEvent(
      'NodeDraining',
      'Drain',
      [...draining].filter((n) => !wasDraining.has(n)),
      (l) => `node(s) ${l} leave the active set: draining, then restoring rules, routes and tuning`,
    ),
    ...nodesEvent(
      'NodeRestored',
      'Restore',
      [...wasDraining].filter((n) => !draining.has(n) && !active.has(n)),
      (l) => `node(s) ${l} left: rules, routes and tuning restored, active label removed`,
    ),
  ];
  const [before, after] = [prev?.replicas, next.replicas ?? 0];
  if (before !== undefined && before !== after) {
    const want = requested === undefined ? 'every candidate' : `spec.replicas ${requested}`;
    out.push({
      type: 'Normal',
      reason: 'Scaled',
      action: 'Scale',
      note: `active nodes ${before} -> ${after} (${want})`,
    });
  }
  out.push(...degraded(prev, next));
  return out;
}

/**
 * Degraded turning True, or True with another reason. Not for NodesNotReady: a node that was just
 * activated is not ready until its proxy pod starts, which is not a degradation (the pod's own
 * Events say why it does not start); what is, is an active node losing readiness, named here.
 * InvalidSpec has its own Event.
 */
function degraded(prev: TransparentProxyStatus | undefined, next: TransparentProxyStatus): EventSpec[] {
  const wasReady = new Set((prev?.nodes ?? []).filter((n) => n.state === 'Active' && n.ready).map((n) => n.name));
  const lost = (next.nodes ?? []).filter((n) => n.state === 'Active' && !n.ready && wasReady.has(n.name));
  const out: EventSpec[] = [];
  if (lost.length)
    out.push({
      type: 'Warning',
      reason: 'Degraded',
      action: 'Observe',
      note: `NodesNotReady: node(s) ${nodeList(lost.map((n) => n.name).sort())} lost readiness (their proxy pod is not Ready)`,
      ...(lost.length === 1 ? { node: lost[0]!.name } : {}),
    });
  const find = (s: TransparentProxyStatus | undefined) => s?.conditions?.find((c) => c.type === 'Degraded');
  const [was, now] = [find(prev), find(next)];
  if (now?.status !== 'True' || now.reason === 'InvalidSpec' || now.reason === 'NodesNotReady') return out;
  if (was?.status === 'True' && was.reason === now.reason) return out;
  out.push({
    type: 'Warning',
    reason: 'Degraded',
    action: 'Observe',
    note: `${now.reason}: ${now.message ?? ''}`.slice(0, 1000),
  });
  return out;
}

/** A refused spec (the field named in the message) or a conflict, when new or changed. */
export function refusalTransition(
  prev: TransparentProxyStatus | undefined,
  message: string,
  conflict: boolean,
): EventSpec[] {
  const before = prev?.conditions?.find((c) => c.type === 'InvalidSpec');
  if (before?.status === 'True' && before.message === message) return [];
  return [
    {
      type: 'Warning',
      reason: conflict ? 'Conflict' : 'InvalidSpec',
      action: 'Refuse',
      note: message.slice(0, 1000),
    },
  ];
}
