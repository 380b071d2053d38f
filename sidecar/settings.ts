// What the sidecar needs from the NodeConfig, computed once at start-up (main.ts) from the parsed
// config, so the file is read and validated exactly once.
import { availableParallelism } from 'node:os';
import type { NodeConfig } from '../api/nodeconfig.ts';
import type { PolicyConfig } from '../api/policy.ts';
import type { LiveOptions } from './engine.ts';
import type { LogLevel } from './log.ts';
import { cpuOfSlot, type WorkerPinning } from './pinning.ts';

export interface Settings {
  /** Engine threads, each with its own listeners on the one SO_REUSEPORT port. */
  workers: number;
  listenPort: number;
  backlog: number;
  ipv4: boolean;
  ipv6: boolean;
  keepClientIp: boolean;
  /** interception.protocols lists UDP: the engine forwards UDP flows too. */
  udp: boolean;
  metricsPort: number;
  drainTimeoutMs: number;
  logLevel: LogLevel;
  /** From tuning.affinity (pinning.ts); null when it is off. */
  pinning: WorkerPinning | null;
  /** The CPU of each engine thread (pinning's round-robin rule), or null. */
  threadCpus: number[] | null;
  /** The egress policy (egress.ts); no rules and defaultAction Allow: none. */
  policy: PolicyConfig;
  /** What can change while the engine runs (engine.ts setOptions). */
  live: LiveOptions;
  /** --template: the pod template token /readyz?template= is checked against (status.ts); null when not given. */
  template: string | null;
}

/** proxy.workers 0 (auto) means one thread per planned CPU when pinning, else one per CPU. */
export function settingsFrom(
  cfg: NodeConfig,
  cpus = availableParallelism(),
  pinning: WorkerPinning | null = null,
  template: string | null = null,
): Settings {
  const p = cfg.proxy;
  const workers = p.workers !== 0 ? p.workers : pinning ? pinning.cpus.length : Math.max(1, cpus);
  return {
    workers,
    listenPort: p.listenPort,
    backlog: p.backlog,
    ipv4: cfg.interception.ipFamilies.includes('IPv4'),
    ipv6: cfg.interception.ipFamilies.includes('IPv6'),
    keepClientIp: p.keepClientIp,
    udp: cfg.interception.protocols.includes('UDP'),
    metricsPort: p.metricsPort,
    drainTimeoutMs: p.timeouts.drain,
    logLevel: p.logLevel,
    pinning,
    threadCpus: pinning ? Array.from({ length: workers }, (_, i) => cpuOfSlot(pinning, i)) : null,
    live: liveOptions(cfg),
    policy: cfg.policy,
    template,
  };
}

/** The engine options a config implies (also what a reload would apply). */
export function liveOptions(cfg: NodeConfig): LiveOptions {
  const p = cfg.proxy;
  return {
    connectTimeoutMs: p.timeouts.connect,
    idleTimeoutMs: p.timeouts.idle,
    holdTimeoutMs: 1000,
    // One budget for the whole sidecar: the engine's threads share one counter.
    maxConnections: p.maxConnections,
    hook: false,
    peek: false,
    logConnections: p.logLevel === 'debug' || p.logLevel === 'trace',
    splice: true,
    audit: cfg.policy.audit.enabled,
    auditPerSecond: cfg.policy.audit.maxLinesPerSecond,
    udpIdleTimeoutMs: p.udp.idleTimeout,
    udpMaxFlows: p.udp.maxFlows,
  };
}
