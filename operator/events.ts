// Events on a TransparentProxy (events.k8s.io/v1), for `kubectl describe` and `kubectl get events`.
// What to emit is decided by transitions.ts from the stored status, so a requeue or an operator
// restart repeats nothing. This recorder does what client-go's events/v1 recorder does:
//  - aggregates: the same reason and note on the same object within WINDOW_MS patches the existing
//    Event's series (count, lastObservedTime) instead of creating a new object;
//  - rate-limits: a token bucket per object (BURST Events, then one per REFILL_MS), so a flapping
//    fleet cannot flood etcd; what is dropped is counted (tpfleet_operator_events_total{outcome});
//  - stays bounded: at most MAX_KEYS series and buckets are remembered (oldest forgotten first);
//  - is best effort: a failed Event is logged and never fails the reconcile.
// Verbs: create and patch on events.events.k8s.io (operator/deploy/rbac.yaml), nothing else.
import { hostname } from 'node:os';
import { GROUP, KIND, VERSION } from '../api/transparentproxy.ts';
import { ApiError, type KubeClient, type KubeObject } from '../kube/client.ts';
import { errorMessage } from '../api/errors.ts';
import type { Logger } from 'pino';
import type { EventSpec } from './transitions.ts';

export const REPORTING_CONTROLLER = 'tpfleet.io/operator';
export const WINDOW_MS = 10 * 60_000;
export const BURST = 25;
export const REFILL_MS = 10_000;
export const MAX_KEYS = 4096;

export type EventOutcome = 'created' | 'aggregated' | 'dropped' | 'failed';

export interface RecorderOptions {
  now?: () => Date;
  instance?: string;
  burst?: number;
  refillMs?: number;
  onOutcome?: (o: EventOutcome) => void;
}

/** MicroTime: RFC 3339 with exactly six fractional digits. */
export const microTime = (d: Date) => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

interface Series {
  namespace: string;
  name: string;
  count: number;
  first: number;
}

/** Token bucket per object; pure arithmetic on timestamps so tests drive the clock. */
export class Buckets {
  private readonly m = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly burst = BURST,
    private readonly refillMs = REFILL_MS,
    private readonly max = MAX_KEYS,
  ) {}

  /** Takes a token for key at time now (ms); false when the bucket is empty. */
  take(key: string, now: number): boolean {
    const b = this.m.get(key);
    const tokens = b ? Math.min(this.burst, b.tokens + (now - b.at) / this.refillMs) : this.burst;
    const ok = tokens >= 1;
    // Re-inserted so the Map's order is least recently used first (bound() drops from the front;
    // a forgotten bucket starts full again, which at MAX_KEYS objects is the lesser evil).
    this.m.delete(key);
    this.m.set(key, { tokens: ok ? tokens - 1 : tokens, at: now });
    bound(this.m, this.max);
    return ok;
  }

  get size(): number {
    return this.m.size;
  }
}

function bound<K, V>(m: Map<K, V>, max: number): void {
  for (const k of m.keys()) {
    if (m.size <= max) break;
    m.delete(k);
  }
}

export class EventRecorder {
  private readonly series = new Map<string, Series>();
  private readonly buckets: Buckets;
  private readonly now: () => Date;
  private readonly instance: string;

  constructor(
    private readonly client: KubeClient,
    private readonly log: Logger,
    private readonly o: RecorderOptions = {},
  ) {
    this.now = o.now ?? (() => new Date());
    this.instance = (o.instance ?? hostname()).slice(0, 128);
    this.buckets = new Buckets(o.burst ?? BURST, o.refillMs ?? REFILL_MS);
  }

  async record(tp: KubeObject, e: EventSpec): Promise<void> {
    const namespace = tp.metadata.namespace ?? '';
    const now = this.now();
    const key = `${tp.metadata.uid}\0${e.type}\0${e.reason}\0${e.note}`;
    const prior = this.series.get(key);
    const repeat = prior && now.getTime() - prior.first < WINDOW_MS ? prior : undefined;
    if (repeat) repeat.count++;
    if (!this.buckets.take(tp.metadata.uid ?? `${namespace}/${tp.metadata.name}`, now.getTime())) {
      this.o.onOutcome?.('dropped');
      this.log.debug({ tp: `${namespace}/${tp.metadata.name}`, reason: e.reason }, 'Event dropped (rate limit)');
      return;
    }
    try {
      if (repeat && (await this.patchSeries(repeat, now))) {
        this.o.onOutcome?.('aggregated');
        return;
      }
      const name = await this.create(tp, e, now);
      this.series.delete(key);
      this.series.set(key, { namespace, name, count: 1, first: now.getTime() });
      bound(this.series, MAX_KEYS);
      this.o.onOutcome?.('created');
    } catch (err) {
      this.o.onOutcome?.('failed');
      this.log.warn(
        { tp: `${namespace}/${tp.metadata.name}`, reason: e.reason, err: errorMessage(err) },
        'could not record an Event',
      );
    }
  }

  /** false when the Event is gone (expired by the API server's TTL): create a new one instead. */
  private async patchSeries(s: Series, now: Date): Promise<boolean> {
    try {
      await this.client.mergePatch(`/apis/events.k8s.io/v1/namespaces/${s.namespace}/events/${s.name}`, {
        series: { count: s.count, lastObservedTime: microTime(now) },
      });
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return false;
      throw err;
    }
  }

  private async create(tp: KubeObject, e: EventSpec, now: Date): Promise<string> {
    const namespace = tp.metadata.namespace ?? '';
    // client-go's naming: the object's name and the time in hex (here with a random tail), so
    // name order is time order.
    const tail = Math.floor(Math.random() * 0x10000)
      .toString(16)
      .padStart(4, '0');
    const name = `${tp.metadata.name.slice(0, 200)}.${now.getTime().toString(16)}${tail}`;
    await this.client.create(`/apis/events.k8s.io/v1/namespaces/${namespace}/events`, {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name, namespace },
      eventTime: microTime(now),
      reportingController: REPORTING_CONTROLLER,
      reportingInstance: this.instance,
      action: e.action,
      reason: e.reason,
      type: e.type,
      note: e.note.slice(0, 1024),
      regarding: {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: KIND,
        name: tp.metadata.name,
        namespace,
        uid: tp.metadata.uid,
        resourceVersion: tp.metadata.resourceVersion,
      },
      ...(e.node ? { related: { apiVersion: 'v1', kind: 'Node', name: e.node } } : {}),
    });
    return name;
  }
}
