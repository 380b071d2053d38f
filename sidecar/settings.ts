// What a worker needs from the NodeConfig, computed once by the primary and handed to each worker
// (cluster.fork env), so the config file is read and validated exactly once.
import { availableParallelism } from 'node:os';
import type { NodeConfig } from '../api/nodeconfig.ts';
import type { IpFamily } from './native/index.ts';
import type { LogLevel } from './log.ts';
import type { WorkerPinning } from './pinning.ts';

export interface WorkerSettings {
  listenPort: number;
  backlog: number;
  families: IpFamily[];
  keepClientIp: boolean;
  /** ceil(proxy.maxConnections / workers): the limit is enforced per worker. */
  maxConnections: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  drainTimeoutMs: number;
  logLevel: LogLevel;
  /** CPUs this worker pins itself to before listening; null = keep the inherited set. Set per worker slot by the primary. */
  cpus: number[] | null;
}

export interface Settings {
  workers: number;
  metricsPort: number;
  drainTimeoutMs: number;
  logLevel: LogLevel;
  /** From tuning.affinity (pinning.ts); null when it is off. */
  pinning: WorkerPinning | null;
  worker: WorkerSettings;
  /** --template: the pod template token /readyz?template= is checked against (status.ts); null when not given. */
  template?: string | null;
}

/** proxy.workers 0 (auto) means one worker per planned CPU when pinning, else one per CPU. */
export function settingsFrom(
  cfg: NodeConfig,
  cpus = availableParallelism(),
  pinning: WorkerPinning | null = null,
): Settings {
  const p = cfg.proxy;
  const workers = p.workers !== 0 ? p.workers : pinning ? pinning.cpus.length : Math.max(1, cpus);
  return {
    workers,
    pinning,
    metricsPort: p.metricsPort,
    drainTimeoutMs: p.timeouts.drain,
    logLevel: p.logLevel,
    worker: {
      listenPort: p.listenPort,
      backlog: p.backlog,
      families: cfg.interception.ipFamilies.map((f) => (f === 'IPv4' ? 4 : 6)),
      keepClientIp: p.keepClientIp,
      maxConnections: Math.ceil(p.maxConnections / workers),
      connectTimeoutMs: p.timeouts.connect,
      idleTimeoutMs: p.timeouts.idle,
      drainTimeoutMs: p.timeouts.drain,
      logLevel: p.logLevel,
      cpus: null,
    },
  };
}
