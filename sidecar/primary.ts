// The primary process: forks and supervises the workers, serves /metrics, /healthz and /readyz,
// and turns SIGTERM into a drain of every worker.
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { isToPrimary, type ToWorker } from './ipc.ts';
import type { Logger } from './log.ts';
import { PREFIX } from './metrics.ts';
import { serveStatus, type Status } from './status.ts';
import type { Settings } from './settings.ts';
import { EXIT_LISTEN_FAILED } from './worker.ts';

/** Environment variable carrying the WorkerSettings (JSON) to a forked worker. */
export const WORKER_ENV = 'TPFLEET_SIDECAR_WORKER';

const MAX_BACKOFF_MS = 5_000;
/** A worker that ran this long is considered healthy again: its next crash restarts at once. */
const STABLE_MS = 30_000;

export async function runPrimary(s: Settings, log: Logger): Promise<void> {
  const ready = new Set<Worker>();
  let draining = false, announced = false, crashes = 0;
  const own = new Registry();
  const workersGauge = new Gauge({ name: `${PREFIX}workers`, help: 'Worker processes alive.', registers: [own], collect() {
    this.set(Object.keys(cluster.workers ?? {}).length);
  } });
  const restarts = new Counter({ name: `${PREFIX}worker_restarts_total`, help: 'Workers restarted after a crash.', registers: [own] });
  void workersGauge;
  const aggregator = new AggregatorRegistry();

  const alive = (): number => Object.keys(cluster.workers ?? {}).length;
  const status: Status = {
    healthy: () => alive() > 0,
    ready: () => !draining && ready.size === s.workers,
    metrics: async () => (await aggregator.clusterMetrics()) + (await own.metrics()),
    contentType: aggregator.contentType,
  };
  const server = await serveStatus(s.metricsPort, status);

  const fork = (): void => {
    const w = cluster.fork({ [WORKER_ENV]: JSON.stringify(s.worker) });
    const started = Date.now();
    w.on('message', (m: unknown) => {
      if (!isToPrimary(m) || m.t !== 'ready') return;
      ready.add(w);
      if (!announced && status.ready()) {
        announced = true;
        // Logged whatever proxy.logLevel says: tests and tooling wait for this one line.
        log.child({}, { level: 'info' }).info({
          workers: s.workers, listenPort: s.worker.listenPort, families: s.worker.families, metricsPort: s.metricsPort,
        }, 'listening');
      }
    });
    w.on('exit', (code, signal) => {
      ready.delete(w);
      if (draining) {
        if (alive() === 0) finish();
        return;
      }
      if (code === EXIT_LISTEN_FAILED) {
        // Listener set-up failed (no CAP_NET_ADMIN, port in use): restarting cannot help.
        log.fatal({ worker: w.id }, 'a worker could not create its listeners; stopping');
        for (const other of Object.values(cluster.workers ?? {})) other?.kill('SIGKILL');
        process.exit(1);
      }
      crashes = Date.now() - started > STABLE_MS ? 1 : crashes + 1;
      const delay = Math.min(MAX_BACKOFF_MS, 100 * 2 ** (crashes - 1));
      log.error({ worker: w.id, code, signal, restartInMs: delay }, 'worker died; restarting');
      restarts.inc();
      setTimeout(() => !draining && fork(), delay);
    });
  };

  const finish = (): void => {
    log.info('all workers stopped; exiting');
    server.close();
    process.exit(0);
  };

  const stop = (signal: string): void => {
    if (draining) {
      log.warn({ signal }, 'second stop signal: exiting at once');
      for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGKILL');
      process.exit(1);
    }
    draining = true;
    log.info({ signal, drainMs: s.drainTimeoutMs }, 'draining');
    const msg: ToWorker = { t: 'drain' };
    for (const w of Object.values(cluster.workers ?? {})) w?.send(msg);
    if (alive() === 0) finish();
    // Backstop: a worker that hangs past its own drain deadline is killed.
    setTimeout(() => {
      log.error('workers did not stop after the drain timeout; killing them');
      for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGKILL');
    }, s.drainTimeoutMs + 5_000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  for (let i = 0; i < s.workers; i++) fork();
}
