// Operator metrics. Labels come from closed sets only (result, resource, verb): never an object
// name, so cardinality does not grow with the number of TransparentProxies.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { WriteVerb } from '../kube/client.ts';
import type { Outcome } from './context.ts';

export type ReconcileResult = Outcome | 'error';

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({
    name: 'tpfleet_operator_reconcile_total',
    help: 'Reconciles by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly reconcileSeconds = new Histogram({
    name: 'tpfleet_operator_reconcile_duration_seconds',
    help: 'Reconcile duration by result.',
    labelNames: ['result'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'tpfleet_operator_queue_depth',
    help: 'Keys waiting in the work queue.',
    registers: [this.registry],
  });
  readonly watchRestarts = new Counter({
    name: 'tpfleet_operator_watch_restarts_total',
    help: 'Watches restarted after an error, expiry or stall.',
    labelNames: ['resource'] as const,
    registers: [this.registry],
  });
  readonly apiWrites = new Counter({
    name: 'tpfleet_operator_api_writes_total',
    help: 'Mutating API requests by verb.',
    labelNames: ['verb'] as const,
    registers: [this.registry],
  });
  readonly events = new Counter({
    name: 'tpfleet_operator_events_total',
    help: 'Events on TransparentProxies by outcome (created, aggregated into a series, dropped by the rate limit, failed).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: 'tpfleet_operator_leader',
    help: '1 while this replica holds the leader lease.',
    registers: [this.registry],
  });

  constructor(defaultMetrics = true) {
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  observeReconcile(result: ReconcileResult, seconds: number): void {
    this.reconciles.inc({ result });
    this.reconcileSeconds.observe({ result }, seconds);
  }

  write(verb: WriteVerb): void {
    this.apiWrites.inc({ verb });
  }
}
