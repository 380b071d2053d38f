// The agent's tuning step: the same NodeConfig that drives the rules carries `tuning`; apply plans it
// from this node's facts and applies it through the engine in daemonset/tuning (snapshot, write,
// verify), cleanup restores the originals, the watchdog reports drift. An empty section still runs:
// values owned by an earlier apply are then restored (removing tuning from the spec undoes it).
import type { Logger } from 'pino';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { applyTuning, checkDrift, planTuning, readNodeFacts, restoreTuning, tuningCondition, type TuningCondition } from './tuning/index.ts';

export interface TuningStepOptions { stateDir: string; dryRun: boolean; root?: string }

/** The condition, or undefined when no tuning is configured and none was left to restore. */
export function tuneNode(config: NodeConfig, o: TuningStepOptions, log: Logger): TuningCondition | undefined {
  const t = config.tuning;
  const plan = planTuning(t, readNodeFacts(o.root ?? '/', t.affinity.interfaces));
  const report = applyTuning(plan, { stateDir: o.stateDir, dryRun: o.dryRun });
  if (plan.writes.length === 0 && report.released.restored.length === 0) return undefined;
  const condition = tuningCondition(plan, report);
  log.info({ profile: t.sysctls.profile, affinity: t.affinity.mode, changed: report.changed.length, restored: report.released.restored.length, condition }, 'tuning applied');
  return condition;
}

export function untuneNode(o: TuningStepOptions, log: Logger): void {
  const r = restoreTuning({ stateDir: o.stateDir, dryRun: o.dryRun });
  log.info({ report: r }, 'tuning restored');
}

/** Drift of values we own, as a log line the operator's status surfaces; never rewritten here. */
export function reportDrift(stateDir: string, log: Logger): number {
  const d = checkDrift({ stateDir });
  if (d.drift.length > 0) log.warn({ drift: d.drift }, 'tuning drift: a value we set was changed by someone else');
  return d.drift.length;
}
