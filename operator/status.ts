// status of a TransparentProxy from what the operator observed. Pure; lastTransitionTime only
// moves when a condition's status changes, so recomputing an unchanged state yields an equal
// object and the operator writes nothing (no hot loop).
import type {
  Condition,
  ConditionType,
  NodeSummary,
  NodeTuning,
  PolicyStatus,
  TransparentProxyStatus,
} from '../api/transparentproxy-status.ts';
import type { DecisionTotals } from '../api/policy-condition.ts';
import type { NodeTraffic } from '../api/traffic-condition.ts';
import { DEGRADING_TUNING } from '../api/tuning-condition.ts';
import type { Candidate } from './scheduling.ts';

export interface DaemonSetStatus {
  observedGeneration?: number;
  desiredNumberScheduled?: number;
  updatedNumberScheduled?: number;
  numberReady?: number;
  numberAvailable?: number;
}

export interface StatusInput {
  generation: number;
  prev?: TransparentProxyStatus;
  now: string;
  selector: string;
  /** Problems when the spec was rejected; the rest of the input but policy is then ignored. */
  invalid?: string[];
  /** status.policy (operator/policy-status.ts); undefined removes it. */
  policy?: PolicyStatus;
  configHash?: string;
  active?: Candidate[];
  /** Nodes leaving the active set whose restore has not finished (operator/nodes.ts). */
  draining?: readonly string[];
  candidates?: number;
  requested?: number;
  readyNodes?: ReadonlySet<string>;
  /** Per node, the tuning its agent reported (operator/pods.ts). */
  tuning?: ReadonlyMap<string, NodeTuning>;
  /** Per node, the policy decision totals its agent reported (operator/pods.ts). */
  decisions?: ReadonlyMap<string, DecisionTotals>;
  /** Per node, the traffic its agent reported (operator/pods.ts). */
  traffic?: ReadonlyMap<string, NodeTraffic>;
  daemonSet?: { generation?: number; status?: DaemonSetStatus };
  cleanup?: { pending: number; total: number };
}

type Cond = Pick<Condition, 'type' | 'status' | 'reason'> & { message?: string };

function withTimes(next: Cond[], prev: Condition[] | undefined, now: string, generation: number): Condition[] {
  return next.map((c) => {
    const old = prev?.find((p) => p.type === c.type);
    const lastTransitionTime = old && old.status === c.status ? old.lastTransitionTime : now;
    return {
      type: c.type,
      status: c.status,
      reason: c.reason,
      ...(c.message ? { message: c.message } : {}),
      lastTransitionTime,
      observedGeneration: generation,
    };
  });
}

const cond = (type: ConditionType, ok: boolean, reason: string, message?: string): Cond => ({
  type,
  status: ok ? 'True' : 'False',
  reason,
  message,
});

export function rolloutComplete(ds: StatusInput['daemonSet']): boolean {
  const s = ds?.status;
  if (!s || s.observedGeneration === undefined || s.observedGeneration < (ds?.generation ?? 0)) return false;
  return (s.updatedNumberScheduled ?? 0) >= (s.desiredNumberScheduled ?? 0);
}

export function computeStatus(i: StatusInput): TransparentProxyStatus {
  const base = { ...i.prev, observedGeneration: i.generation, selector: i.selector };
  const times = (c: Cond[]) => withTimes(c, i.prev?.conditions, i.now, i.generation);
  if (i.invalid) return { ...base, policy: i.policy, conditions: times(invalidConditions(i.invalid)) };
  const active = i.active ?? [];
  const nodes = activeNodes(i, active);
  const tuning = tuningProblem(nodes);
  const readyReplicas = nodes.filter((n) => n.ready).length;
  const replicas = nodes.length;
  const draining = (i.draining ?? []).filter((d) => !active.some((c) => c.name === d));
  nodes.push(...draining.map((name): NodeSummary => ({ name, state: 'Draining', ready: false })));
  const conditions: Cond[] = i.cleanup
    ? cleanupConditions(i.cleanup)
    : fleetConditions(i, { replicas, readyReplicas, draining, tuning });
  conditions.push(cond('InvalidSpec', false, 'SpecValid'));
  return {
    ...base,
    replicas,
    readyReplicas,
    candidates: i.candidates ?? 0,
    nodes,
    ...(i.configHash ? { configHash: i.configHash } : {}),
    policy: i.policy,
    conditions: times(conditions),
  };
}

/** The InvalidSpec condition's message for these problems. */
export const invalidMessage = (problems: readonly string[]) => problems.join('; ').slice(0, 4000);

function invalidConditions(problems: string[]): Cond[] {
  const message = invalidMessage(problems);
  return [
    cond('Ready', false, 'InvalidSpec', 'the spec was rejected; the fleet keeps its last valid configuration'),
    cond('Progressing', false, 'InvalidSpec'),
    cond('Degraded', true, 'InvalidSpec', message),
    cond('InvalidSpec', true, 'SpecRejected', message),
  ];
}

function activeNodes(i: StatusInput, active: Candidate[]): NodeSummary[] {
  const ready = i.readyNodes ?? new Set<string>();
  return active.map((c) => {
    const t = i.tuning?.get(c.name),
      d = i.decisions?.get(c.name),
      tr = i.traffic?.get(c.name);
    return {
      name: c.name,
      ...(c.zone ? { zone: c.zone } : {}),
      state: 'Active',
      ready: ready.has(c.name),
      ...(t ? { tuning: t } : {}),
      ...(d ? { policy: d } : {}),
      ...(tr ? { traffic: tr } : {}),
    };
  });
}

function cleanupConditions(c: NonNullable<StatusInput['cleanup']>): Cond[] {
  return [
    cond('Ready', false, 'Deleting'),
    cond('Progressing', true, 'CleaningUp', `${c.pending} of ${c.total} nodes still removing their rules`),
    cond('Degraded', false, 'Deleting'),
  ];
}

interface FleetState {
  replicas: number;
  readyReplicas: number;
  draining: string[];
  tuning: { reason: string; message: string } | undefined;
}

/** Ready, Progressing and Degraded of a running fleet; Degraded names the worst problem first. */
function fleetConditions(i: StatusInput, f: FleetState): Cond[] {
  const rolledOut = rolloutComplete(i.daemonSet);
  const counts = `${f.readyReplicas} of ${f.replicas} active nodes ready`;
  const ready =
    rolledOut && f.readyReplicas === f.replicas
      ? cond('Ready', true, f.replicas === 0 ? 'NoActiveNodes' : 'AllNodesReady', counts)
      : cond('Ready', false, rolledOut ? 'NodesNotReady' : 'RollingOut', counts);
  const progressing = !rolledOut
    ? cond('Progressing', true, 'RollingOut', 'the DaemonSet is rolling out the current configuration')
    : f.draining.length
      ? cond(
          'Progressing',
          true,
          'NodesLeaving',
          `${f.draining.length} node(s) draining, then restoring their rules, routes and tuning: ${f.draining.join(', ').slice(0, 900)}`,
        )
      : cond('Progressing', false, 'RolloutComplete');
  const short = i.requested !== undefined && (i.candidates ?? 0) < i.requested;
  const degraded = short
    ? cond('Degraded', true, 'InsufficientNodes', `${i.candidates ?? 0} candidate nodes for ${i.requested} requested`)
    : rolledOut && f.readyReplicas < f.replicas
      ? cond('Degraded', true, 'NodesNotReady', `${f.replicas - f.readyReplicas} active nodes not ready`)
      : f.tuning
        ? cond('Degraded', true, f.tuning.reason, f.tuning.message)
        : cond('Degraded', false, 'AsExpected');
  return [ready, progressing, degraded];
}

/** Degraded's reason and message when an active node reports a degrading tuning problem. */
export function tuningProblem(nodes: NodeSummary[]): { reason: string; message: string } | undefined {
  const bad = nodes.filter((n) => n.tuning && (DEGRADING_TUNING as readonly string[]).includes(n.tuning.reason));
  if (bad.length === 0) return undefined;
  const rank = (r: string) => (DEGRADING_TUNING as readonly string[]).indexOf(r);
  const reason = bad.map((n) => n.tuning!.reason).sort((a, b) => rank(a) - rank(b))[0]!;
  const message = `tuning on ${bad.length} node${bad.length > 1 ? 's' : ''}: ${bad.map((n) => `${n.name}: ${n.tuning!.reason}: ${n.tuning!.message}`).join(' | ')}`;
  return { reason, message: message.length <= 4000 ? message : `${message.slice(0, 3999)}…` };
}

/** Deterministic JSON (sorted keys) for change detection. */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
