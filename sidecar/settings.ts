// What a worker needs from the NodeConfig, computed once by the primary and handed to each worker
// (cluster.fork env), so the config file is read and validated exactly once.
import { availableParallelism } from 'node:os';
import type { NodeConfig } from '../api/nodeconfig.ts';
import type { IpFamily } from './native/index.ts';
import type { LogLevel } from './log.ts';

export interface WorkerSettings {
  listenPort: number;
  backlog: number;
  families: IpFamily[];
  keepClientIp: boolean;
  /** SO_MARK of upstream sockets; 0 = none. */
  upstreamMark: number;
  /** ceil(proxy.maxConnections / workers): the limit is enforced per worker. */
  maxConnections: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  drainTimeoutMs: number;
  logLevel: LogLevel;
}

export interface Settings {
  workers: number;
  metricsPort: number;
  drainTimeoutMs: number;
  logLevel: LogLevel;
  worker: WorkerSettings;
}

export function settingsFrom(cfg: NodeConfig, cpus = availableParallelism()): Settings {
  const p = cfg.proxy;
  const workers = p.workers === 0 ? Math.max(1, cpus) : p.workers;
  return {
    workers,
    metricsPort: p.metricsPort,
    drainTimeoutMs: p.timeouts.drain,
    logLevel: p.logLevel,
    worker: {
      listenPort: p.listenPort,
      backlog: p.backlog,
      families: cfg.interception.ipFamilies.map((f) => (f === 'IPv4' ? 4 : 6)),
      keepClientIp: p.keepClientIp,
      // The divert rule recognises the proxy's own upstream traffic by `socket transparent`, and
      // upstream traffic leaves through OUTPUT, which the TPROXY hook never sees: no mark needed.
      upstreamMark: 0,
      maxConnections: Math.ceil(p.maxConnections / workers),
      connectTimeoutMs: p.timeouts.connect,
      idleTimeoutMs: p.timeouts.idle,
      drainTimeoutMs: p.timeouts.drain,
      logLevel: p.logLevel,
    },
  };
}
