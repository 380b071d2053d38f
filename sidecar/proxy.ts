// The sidecar process: one JavaScript thread in control of the engine's threads. It pins itself
// (tuning.affinity), starts the engine, serves /metrics, /healthz and /readyz, logs the engine's
// events, watches that every engine thread keeps turning, and turns SIGTERM into a drain.
import { PROBE_ADDR, PROBE_REPLY } from '../api/selftest.ts';
import { formatCpuList } from '../host/cpulist.ts';
import { EgressControl } from './egress.ts';
import { Engine, type EngineCallbacks, type EngineEvent, type StartOptions } from './engine.ts';
import type { Logger } from './log.ts';
import { PREFIX, processRegistry, reasonText, renderEngineMetrics } from './metrics.ts';
import { native, type NativeError } from './native/index.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { ConfigReloader, renderReloadMetrics } from './reload.ts';
import type { Settings } from './settings.ts';
import { serveStatus } from './status.ts';

/** An engine thread whose loop counter did not move for this long is stuck (its loop wakes every second). */
const STALL_MS = 3_000;

export interface ProxyOptions {
  /** Test-only fault injection for the engine (engine.ts parseFault). */
  fault: Pick<StartOptions, 'faultKind' | 'faultAfterMs'>;
  /** The decision hook; without one no connection is held (engine.ts). */
  onDecide?: EngineCallbacks['onDecide'];
  /** Where the upstreams' Secrets are mounted (api/policy.ts CREDENTIALS_DIR; tests point elsewhere). */
  credentialsDir: string;
  /** The audit log: one JSON line per connection, on its own logger (info, whatever proxy.logLevel says). */
  audit: Logger;
  /** The config file and what it said at start: watched and reloaded in place (reload.ts). */
  reload?: { path: string; config: NodeConfig };
}

function exit(code: number): never {
  return process.exit(code);
}

export async function runProxy(s: Settings, log: Logger, o: ProxyOptions): Promise<void> {
  pinJsThreads(s, log);
  const egress = new EgressControl(s.policy, log, { credentialsDir: o.credentialsDir });
  // The first table goes in with the engine, before its listeners open: no connection is ever decided
  // without the policy (upstream names are resolved first).
  const policy = await egress.initial();
  const engine = startEngine(s, log, o, policy, (e) => onEngineEvent(e, log, o.audit, egress));
  egress.attach(engine);
  const reloader = startReload(s, log, o, engine, egress);
  let draining = false;
  const health = watchThreads(engine, log);
  const registry = processRegistry();
  const server = await serveStatus(
    s.metricsPort,
    {
      healthy: () => health.ok(),
      ready: () => !draining && health.ok(),
      metrics: async () =>
        (await registry.metrics()) +
        renderEngineMetrics(engine.stats(), engine.threads.length) +
        egress.renderMetrics(PREFIX) +
        renderReloadMetrics(PREFIX, reloader),
      contentType: registry.contentType,
      template: s.template,
    },
    (e) => log.error({ err: e.message }, 'metrics server error'),
  ).catch((e: Error) => {
    log.fatal({ err: e.message, port: s.metricsPort }, `cannot serve the status port: ${e.message}`);
    return exit(1);
  });
  // Logged whatever proxy.logLevel says: tests and tooling wait for this one line.
  log.child({}, { level: 'info' }).info(
    {
      workers: engine.threads.length,
      listenPort: s.listenPort,
      families: families(s),
      protocols: s.udp ? ['TCP', 'UDP'] : ['TCP'],
      metricsPort: s.metricsPort,
      ...pinnedFields(s, engine),
    },
    'listening',
  );
  const stop = (signal: string): void => {
    if (draining) {
      log.warn({ signal }, 'second stop signal: exiting at once');
      exit(1);
    }
    draining = true;
    egress.stop();
    reloader?.stop();
    void drain(engine, s.drainTimeoutMs, log, signal).then(() => {
      server.close();
      exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

function startReload(
  s: Settings,
  log: Logger,
  o: ProxyOptions,
  engine: Engine,
  egress: EgressControl,
): ConfigReloader | undefined {
  if (!o.reload) return undefined;
  const target = {
    setOptions: (x: Parameters<Engine['setOptions']>[0]) => engine.setOptions(x),
    setLogLevel: (level: string) => {
      log.level = level;
    },
    setPolicy: (p: NodeConfig['policy']) => egress.update(p),
  };
  // What this process decided at start whatever the config says: the hook, TPFLEET_ENGINE_SPLICE.
  const forced = { hook: s.live.hook || o.onDecide !== undefined, splice: s.live.splice };
  const r = new ConfigReloader(o.reload.path, o.reload.config, target, log, forced);
  r.start();
  return r;
}

const families = (s: Settings): number[] => [...(s.ipv4 ? [4] : []), ...(s.ipv6 ? [6] : [])];

/** The JavaScript thread (and V8's) on the worker CPUs, before the engine threads exist (they pin themselves). */
function pinJsThreads(s: Settings, log: Logger): void {
  if (!s.pinning) return;
  const p = s.pinning;
  log.info(
    { workerCpus: formatCpuList(p.cpus), workers: s.workers, notes: p.notes },
    "pinning each worker to one CPU of tuning.affinity's worker CPUs",
  );
  for (const problem of p.problems) log.warn({ problem }, 'tuning.affinity cannot be fully honoured on this node');
  try {
    native().setAffinity(p.cpus);
  } catch (e) {
    const err = e as NativeError;
    log.fatal(
      { code: err.code, syscall: err.syscall, cpus: formatCpuList(p.cpus) },
      `cannot pin the worker to its CPU: ${err.message}`,
    );
    exit(1);
  }
}

function startEngine(
  s: Settings,
  log: Logger,
  o: ProxyOptions,
  policy: Uint8Array | undefined,
  onEvent: (e: EngineEvent) => void,
): Engine {
  let engine: Engine;
  try {
    engine = Engine.start(
      {
        ...s.live,
        hook: s.live.hook || o.onDecide !== undefined,
        threads: s.workers,
        listenPort: s.listenPort,
        backlog: s.backlog,
        ipv4: s.ipv4,
        ipv6: s.ipv6,
        keepClientIp: s.keepClientIp,
        udp: s.udp,
        cpus: s.threadCpus,
        policy,
        // The node agent's datapath probe (ADR 0021): the engine answers it, never dials it.
        selftestDestinations: [...(s.ipv4 ? [PROBE_ADDR.IPv4.dst] : []), ...(s.ipv6 ? [PROBE_ADDR.IPv6.dst] : [])],
        selftestReply: PROBE_REPLY,
        ...o.fault,
      },
      { onEvent, onDecide: o.onDecide },
    );
  } catch (e) {
    const err = e as NativeError;
    log.fatal(
      { code: err.code, syscall: err.syscall, port: s.listenPort },
      `cannot create the transparent listener: ${err.message}`,
    );
    return exit(1);
  }
  const unpinned = engine.threads.filter((t) => t.cpu >= 0 && !t.pinned);
  if (unpinned.length > 0) {
    log.fatal(
      { cpus: unpinned.map((t) => t.cpu) },
      "cannot pin the worker to its CPU: sched_setaffinity refused (a CPU outside the pod's cpuset?)",
    );
    exit(1);
  }
  return engine;
}

function pinnedFields(s: Settings, engine: Engine): object {
  if (!s.pinning) return {};
  const pinned = engine.threads.map((t, thread) => ({ thread, cpus: String(t.cpu) }));
  return { workerCpus: formatCpuList(s.pinning.cpus), pinned };
}

const ACTIONS = ['Allow', 'Deny', 'Forward'] as const;
const ep = (x: { address: string; port: number; family: number }) =>
  x.family === 6 ? `[${x.address}]:${x.port}` : `${x.address}:${x.port}`;

function onEngineEvent(e: EngineEvent, log: Logger, audit: Logger, egress: EgressControl): void {
  if (e.kind === 'fatal') {
    log.fatal(
      { thread: e.thread, what: e.what, code: e.code },
      'an engine thread failed; exiting so the fail policy covers the node until the restart',
    );
    exit(1);
  }
  if (e.kind === 'warn') return void log.warn({ thread: e.thread, what: e.what, code: e.code }, 'engine');
  if (e.kind === 'accepted') return void log.debug({ src: ep(e.src), dst: ep(e.dst), thread: e.thread }, 'accepted');
  const decided = egress.describe(e.generation, e.rule, e.upstream);
  const line = {
    client: ep(e.src),
    destination: ep(e.dst),
    ...(e.nameKind === 1 ? { sni: e.name } : e.nameKind === 2 ? { host: e.name } : {}),
    rule: decided.rule,
    action: ACTIONS[e.action] ?? 'Allow',
    ...(decided.upstream ? { upstream: decided.upstream } : {}),
    bytesUp: e.bytesUp,
    bytesDown: e.bytesDown,
    durationMs: Math.round(e.durationUs / 1000),
    result: reasonText(e.reason) ?? 'ok',
  };
  if (e.audit) audit.info(line, 'connection');
  log.debug(line, 'closed');
}

/** Liveness: every engine thread's loop counter must move; a stuck thread ends the process. */
function watchThreads(engine: Engine, log: Logger): { ok(): boolean } {
  let last = engine.heartbeats();
  const moved = last.map(() => Date.now());
  const timer = setInterval(() => {
    const now = Date.now(),
      beats = engine.heartbeats();
    beats.forEach((b, i) => {
      if (b !== last[i]) moved[i] = now;
      else if (now - moved[i]! > STALL_MS) {
        log.fatal(
          { thread: i, stalledMs: now - moved[i]! },
          'an engine thread stopped turning; exiting so the fail policy covers the node until the restart',
        );
        exit(1);
      }
    });
    last = beats;
  }, 500);
  timer.unref();
  // Between ticks a probe sees the state of the last tick: at most 500 ms old.
  return { ok: () => moved.every((t) => Date.now() - t <= STALL_MS) };
}

/** Stop accepting, wait for open connections up to drainMs, reset the rest, stop the threads. */
async function drain(engine: Engine, drainMs: number, log: Logger, why: string): Promise<void> {
  engine.drain();
  log.info({ why, open: engine.stats().active, drainMs }, 'draining');
  const deadline = Date.now() + drainMs;
  while (engine.stats().active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (engine.stats().active > 0) {
    log.warn({ open: engine.stats().active }, 'drain timeout: closing remaining connections');
    engine.closeAll();
    // Closing is one loop turn of each thread; do not wait for a peer that never answers.
    const hard = Date.now() + 1000;
    while (engine.stats().active > 0 && Date.now() < hard) await new Promise((r) => setTimeout(r, 20));
  } else log.info('drained');
  engine.stop();
}
