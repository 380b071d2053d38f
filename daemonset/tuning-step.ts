// The agent's tuning step: the same NodeConfig that drives the rules carries `tuning`; apply plans it
// from this node's facts and applies it through the engine in daemonset/tuning (snapshot, write,
// verify), cleanup restores the originals, the watchdog reports drift. An empty section still runs:
// values owned by an earlier apply are then restored (removing tuning from the spec undoes it).
import type { Logger } from 'pino';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { applyTuning, checkDrift, planTuning, readNodeFacts, restoreTuning, sysctlPath, tuningCondition, type TuningCondition, type Write } from './tuning/index.ts';

/**
 * Kernel settings the data path itself needs, owned like user tuning (snapshot, verify, exact
 * restore at cleanup, drift reported).
 *
 * tcp_early_demux=0 with keepClientIp + FailOpen: the proxy's upstream sockets are bound to client
 * addresses, and after they close they sit in TIME_WAIT with those 4-tuples. When the proxy is down
 * and traffic goes direct, a new client connection can reuse such a 4-tuple; the kernel's early
 * demux (after PREROUTING, before routing) then attaches the TIME_WAIT socket to the server's
 * SYN-ACK and ip_forward() drops every forwarded packet that carries a socket: the client's connect
 * times out. No rule can prevent it. Measured: e2e direct connections failed in 2 of 5 runs after a
 * 1,000-connection test, in 0 of 5 with early demux off. The sysctl covers IPv4 and IPv6.
 */
export function requiredWrites(config: NodeConfig): Write[] {
  if (!config.proxy.keepClientIp || config.interception.failurePolicy !== 'FailOpen') return [];
  const key = 'net.ipv4.tcp_early_demux';
  return [{ key, path: sysctlPath(key), value: '0', compare: 'words', group: 'sysctl' }];
}

export interface TuningStepOptions { stateDir: string; dryRun: boolean; root?: string }

/** The condition, or undefined when no tuning is configured and none was left to restore. */
export function tuneNode(config: NodeConfig, o: TuningStepOptions, log: Logger): TuningCondition | undefined {
  const t = config.tuning;
  const plan = planTuning(t, readNodeFacts(o.root ?? '/', t.affinity.interfaces));
  // The data path's own needs win over a user override of the same key.
  const required = requiredWrites(config);
  plan.writes = [...plan.writes.filter((w) => !required.some((r) => r.key === w.key)), ...required];
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
