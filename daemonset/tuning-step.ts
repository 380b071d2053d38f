// The agent's tuning step: the same NodeConfig that drives the rules carries `tuning`; apply plans it
// from this node's facts and applies it through the engine in daemonset/tuning (snapshot, write,
// verify), and leaves its report in the state dir for `watch` (tuning-report.ts, tuning-publish.ts),
// cleanup restores the originals. An empty section still runs: values owned by an earlier apply are
// then restored (removing tuning from the spec undoes it).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DATA_PATH_SYSCTLS } from './tuning/record.ts';
import type { Logger } from 'pino';
import type { NodeConfig } from '../api/nodeconfig.ts';
import {
  applyTuning,
  planTuning,
  readNodeFacts,
  restoreTuning,
  sysctlPath,
  type TuningCondition,
  type Write,
} from './tuning/index.ts';
import { buildReport, removeReport, summaryLine, writeReport } from './tuning-report.ts';

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
  const key = DATA_PATH_SYSCTLS[0]; // net.ipv4.tcp_early_demux
  return [{ key, path: sysctlPath(key), value: '0', compare: 'words', group: 'sysctl' }];
}

export interface TuningStepOptions {
  stateDir: string;
  dryRun: boolean;
  root?: string;
}

/**
 * The condition, or undefined when no tuning is configured and none was left to restore. Writes
 * <stateDir>/tuning-report.json (removed when there is nothing to report); a dry run writes nothing.
 */
export function tuneNode(config: NodeConfig, o: TuningStepOptions, log: Logger): TuningCondition | undefined {
  const t = config.tuning;
  const plan = planTuning(t, readNodeFacts(o.root ?? '/', t.affinity.interfaces));
  // The data path's own needs win over a user override of the same key.
  const required = requiredWrites(config);
  plan.writes = [...plan.writes.filter((w) => !required.some((r) => r.key === w.key)), ...required];
  const report = applyTuning(plan, { stateDir: o.stateDir, dryRun: o.dryRun });
  // Nothing planned = nothing to report on this node (watch then says NotConfigured).
  if (plan.writes.length === 0 && !o.dryRun) removeReport(o.stateDir);
  if (plan.writes.length === 0 && report.released.restored.length === 0) return undefined;
  const r = buildReport(plan, report);
  if (plan.writes.length > 0 && !o.dryRun) writeReport(o.stateDir, r);
  log.info(
    { profile: t.sysctls.profile, affinity: t.affinity.mode, summary: summaryLine(r.summary), condition: r.condition },
    'tuning applied',
  );
  return r.condition;
}

export function untuneNode(o: TuningStepOptions, log: Logger): void {
  const r = restoreTuning({ stateDir: o.stateDir, dryRun: o.dryRun });
  if (!o.dryRun) removeReport(o.stateDir);
  log.info({ report: r }, 'tuning restored');
}

/** What agent-watch may write in place: the host netns's /proc/sys/net, through a writable mount. */
export const IN_PLACE_SCOPE = '/proc/sys/net/';

/**
 * The in-place retune (ADR 0020): the net.* sysctls of `config` (and the data path's own), written
 * through the writable /proc/sys/net mount under `root` (agent-watch's /proc/sys is read-only);
 * owned net.* values the config no longer plans are restored. Host-wide keys and affinity are not
 * touched (a change of them rolls the pod, api/reload.ts). Throws naming the keys when any write is
 * refused, so the caller re-applies the last good config: a retune is never left half-way.
 */
export function retuneNode(config: NodeConfig, o: { stateDir: string; root: string }, log: Logger): void {
  if (!existsSync(join(o.root, IN_PLACE_SCOPE, 'core')))
    throw new Error(
      `tuning.sysctls: no writable /proc/sys/net at ${join(o.root, IN_PLACE_SCOPE)} (a pod from before ADR 0020): the next rollout applies it`,
    );
  const t = config.tuning;
  const plan = planTuning(t, readNodeFacts('/', t.affinity.interfaces));
  const required = requiredWrites(config);
  plan.writes = [...plan.writes.filter((w) => !required.some((r) => r.key === w.key)), ...required];
  const report = applyTuning(plan, { stateDir: o.stateDir, root: o.root, scope: IN_PLACE_SCOPE });
  const failed = [...report.failed, ...report.released.failed];
  if (failed.length > 0)
    throw new Error(
      `tuning.sysctls: the kernel refused ${failed.map((f) => `${f.key}=${f.want} (${f.error})`).join('; ')}`,
    );
  const r = buildReport(plan, report);
  if (plan.writes.length > 0) writeReport(o.stateDir, r);
  else removeReport(o.stateDir);
  log.info({ summary: summaryLine(r.summary), condition: r.condition }, 'tuning applied in place');
}
