// Prometheus metrics of the forwarder (prefix tpfleet_proxy_). Every label comes from a small closed
// set below: no per-connection, per-IP or per-destination labels, so cardinality is fixed.
// Workers register into their registry; the primary aggregates them (primary.ts).
import { Counter, Gauge, Histogram, type Registry, collectDefaultMetrics } from 'prom-client';

export const PREFIX = 'tpfleet_proxy_';

export const CLOSE_RESULTS = ['ok', 'error', 'timeout', 'shed', 'loop'] as const;
export type CloseResult = (typeof CLOSE_RESULTS)[number];

export const ERROR_REASONS = [
  'connect_refused',
  'connect_timeout',
  'connect_unreachable',
  'upstream_reset',
  'client_reset',
  'idle_timeout',
  'other',
] as const;
export type ErrorReason = (typeof ERROR_REASONS)[number];

export const DIRECTIONS = ['client_to_upstream', 'upstream_to_client'] as const;
export type Direction = (typeof DIRECTIONS)[number];

/** 0.5 ms .. 5 s: loopback/LAN connects are sub-millisecond, a lost SYN costs ~1 s per retry. */
export const CONNECT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Called at scrape time, before the values are read (see ForwarderMetrics.beforeCollect). */
export type CollectHook = () => void;

export interface ForwarderMetrics {
  registry: Registry;
  active: Gauge;
  accepted: Counter;
  closed: Counter<'result'>;
  bytes: Counter<'direction'>;
  connectSeconds: Histogram;
  errors: Counter<'reason'>;
  shed: Counter;
  /** Hooks run by the first collect() of a scrape: bring gauges and byte counters up to date. */
  beforeCollect: CollectHook[];
}

/** Creates the metrics in `registry`; `defaults` adds prom-client's process and Node.js metrics. */
export function createMetrics(registry: Registry, opts: { defaults?: boolean } = {}): ForwarderMetrics {
  const beforeCollect: CollectHook[] = [];
  const runHooks = (): void => {
    for (const h of beforeCollect) h();
  };
  const registers = [registry];
  const m: ForwarderMetrics = {
    registry,
    beforeCollect,
    // The gauge's collect runs the hooks: it is the first of our metrics in every scrape, and a
    // scrape with no hook run would report stale byte counts for long-lived connections.
    active: new Gauge({
      name: `${PREFIX}connections_active`,
      help: 'Open client connections.',
      registers,
      collect: runHooks,
    }),
    accepted: new Counter({
      name: `${PREFIX}connections_accepted_total`,
      help: 'Client connections accepted.',
      registers,
    }),
    closed: new Counter({
      name: `${PREFIX}connections_closed_total`,
      help: 'Client connections closed, by result.',
      labelNames: ['result'],
      registers,
    }),
    bytes: new Counter({
      name: `${PREFIX}bytes_total`,
      help: 'Bytes received from one side and forwarded to the other.',
      labelNames: ['direction'],
      registers,
    }),
    connectSeconds: new Histogram({
      name: `${PREFIX}upstream_connect_seconds`,
      help: 'Time to establish an upstream connection (successful connects).',
      buckets: CONNECT_BUCKETS,
      registers,
    }),
    errors: new Counter({
      name: `${PREFIX}errors_total`,
      help: 'Forwarding errors, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    shed: new Counter({
      name: `${PREFIX}connections_shed_total`,
      help: 'Connections closed at once because maxConnections was reached.',
      registers,
    }),
  };
  // Zero-initialise every labelled series so dashboards and rate() see them before the first event.
  for (const r of CLOSE_RESULTS) m.closed.inc({ result: r }, 0);
  for (const r of ERROR_REASONS) m.errors.inc({ reason: r }, 0);
  for (const d of DIRECTIONS) m.bytes.inc({ direction: d }, 0);
  if (opts.defaults) collectDefaultMetrics({ register: registry });
  return m;
}
