// The tuning engine's programmatic API, for the node agent:
//   const facts = readNodeFacts('/', tuning.affinity.interfaces);   // I/O
//   const plan = planTuning(tuning, facts);                           // pure
//   const report = applyTuning(plan, { stateDir, dryRun });           // snapshot, write, verify
//   checkDrift({ stateDir })  periodically -> Degraded condition naming the keys
//   restoreTuning({ stateDir }) when tuning is removed or the node stops being active
// Each report is plain data; summarize() turns it into condition-sized text for the status.
import type { Tuning } from '../../api/tuning.ts';
import { tuningCondition, type TuningCondition, type TuningReason } from '../../api/tuning-condition.ts';
import { canonicalSysctl } from '../../api/tuning-sysctls.ts';
import { affinityWrites, planAffinity, type AffinityPlan } from '../../host/affinity.ts';
import type { NodeFacts } from '../../host/facts.ts';
import {
  applyWrites,
  checkOwnedDrift,
  restoreAll,
  type ApplyReport,
  type DriftReport,
  type EngineOptions,
  type RestoreReport,
  type Write,
} from './owned.ts';
import { profileEntries } from '../../api/tuning-profiles.ts';

export { readNodeFacts, type NodeFacts } from '../../host/facts.ts';
export type { AffinityPlan } from '../../host/affinity.ts';
export type { ApplyReport, DriftReport, RestoreReport, Write } from './owned.ts';
export type { TuningCondition } from '../../api/tuning-condition.ts';

export interface PlannedSysctl {
  key: string;
  value: string;
  atLeast: boolean;
  source: string;
}

export interface TuningPlan {
  sysctls: PlannedSysctl[];
  affinity: AffinityPlan;
  /** Every kernel write, in order (sysctls first). */
  writes: Write[];
}

import { sysctlPath } from './record.ts';

export { sysctlPath };

/** Profile entries, then overrides (exact, winning). Re-validates values: the agent trusts no caller. */
export function planSysctls(s: Tuning['sysctls']): PlannedSysctl[] {
  const byKey = new Map<string, PlannedSysctl>();
  for (const e of profileEntries(s.profile))
    byKey.set(e.key, { key: e.key, value: e.value, atLeast: e.atLeast, source: `profile:${s.profile}` });
  for (const [key, v] of Object.entries(s.overrides)) {
    const r = canonicalSysctl(key, v);
    if ('error' in r) throw new Error(`tuning.sysctls.overrides.${key}: ${r.error}`);
    byKey.set(key, { key, value: r.text, atLeast: false, source: 'override' });
  }
  return [...byKey.values()];
}

export function planTuning(t: Tuning, facts: NodeFacts): TuningPlan {
  const sysctls = planSysctls(t.sysctls);
  const affinity = planAffinity(t.affinity, facts);
  const writes: Write[] = [
    ...sysctls.map(
      (s): Write => ({
        key: s.key,
        path: sysctlPath(s.key),
        value: s.value,
        compare: 'words',
        atLeast: s.atLeast,
        group: 'sysctl',
      }),
    ),
    ...affinityWrites(affinity, facts),
  ];
  return { sysctls, affinity, writes };
}

/** Applies the whole plan: values owned before but no longer planned are restored. */
export function applyTuning(plan: TuningPlan, o: EngineOptions): ApplyReport {
  return applyWrites(plan.writes, o);
}

export function restoreTuning(o: EngineOptions): RestoreReport {
  return restoreAll(o);
}

export function checkDrift(o: EngineOptions): DriftReport {
  return checkOwnedDrift(o);
}

const keys = (xs: { key: string }[] | string[]): string =>
  xs.map((x) => (typeof x === 'string' ? x : x.key)).join(', ');

/**
 * The tuning condition an apply leads to (api/tuning-condition.ts): the reason names the worst of
 * drift, refused writes, an irqbalance conflict, missing keys or devices; the message the keys.
 */
export function applyCondition(plan: TuningPlan, apply: ApplyReport, drift?: DriftReport): TuningCondition {
  const parts: string[] = [];
  const drifted = [...apply.drift, ...(drift?.drift ?? [])];
  if (drifted.length)
    parts.push(`drifted: ${drifted.map((d) => `${d.key} want ${d.want} got ${d.got ?? '(gone)'}`).join('; ')}`);
  if (apply.failed.length) parts.push(`refused: ${apply.failed.map((f) => `${f.key} (${f.error})`).join('; ')}`);
  if (apply.missing.length) parts.push(`missing on this kernel: ${keys(apply.missing)}`);
  if (plan.affinity.irqbalance.conflict) parts.push(plan.affinity.irqbalance.conflict);
  if (plan.affinity.problems.length) parts.push(...plan.affinity.problems);
  const reason: TuningReason = drifted.length
    ? 'TuningDrift'
    : apply.failed.length
      ? 'TuningRefused'
      : plan.affinity.irqbalance.conflict
        ? 'IrqbalanceConflict'
        : apply.missing.length || plan.affinity.problems.length
          ? 'TuningPartial'
          : 'Applied';
  return reason === 'Applied'
    ? tuningCondition(reason, `applied ${apply.changed.length + apply.unchanged.length + apply.adjusted.length} values`)
    : tuningCondition(reason, parts.join('. ').slice(0, 4000));
}
