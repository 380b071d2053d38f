// The tuning report: what `tpfleet-agent apply` did to this node's kernel values, kept in the state
// dir (<state-dir>/tuning-report.json) so the long-running `watch` container can publish it, and
// the pure formatting of the Pod condition the operator reads into the TransparentProxy's status.
//
// Invariants: drift is never taken from the report (it would go stale): apply stores its condition
// computed WITHOUT drift (`base`), and watch adds the drift it measures live with checkDrift(), so a
// value someone changed and someone else put back clears by itself. Messages are bounded
// (MESSAGE_MAX) so the pod condition and the operator's status stay small.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tuningCondition, type TuningCondition, type TuningReason } from '../api/tuning-condition.ts';
import { applyCondition, type ApplyReport, type DriftReport, type TuningPlan } from './tuning/index.ts';

export const REPORT_FILE = 'tuning-report.json';
/** Longest message the agent publishes; the status schema allows a little more (api/tuning-condition.ts). */
export const MESSAGE_MAX = 1000;

export interface TuningSummary {
  /** Keys written (their value changed). */
  changed: string[];
  /** Keys the kernel rounded or clamped. */
  adjusted: string[];
  /** Keys this kernel/device lacks. */
  missing: string[];
  /** Keys whose write the kernel refused. */
  refused: string[];
  /** Keys already at the wanted value. */
  unchanged: number;
  /** Owned values no longer planned, restored. */
  restored: number;
}

export interface TuningReport {
  version: 1;
  /** The condition as `apply` printed it (drift found at apply time included). */
  condition: TuningCondition;
  /** The same without drift: watch combines it with the drift it measures live. */
  base: TuningCondition;
  summary: TuningSummary;
}

export const bounded = (text: string, max = MESSAGE_MAX): string =>
  text.length <= max ? text : `${text.slice(0, max - 1)}…`;

export function summarize(apply: ApplyReport): TuningSummary {
  return {
    changed: apply.changed.map((c) => c.key),
    adjusted: apply.adjusted.map((a) => a.key),
    missing: [...apply.missing],
    refused: apply.failed.map((f) => f.key),
    unchanged: apply.unchanged.length,
    restored: apply.released.restored.length,
  };
}

export function buildReport(plan: TuningPlan, apply: ApplyReport): TuningReport {
  return {
    version: 1,
    condition: applyCondition(plan, apply),
    base: applyCondition(plan, { ...apply, drift: [] }),
    summary: summarize(apply),
  };
}

/** One line for logs and the apply output: counts, then the keys that did not simply apply. */
export function summaryLine(s: TuningSummary): string {
  const list = (name: string, keys: string[]) => (keys.length ? [`${name}: ${keys.join(', ')}`] : []);
  return [
    `${s.changed.length} changed, ${s.unchanged} unchanged, ${s.adjusted.length} adjusted, ${s.missing.length} missing, ${s.refused.length} refused, ${s.restored} restored`,
    ...list('adjusted', s.adjusted),
    ...list('missing', s.missing),
    ...list('refused', s.refused),
  ].join('; ');
}

/**
 * The Pod condition from the stored report and a live drift check. No report = no tuning
 * configured (apply removes the file then). Drift wins over every other reason: it is the one a
 * person has to act on (someone else is changing our values).
 */
export function podCondition(report: TuningReport | undefined, drift: DriftReport): TuningCondition {
  const make = (reason: TuningReason, message: string) => tuningCondition(reason, bounded(message));
  if (drift.drift.length > 0) {
    const d = `drifted: ${drift.drift.map((x) => `${x.key} want ${x.want} got ${x.got ?? '(gone)'}`).join('; ')}`;
    return make('TuningDrift', report && report.base.reason !== 'Applied' ? `${d}. ${report.base.message}` : d);
  }
  if (!report) return make('NotConfigured', 'no tuning configured');
  const s = report.summary;
  const n = s.changed.length + s.unchanged + s.adjusted.length;
  const counts = `${n} value${n === 1 ? '' : 's'} applied`;
  return make(report.base.reason, report.base.reason === 'Applied' ? counts : `${report.base.message} (${counts})`);
}

export function writeReport(stateDir: string, report: TuningReport): void {
  const path = join(stateDir, REPORT_FILE);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  // Write-then-rename: watch never reads a half-written report.
  writeFileSync(`${path}.tmp`, `${JSON.stringify(report, null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
}

export function removeReport(stateDir: string): void {
  rmSync(join(stateDir, REPORT_FILE), { force: true });
}

/** The stored report; undefined when there is none. A corrupt file is an error (named), not "none". */
export function readReport(stateDir: string): TuningReport | undefined {
  const path = join(stateDir, REPORT_FILE);
  if (!existsSync(path)) return undefined;
  const r = JSON.parse(readFileSync(path, 'utf8')) as Partial<TuningReport>;
  if (r.version !== 1 || !r.base?.reason || !r.summary)
    throw new Error(`${path}: not a tuning report (version ${String(r.version)})`);
  return r as TuningReport;
}
