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
import type { NodeConfigReport } from '../api/reload.ts';
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
  /** Per node, the config hash its agent enforces (operator/pods.ts). */
  configs?: ReadonlyMap<string, NodeConfigReport>;
  /** Per node, the traffic its agent reported (operator/pods.ts). */
  traffic?: ReadonlyMap<string, NodeTraffic>;
  daemonSet?: { generation?: number; status?: DaemonSetStatus };
  /** Deletion: nodes still holding rules; timedOut past --cleanup-timeout (never a release). */
  cleanup?: { pending: number; total: number; nodes?: readonly string[]; timedOut?: string };
  /** A newer object still runs on some of this one's nodes (conflicts.ts sharedWithNewer). */
  sharedNodes?: string;
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
  const config = configProgress(nodes, i.configHash);
  const readyReplicas = nodes.filter((n) => n.ready).length;
  const replicas = nodes.length;
  const draining = (i.draining ?? []).filter((d) => !active.some((c) => c.name === d));
  nodes.push(...draining.map((name): NodeSummary => ({ name, state: 'Draining', ready: false })));
  const conditions: Cond[] = i.cleanup
    ? cleanupConditions(i.cleanup)
    : fleetConditions(i, { replicas, readyReplicas, draining, tuning, config });
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
      k = i.configs?.get(c.name),
      tr = i.traffic?.get(c.name);
    // A refusal of an older config is history once the node reports on the current one.
    const refused = k?.refused && k.refused.hash === i.configHash ? k.refused.message : undefined;
    return {
      name: c.name,
      ...(c.zone ? { zone: c.zone } : {}),
      state: 'Active',
      ready: ready.has(c.name),
      ...(t ? { tuning: t } : {}),
      ...(d ? { policy: d } : {}),
      ...(k ? { configHash: k.hash } : {}),
      ...(refused ? { configRefused: refused } : {}),
      ...(tr ? { traffic: tr } : {}),
    };
  });
}

/** The longest node list a condition message names before it says "and N more". */
const NAMED_NODES = 20;
export function nodeList(nodes: readonly string[]): string {
  const shown = nodes.slice(0, NAMED_NODES).join(', ');
  return nodes.length > NAMED_NODES ? `${shown} and ${nodes.length - NAMED_NODES} more` : shown;
}

function cleanupConditions(c: NonNullable<StatusInput['cleanup']>): Cond[] {
  const named = c.nodes?.length ? ` (${nodeList(c.nodes)})` : '';
  return [
    cond('Ready', false, 'Deleting'),
    cond('Progressing', true, 'CleaningUp', `${c.pending} of ${c.total} nodes still removing their rules${named}`),
    // Past the timeout the finalizer stays (a node with rules and no agent black-holes traffic):
    // the object says which nodes hold it and what a person can do.
    c.timedOut
      ? cond(
          'Degraded',
          true,
          'CleanupTimedOut',
          `still waiting after ${c.timedOut} for nodes to remove their rules${named}; the finalizer stays until they do or the nodes are deleted`,
        )
      : cond('Degraded', false, 'Deleting'),
  ];
}

interface FleetState {
  replicas: number;
  readyReplicas: number;
  draining: string[];
  tuning: { reason: string; message: string } | undefined;
  config: ConfigProgress;
}

interface ConfigProgress {
  /** Ready active nodes not yet enforcing the current hash (and not refusing it). */
  behind: string[];
  /** Active nodes that refused the current hash, with the agent's message. */
  refused: { name: string; message: string }[];
}

/**
 * Which active nodes enforce the current config. Only nodes whose pod is Ready count as behind: a
 * pod that is starting is the rollout's (Progressing RollingOut), and one whose agent predates
 * reporting never reports (it is then as rolled out as the DaemonSet says).
 */
export function configProgress(nodes: NodeSummary[], hash: string | undefined): ConfigProgress {
  if (!hash) return { behind: [], refused: [] };
  const refused = nodes.filter((n) => n.configRefused).map((n) => ({ name: n.name, message: n.configRefused! }));
  const behind = nodes
    .filter((n) => n.ready && n.configHash !== undefined && n.configHash !== hash && !n.configRefused)
    .map((n) => n.name);
  return { behind, refused };
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
      : f.config.behind.length
        ? cond(
            'Progressing',
            true,
            'Reloading',
            `${f.config.behind.length} node(s) not yet enforcing config ${i.configHash}: ${f.config.behind.join(', ').slice(0, 900)}`,
          )
        : cond('Progressing', false, 'RolloutComplete');
  const short = i.requested !== undefined && (i.candidates ?? 0) < i.requested;
  const degraded = i.sharedNodes
    ? cond('Degraded', true, 'NodesShared', i.sharedNodes)
    : short
      ? cond('Degraded', true, 'InsufficientNodes', `${i.candidates ?? 0} candidate nodes for ${i.requested} requested`)
      : rolledOut && f.readyReplicas < f.replicas
        ? cond('Degraded', true, 'NodesNotReady', `${f.replicas - f.readyReplicas} active nodes not ready`)
        : f.config.refused.length
          ? cond('Degraded', true, 'ConfigRefused', refusedMessage(f.config.refused))
          : f.tuning
            ? cond('Degraded', true, f.tuning.reason, f.tuning.message)
            : cond('Degraded', false, 'AsExpected');
  return [ready, progressing, degraded];
}

const refusedMessage = (r: ConfigProgress['refused']) => {
  const m = `config refused on ${r.length} node${r.length > 1 ? 's' : ''} (they keep their last good config): ${r.map((x) => `${x.name}: ${x.message}`).join(' | ')}`;
  return m.length <= 4000 ? m : `${m.slice(0, 3999)}…`;
};

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
