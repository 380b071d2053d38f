// The primary process: forks and supervises the workers, serves /metrics, /healthz and /readyz,
// and turns SIGTERM into a drain of every worker.
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { formatCpuList } from '../host/cpulist.ts';
import { isToPrimary, type ToWorker } from './ipc.ts';
import type { Logger } from './log.ts';
import { PREFIX } from './metrics.ts';
import { cpuOfSlot } from './pinning.ts';
import type { Settings } from './settings.ts';
import { serveStatus } from './status.ts';
import { EXIT_LISTEN_FAILED, EXIT_PIN_FAILED } from './worker.ts';

/** Environment variable carrying the WorkerSettings (JSON) to a forked worker. */
export const WORKER_ENV = 'TPFLEET_SIDECAR_WORKER';

const MAX_BACKOFF_MS = 5_000;
/** A worker that ran this long is considered healthy again: its next crash restarts at once. */
const STABLE_MS = 30_000;

/**
 * Worker processes alive: added at fork, removed at their 'exit' event. Not cluster.workers: Node
 * drops a worker from that map only once both 'exit' and 'disconnect' fired, in either order, so
 * inside an 'exit' handler an exited worker may still be listed there. Counting on it made the
 * drain wait forever for a worker that was already gone (a flaky test caught it).
 */
const live = new Set<Worker>();
const workers = (): Worker[] => [...live];

export async function runPrimary(s: Settings, log: Logger): Promise<void> {
  if (s.pinning) {
    const p = s.pinning;
    log.info(
      { workerCpus: formatCpuList(p.cpus), workers: s.workers, notes: p.notes },
      "pinning each worker to one CPU of tuning.affinity's worker CPUs",
    );
    for (const problem of p.problems) log.warn({ problem }, 'tuning.affinity cannot be fully honoured on this node');
  }
  const sup = new Supervisor(s, log);
  const aggregator = new AggregatorRegistry();
  const server = await serveStatus(
    s.metricsPort,
    {
      healthy: () => workers().length > 0,
      ready: () => sup.ready(),
      metrics: async () => (await aggregator.clusterMetrics()) + (await sup.registry.metrics()),
      contentType: aggregator.contentType,
      template: s.template ?? null,
    },
    (e) => log.error({ err: e.message }, 'metrics server error'),
  );
  sup.onFinished = () => {
    log.info('all workers stopped; exiting');
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => sup.stop('SIGTERM'));
  process.on('SIGINT', () => sup.stop('SIGINT'));
  for (let slot = 0; slot < s.workers; slot++) sup.fork(slot);
}

class Supervisor {
  readonly registry = new Registry();
  onFinished: () => void = () => {};
  /** Ready workers and the CPU list each reported (null when not pinned). */
  private readonly readySet = new Map<Worker, string | null>();
  /** Worker slot of each process: a replacement keeps the slot, hence the CPU (pinning.ts). */
  private readonly slots = new Map<Worker, number>();
  private draining = false;
  private announced = false;
  private crashes = 0;
  private readonly restarts: Counter;

  constructor(
    private readonly s: Settings,
    private readonly log: Logger,
  ) {
    new Gauge({
      name: `${PREFIX}workers`,
      help: 'Worker processes alive.',
      registers: [this.registry],
      collect() {
        this.set(workers().length);
      },
    });
    this.restarts = new Counter({
      name: `${PREFIX}worker_restarts_total`,
      help: 'Workers restarted after a crash.',
      registers: [this.registry],
    });
  }

  ready(): boolean {
    return !this.draining && this.readySet.size === this.s.workers;
  }

  fork(slot: number): void {
    const cpus = this.s.pinning ? [cpuOfSlot(this.s.pinning, slot)] : null;
    const w = cluster.fork({ [WORKER_ENV]: JSON.stringify({ ...this.s.worker, cpus }) });
    live.add(w);
    this.slots.set(w, slot);
    const started = Date.now();
    w.on('message', (m: unknown) => isToPrimary(m) && m.t === 'ready' && this.workerReady(w, m.cpus ?? null));
    w.on('exit', (code, signal) => this.workerExited(w, started, code, signal));
  }

  private workerReady(w: Worker, cpus: string | null): void {
    this.readySet.set(w, cpus);
    if (this.announced || !this.ready()) return;
    this.announced = true;
    // Logged whatever proxy.logLevel says: tests and tooling wait for this one line.
    this.log.child({}, { level: 'info' }).info(
      {
        workers: this.s.workers,
        listenPort: this.s.worker.listenPort,
        families: this.s.worker.families,
        metricsPort: this.s.metricsPort,
        ...this.pinned(),
      },
      'listening',
    );
  }

  /** For the listening line: the planned worker CPUs and where each worker verified it runs. */
  private pinned(): object {
    if (!this.s.pinning) return {};
    const pinned = [...this.readySet]
      .map(([w, cpus]) => ({ pid: w.process.pid, cpus }))
      .sort((a, b) => (a.cpus ?? '').localeCompare(b.cpus ?? '', 'en', { numeric: true }));
    return { workerCpus: formatCpuList(this.s.pinning.cpus), pinned };
  }

  private workerExited(w: Worker, started: number, code: number | null, signal: string | null): void {
    live.delete(w);
    this.readySet.delete(w);
    const slot = this.slots.get(w) ?? 0;
    this.slots.delete(w);
    if (this.draining) {
      if (workers().length === 0) this.onFinished();
      return;
    }
    if (code === EXIT_LISTEN_FAILED || code === EXIT_PIN_FAILED) {
      // Listener set-up failed (no capability, port in use) or the CPU is not ours: restarting cannot help.
      this.log.fatal(
        { worker: w.id },
        code === EXIT_PIN_FAILED
          ? 'a worker could not pin itself to its CPU; stopping'
          : 'a worker could not create its listeners; stopping',
      );
      this.killAll();
      process.exit(1);
    }
    this.crashes = Date.now() - started > STABLE_MS ? 1 : this.crashes + 1;
    const delay = Math.min(MAX_BACKOFF_MS, 100 * 2 ** (this.crashes - 1));
    this.log.error({ worker: w.id, code, signal, restartInMs: delay }, 'worker died; restarting');
    this.restarts.inc();
    setTimeout(() => !this.draining && this.fork(slot), delay);
  }

  /** First call: drain every worker. Second call: exit at once. */
  stop(signal: string): void {
    if (this.draining) {
      this.log.warn({ signal }, 'second stop signal: exiting at once');
      this.killAll();
      process.exit(1);
    }
    this.draining = true;
    this.log.info({ signal, drainMs: this.s.drainTimeoutMs }, 'draining');
    const msg: ToWorker = { t: 'drain' };
    // A worker whose channel already closed is draining on its own ("primary gone").
    for (const w of workers()) if (w.isConnected()) w.send(msg);
    if (workers().length === 0) this.onFinished();
    // Backstop: a worker that hangs past its own drain deadline is killed.
    setTimeout(() => {
      this.log.error('workers did not stop after the drain timeout; killing them');
      this.killAll();
      process.exit(1);
    }, this.s.drainTimeoutMs + 5_000).unref();
  }

  private killAll(): void {
    for (const w of workers()) w.process.kill('SIGKILL');
  }
}
