// Wires informers → work queue → reconcile workers. Informer handlers only enqueue keys; the
// workers reconcile one key at a time each (the queue guarantees one worker per key), back off
// exponentially on errors and resync every object periodically.
import type { Logger } from 'pino';
import { resourcePath, type KubeClient, type KubeObject, type ResourceRef } from '../kube/client.ts';
import { Informer, NamespacedInformers, type Cache, type ChangeHandler } from '../kube/informer.ts';
import { EventRecorder } from './events.ts';
import { ApplyMemo, type Caches, type ReconcileContext, type Settings } from './context.ts';
import type { OperatorMetrics } from './metrics.ts';
import { WorkQueue } from './queue.ts';
import { OWNED_KINDS, R, TP } from './kinds.ts';
import { appliedSelector, reconcile } from './reconcile.ts';
import type { ValidationView } from './validate.ts';
import { KIND } from '../api/transparentproxy.ts';
import { MANAGED_BY } from './render/names.ts';
import { stableJson } from './status.ts';
import { errorMessage } from '../api/errors.ts';
import { ClaimIndex } from './claims.ts';
import { renderedSpec } from './render/nodeconfig.ts';
import { nodeShape, podShape, withoutManagedFields } from './cache-shape.ts';

export interface ControllerOptions {
  client: KubeClient;
  log: Logger;
  metrics: OperatorMetrics;
  settings: Settings;
  workers?: number;
  resyncMs?: number;
  watchTimeoutSec?: number;
  stallGraceMs?: number;
}

type DaemonSetLike = KubeObject & { spec?: { template?: { spec?: { nodeSelector?: Record<string, string> } } } };

const keyOf = (o: KubeObject) => `${o.metadata.namespace}/${o.metadata.name}`;

/** What about a node matters for scheduling; other node updates (heartbeats) are ignored. */
export function nodeFingerprint(n: KubeObject): string {
  const x = n as KubeObject & {
    spec?: { taints?: unknown; unschedulable?: boolean };
    status?: { conditions?: { type: string; status: string }[] };
  };
  return stableJson([
    x.metadata.labels,
    x.spec?.taints,
    x.spec?.unschedulable,
    x.status?.conditions?.find((c) => c.type === 'Ready')?.status,
  ]);
}

export class Controller {
  readonly caches: Caches;
  readonly queue: WorkQueue;
  /** Which objects claim which nodes (claims.ts), kept by the handlers below. */
  readonly claims = new ClaimIndex();
  private readonly ctx: ReconcileContext;
  private resync?: NodeJS.Timeout;
  private workers: Promise<void>[] = [];
  private running = false;

  constructor(private readonly o: ControllerOptions) {
    this.queue = new WorkQueue({ onDepth: (d) => o.metrics.queueDepth.set(d) });
    // Each cache keeps only what the operator reads of its kind (cache-shape.ts).
    const inf = (
      path: string,
      resource: string,
      onChange: ChangeHandler,
      labelSelector?: string,
      transform: (obj: KubeObject) => KubeObject = withoutManagedFields,
    ) =>
      new Informer({
        client: o.client,
        path,
        resource,
        labelSelector,
        onChange,
        transform,
        log: o.log,
        onRestart: (r) => o.metrics.watchRestarts.inc({ resource: r }),
        watchTimeoutSec: o.watchTimeoutSec,
        stallGraceMs: o.stallGraceMs,
      });
    const owned: ChangeHandler = (obj) => {
      const ref = obj.metadata.ownerReferences?.find((r) => r.kind === KIND && r.controller);
      if (ref) this.queue.add(`${obj.metadata.namespace}/${ref.name}`);
    };
    const managed = `app.kubernetes.io/managed-by=${MANAGED_BY}`;
    // A fleet DaemonSet's node selector is what a rejected object still claims (claims.ts).
    const daemonSets: ChangeHandler = (obj, old, deleted) => {
      owned(obj, old, deleted);
      const sel = (o?: KubeObject) => stableJson((o as DaemonSetLike | undefined)?.spec?.template?.spec?.nodeSelector);
      const ref = obj.metadata.ownerReferences?.find((r) => r.kind === KIND && r.controller);
      if (ref && (deleted || !old || sel(obj) !== sel(old))) this.reindex(`${obj.metadata.namespace}/${ref.name}`);
    };
    // The fleet objects and pods live only in the reconciled namespaces: watched there alone, so
    // the operator needs no cluster-wide read on ConfigMaps, Services, roles... (ADR 0016).
    const only = o.settings.tenancy.namespaceList;
    const scoped = (ref: ResourceRef, onChange: ChangeHandler, transform?: (obj: KubeObject) => KubeObject): Cache =>
      only
        ? new NamespacedInformers(only, (ns) => inf(resourcePath(ref, ns), ref.plural, onChange, managed, transform))
        : inf(resourcePath(ref), ref.plural, onChange, managed, transform);
    const ownedCaches = Object.fromEntries(
      Object.entries(OWNED_KINDS).map(([kind, ref]) => [kind, scoped(ref, kind === 'daemonSets' ? daemonSets : owned)]),
    );
    this.caches = {
      ...(ownedCaches as Record<keyof typeof OWNED_KINDS, Cache>),
      proxies: inf(resourcePath(TP), TP.plural, (obj, old, deleted) => {
        // A new, deleted or re-specified object can take or free nodes another one waits for
        // (conflicts.ts): the objects claiming its old or new nodes are checked again, no others.
        // A status-only update concerns this object alone.
        this.queue.add(keyOf(obj)); // its own key first: once deleted, it is no longer in the cache
        if (deleted) this.enqueue(this.claims.removeProxy(keyOf(obj)));
        else if (!old || obj.metadata.generation !== old.metadata.generation) this.reindex(keyOf(obj));
      }),
      pods: scoped(
        R.pods,
        (obj) => {
          const instance = obj.metadata.labels?.['app.kubernetes.io/instance'];
          if (instance) this.queue.add(`${obj.metadata.namespace}/${instance}`);
        },
        podShape,
      ),
      // Only the objects whose selectors match the node before or after the change (labels,
      // readiness, taints) can see a difference: candidates, active nodes or a conflict.
      nodes: inf(
        resourcePath(R.nodes),
        R.nodes.plural,
        (obj, old, deleted) => {
          if (deleted || !old || nodeFingerprint(obj) !== nodeFingerprint(old))
            this.enqueue(this.claims.setNode(obj, deleted));
        },
        undefined,
        nodeShape,
      ),
    };
    this.ctx = {
      client: o.client,
      caches: this.caches,
      settings: o.settings,
      log: o.log,
      memo: new ApplyMemo(),
      views: new Map(),
      rivals: (key) => [...this.claims.rivals(key)].flatMap((k) => this.proxy(k) ?? []),
      now: () => new Date(),
      events: new EventRecorder(o.client, o.log, { onOutcome: (outcome) => o.metrics.events.inc({ outcome }) }),
    };
  }

  get synced(): boolean {
    return Object.values(this.caches).every((i: Cache) => i.hasSynced);
  }

  /** What validate.ts judges a spec against, as the caches see it now (the admission webhook's view). */
  view(): ValidationView {
    return {
      tenancy: this.o.settings.tenancy,
      proxies: this.caches.proxies.list(),
      nodes: this.caches.nodes.list(),
      applied: (o) => appliedSelector(this.caches, o),
    };
  }

  private proxy(key: string): KubeObject | undefined {
    const [namespace = '', name = ''] = key.split('/');
    return this.caches.proxies.get(namespace, name);
  }

  /** Re-reads what object `key` claims (spec and live DaemonSet) and enqueues it and every object sharing a node with it before or now. */
  private reindex(key: string): void {
    const tp = this.proxy(key);
    if (!tp) return;
    const r = renderedSpec(tp);
    const applied = appliedSelector(this.caches, tp);
    const selectors = [...(r.ok ? [r.value.spec.nodeSelector ?? {}] : []), ...(applied ? [applied] : [])];
    this.queue.add(key);
    this.enqueue(this.claims.setProxy(key, selectors, this.caches.nodes.list()));
  }

  private enqueue(keys: Iterable<string>): void {
    for (const k of keys) this.queue.add(k);
  }

  enqueueAll(): void {
    for (const tp of this.caches.proxies.list()) this.queue.add(keyOf(tp));
  }

  /** Starts the caches; resolves once all have listed once. */
  async startCaches(): Promise<void> {
    for (const i of Object.values(this.caches) as Cache[]) i.start();
    while (!this.synced) await new Promise((r) => setTimeout(r, 50));
  }

  /** Starts reconciling (call once this replica leads). */
  startWorkers(): void {
    if (this.running) return;
    this.running = true;
    this.enqueueAll();
    const every = this.o.resyncMs ?? 10 * 60_000;
    this.resync = setInterval(() => {
      this.ctx.memo.clear();
      this.enqueueAll();
    }, every);
    this.resync.unref();
    for (let w = 0; w < (this.o.workers ?? 2); w++) this.workers.push(this.work());
  }

  private async work(): Promise<void> {
    for (let key = await this.queue.get(); key !== undefined; key = await this.queue.get()) {
      const start = process.hrtime.bigint();
      const secs = () => Number(process.hrtime.bigint() - start) / 1e9;
      try {
        const r = await reconcile(this.ctx, key);
        this.queue.forget(key);
        this.o.metrics.observeReconcile(r.outcome, secs());
        if (r.requeueAfterMs !== undefined) this.queue.addAfter(key, r.requeueAfterMs);
      } catch (e) {
        this.o.metrics.observeReconcile('error', secs());
        const delay = this.queue.addRateLimited(key);
        this.o.log.warn({ tp: key, err: errorMessage(e), retryInMs: delay }, 'reconcile failed');
      } finally {
        this.queue.done(key);
      }
    }
  }

  async stop(): Promise<void> {
    if (this.resync) clearInterval(this.resync);
    this.queue.shutdown();
    await Promise.all(this.workers);
    await Promise.all((Object.values(this.caches) as Cache[]).map((i) => i.stop()));
  }
}
