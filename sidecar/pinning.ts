// Which CPUs the workers run on, when tuning.affinity is not off. The primary computes it once at
// start-up with the node agent's own pure planner (host/affinity.ts) on the same node
// facts, so the CPUs the agent keeps free of NIC interrupts are the CPUs the workers use.
// Rule: worker slot i is pinned to the single CPU workerCpus[i mod n] (workerCpus ascending).
// With proxy.workers 0 (auto) there is one worker per planned CPU, so one CPU per worker; with an
// explicit count above n, CPUs take a second worker in the same round-robin order; below n, the
// last CPUs stay unused. A restarted worker keeps its slot, hence its CPU.
import { ConfigError } from '../api/load.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { planAffinity } from '../host/affinity.ts';
import { cpuList, formatCpuList } from '../host/cpulist.ts';
import type { NodeFacts } from '../host/facts.ts';

export interface WorkerPinning {
  /** The planned worker CPUs, ascending, never empty. */
  cpus: number[];
  /** Decisions of the planner worth logging (not fatal). */
  notes: string[];
  /** Parts of the spec the node cannot honour, e.g. offline CPUs that were dropped (not fatal). */
  problems: string[];
}

/**
 * null when tuning.affinity.mode is off (workers keep the CPUs they inherit). Throws a ConfigError
 * naming tuning.affinity.workerCpus when the plan leaves no CPU (every listed CPU offline or reserved).
 */
export function planWorkerPinning(
  tuning: NodeConfig['tuning'],
  facts: NodeFacts,
  source: string,
): WorkerPinning | null {
  if (tuning.affinity.mode === 'off') return null;
  const plan = planAffinity(tuning.affinity, facts);
  const cpus = cpuList(plan.workerCpus);
  if (cpus.length === 0) {
    const why = plan.problems.length ? plan.problems.join('; ') : `online CPUs are ${formatCpuList(facts.onlineCpus)}`;
    throw new ConfigError(source, [
      `tuning.affinity.workerCpus: no CPU of this node is left to pin the sidecar's workers to (${why})`,
    ]);
  }
  return { cpus, notes: plan.notes, problems: plan.problems };
}

/** The CPU of worker slot `slot` (see the rule above). */
export const cpuOfSlot = (p: WorkerPinning, slot: number): number => p.cpus[slot % p.cpus.length]!;
