// A worker process: its own transparent listeners (one per IP family, all workers on one
// SO_REUSEPORT port, so the kernel spreads connections across processes), a Forwarder, and the
// drain on request. Talks to the primary over the cluster IPC channel (messages in ipc.ts).
import net from 'node:net';
import { AggregatorRegistry, Registry } from 'prom-client';
import { formatCpuList } from '../host/cpulist.ts';
import { transparentDialer } from './dial.ts';
import { Forwarder } from './forward.ts';
import { toPrimary, type ToWorker } from './ipc.ts';
import { adoptListener } from './listener.ts';
import { createLogger, type Logger } from './log.ts';
import { createMetrics } from './metrics.ts';
import { native, type IpFamily, type NativeError } from './native/index.ts';
import type { WorkerSettings } from './settings.ts';

/** Exit code of a worker that cannot create its listeners: the primary gives up (no restart loop). */
export const EXIT_LISTEN_FAILED = 3;
/** Exit code of a worker that cannot pin itself to its CPU (e.g. outside the pod's cpuset): no restart either. */
export const EXIT_PIN_FAILED = 4;

export async function runWorker(s: WorkerSettings, workerId: number): Promise<void> {
  const log = createLogger(s.logLevel, { worker: workerId });
  // Before any listener exists: no connection is ever served from a CPU outside the plan.
  const cpus = s.cpus ? pinSelf(s.cpus, log) : undefined;
  const registry = new Registry();
  // Answer the primary's metric requests (prom-client's cluster protocol) from this registry.
  AggregatorRegistry.setRegistries(registry);
  new AggregatorRegistry();
  const fwd = new Forwarder(
    {
      listenPort: s.listenPort,
      keepClientIp: s.keepClientIp,
      maxConnections: s.maxConnections,
      connectTimeoutMs: s.connectTimeoutMs,
      idleTimeoutMs: s.idleTimeoutMs,
    },
    transparentDialer(),
    createMetrics(registry, { defaults: true }),
    log,
  );

  let servers: net.Server[];
  try {
    servers = await Promise.all(s.families.map((f) => listen(f, s, fwd, log)));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    log.fatal(
      { code: err.code, syscall: err.syscall, port: s.listenPort },
      `cannot create the transparent listener: ${err.message}`,
    );
    process.exit(EXIT_LISTEN_FAILED);
  }
  toPrimary(cpus === undefined ? { t: 'ready' } : { t: 'ready', cpus });
  log.debug({ families: s.families, port: s.listenPort, cpus }, 'worker listening');

  let draining = false;
  // Idempotent, except that a second signal exits at once (the operator's "stop now").
  const drain = (why: string, signal = false): void => {
    if (draining && signal) {
      log.warn({ why }, 'second stop request: exiting at once');
      process.exit(1);
    }
    if (draining) return;
    draining = true;
    void drainAndExit(servers, fwd, s.drainTimeoutMs, log, why);
  };
  process.on('message', (m: ToWorker) => {
    if (m?.t === 'drain') drain('primary');
  });
  // Signals reach workers too when sent to the process group (Ctrl-C, `kill -- -pgid`).
  process.on('SIGTERM', () => drain('SIGTERM', true));
  process.on('SIGINT', () => drain('SIGINT', true));
  // The primary is gone (killed): nobody restarts or reports us; stop like on SIGTERM.
  process.on('disconnect', () => drain('primary gone'));
}

/** Pins every thread of this process to `want` and returns the CPU list read back; exits on failure. */
function pinSelf(want: number[], log: Logger): string {
  try {
    native().setAffinity(want);
    const got = formatCpuList(native().getAffinity());
    if (got !== formatCpuList(want)) throw new Error(`pinned to ${formatCpuList(want)} but the kernel reports ${got}`);
    return got;
  } catch (e) {
    const err = e as NativeError;
    log.fatal(
      { code: err.code, syscall: err.syscall, cpus: formatCpuList(want) },
      `cannot pin the worker to its CPU: ${err.message}`,
    );
    process.exit(EXIT_PIN_FAILED);
  }
}

function listen(family: IpFamily, s: WorkerSettings, fwd: Forwarder, log: Logger): Promise<net.Server> {
  const fd = native().listenTransparent(family, family === 4 ? '0.0.0.0' : '::', s.listenPort, s.backlog);
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (sock) => fwd.handle(sock));
  return adoptListener(server, fd, s.backlog).then(() => {
    // accept(2) errors (EMFILE...) must not crash the worker: Node retries on the next event.
    server.on('error', (e) => log.error({ err: e.message }, 'accept failed'));
    return server;
  });
}

/** Stop accepting, wait for open connections up to drainMs, destroy the rest, exit 0. */
async function drainAndExit(
  servers: net.Server[],
  fwd: Forwarder,
  drainMs: number,
  log: Logger,
  why: string,
): Promise<void> {
  for (const server of servers) server.close(); // closes the listening fd now; open sockets stay
  log.info({ why, open: fwd.active, drainMs }, 'draining');
  const deadline = setTimeout(() => {
    log.warn({ open: fwd.active }, 'drain timeout: closing remaining connections');
    fwd.destroyAll();
    // Sockets close in the next loop turns; do not wait for a peer that never answers.
    setTimeout(() => process.exit(0), 1000).unref();
  }, drainMs);
  await fwd.idle();
  clearTimeout(deadline);
  log.info('drained');
  process.exit(0);
}
