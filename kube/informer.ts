// List-then-watch cache of one resource type. Survives everything the API server throws at it:
// a watch that ends normally is resumed from the last resourceVersion; "410 Gone" or any error
// relists (with exponential backoff); and a watchdog aborts a watch that has been silent longer
// than the server's own timeout plus a grace period (a half-open TCP connection never errors).
// Lists are paginated (limit/continue, PAGE_SIZE objects a request): at fleet scale one response
// with every Node or Pod would be tens of MiB buffered and parsed at once under one request
// timeout. 100, not client-go's 500: each page is buffered, decoded whole and only then shaped
// (transform), and the heap the collector grew for the biggest page stays the process's RSS; a
// kubelet's Node with its image list is 10-30 KB of JSON (docs/benchmarks.md, "Operator at fleet
// scale": 5,000 kwok nodes, 140 -> 113 MiB). A continue token that expired (410) restarts the list from the first page.
// Handlers must only enqueue (they run on the watch's stream).
import type { Logger } from 'pino';
import { ApiError, type KubeClient, type KubeObject, type WatchEvent } from './client.ts';
import { errorMessage } from '../api/errors.ts';

export type ChangeHandler = (obj: KubeObject, old: KubeObject | undefined, deleted: boolean) => void;

export interface InformerOptions {
  client: KubeClient;
  /** Collection path, e.g. /apis/apps/v1/daemonsets (all namespaces). */
  path: string;
  /** Closed-set name for logs and the watch-restart metric. */
  resource: string;
  labelSelector?: string;
  onChange: ChangeHandler;
  onRestart?: (resource: string) => void;
  log: Logger;
  /** Server-side watch timeout; the watch is then resumed. */
  watchTimeoutSec?: number;
  /** Extra silence tolerated beyond watchTimeoutSec before the watchdog aborts the watch. */
  stallGraceMs?: number;
  /** Objects per LIST request (default PAGE_SIZE). */
  pageSize?: number;
  /**
   * What the cache keeps of each object, applied as a page or event is decoded (before it is stored
   * or handed to onChange), so a big object's unread fields never outlive their page: client-go's
   * TransformFunc. Must keep metadata.name, namespace and resourceVersion.
   */
  transform?: (obj: KubeObject) => KubeObject;
}

export const PAGE_SIZE = 100;
/** A list whose continue token keeps expiring is given up after this many restarts (the run loop backs off). */
const LIST_RESTARTS = 3;

const key = (o: KubeObject) => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);

export class Informer {
  private readonly store = new Map<string, KubeObject>();
  private stopped = false;
  private synced = false;
  private abort?: AbortController;
  private lastEventAt = Date.now();
  private watchdog?: NodeJS.Timeout;
  private loop?: Promise<void>;
  private wake?: () => void;

  private readonly shape: (obj: KubeObject) => KubeObject;
  constructor(private readonly o: InformerOptions) {
    this.shape = o.transform ?? ((obj) => obj);
  }

  get hasSynced(): boolean {
    return this.synced;
  }
  get(namespace: string | undefined, name: string): KubeObject | undefined {
    return this.store.get(namespace ? `${namespace}/${name}` : name);
  }
  list(): KubeObject[] {
    return [...this.store.values()];
  }

  start(): void {
    const timeoutSec = this.o.watchTimeoutSec ?? 300;
    const limit = timeoutSec * 1000 + (this.o.stallGraceMs ?? 30_000);
    this.watchdog = setInterval(
      () => {
        if (this.abort && Date.now() - this.lastEventAt > limit) {
          this.o.log.warn({ resource: this.o.resource }, 'watch stalled; restarting it');
          this.abort.abort(new Error('watch stalled'));
        }
      },
      Math.min(limit / 2, 5000),
    );
    this.watchdog.unref();
    this.loop = this.run(timeoutSec);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.abort?.abort(new Error('informer stopped'));
    this.wake?.();
    await this.loop;
  }

  private async run(timeoutSec: number): Promise<void> {
    let backoff = 250;
    while (!this.stopped) {
      try {
        let rv = await this.relist();
        backoff = 250;
        while (!this.stopped) {
          this.abort = new AbortController();
          this.lastEventAt = Date.now();
          const query: Record<string, string> = {
            resourceVersion: rv,
            allowWatchBookmarks: 'true',
            timeoutSeconds: String(timeoutSec),
          };
          if (this.o.labelSelector) query.labelSelector = this.o.labelSelector;
          await this.o.client.watch(
            this.o.path,
            query,
            (e) => {
              rv = this.handle(e) ?? rv;
            },
            this.abort.signal,
          );
        }
      } catch (e) {
        if (this.stopped) break;
        this.o.onRestart?.(this.o.resource);
        const gone = e instanceof ApiError && e.status === 410;
        this.o.log[gone ? 'debug' : 'warn'](
          { resource: this.o.resource, err: errorMessage(e) },
          'watch ended; relisting',
        );
        await new Promise<void>((r) => {
          this.wake = r;
          setTimeout(r, gone ? 0 : backoff);
        });
        backoff = Math.min(backoff * 2, 30_000);
      }
    }
  }

  /** Replaces the store with a fresh list, firing handlers for what changed while we were away. */
  private async relist(): Promise<string> {
    const list = await this.listAll();
    const seen = new Set<string>();
    for (const obj of list.items) {
      const k = key(obj);
      seen.add(k);
      const old = this.store.get(k);
      this.store.set(k, obj);
      if (old?.metadata.resourceVersion !== obj.metadata.resourceVersion) this.o.onChange(obj, old, false);
    }
    for (const [k, old] of this.store) {
      if (!seen.has(k)) {
        this.store.delete(k);
        this.o.onChange(old, old, true);
      }
    }
    this.synced = true;
    return list.metadata.resourceVersion;
  }

  /** Every object, page by page; all pages come from one snapshot (the first page's resourceVersion). */
  private async listAll(): Promise<{ items: KubeObject[]; metadata: { resourceVersion: string } }> {
    const base: Record<string, string> = { limit: String(this.o.pageSize ?? PAGE_SIZE) };
    if (this.o.labelSelector) base.labelSelector = this.o.labelSelector;
    for (let restarts = 0; ; restarts++) {
      const items: KubeObject[] = [];
      let next: string | undefined;
      try {
        do {
          const page = await this.o.client.list(this.o.path, next ? { ...base, continue: next } : base);
          for (const obj of page.items) items.push(this.shape(obj));
          next = page.metadata.continue || undefined;
          if (!next) return { items, metadata: { resourceVersion: page.metadata.resourceVersion } };
        } while (!this.stopped);
        throw new Error('informer stopped');
      } catch (e) {
        // The snapshot behind the token was compacted away: start over from a fresh first page.
        if (!(next && e instanceof ApiError && e.status === 410 && restarts < LIST_RESTARTS)) throw e;
        this.o.log.debug({ resource: this.o.resource }, 'list continue token expired; listing again');
      }
    }
  }

  /** Applies one watch event; returns the resourceVersion to resume from. */
  private handle(e: WatchEvent): string | undefined {
    this.lastEventAt = Date.now();
    if (e.type === 'ERROR') {
      const s = e.object as unknown as { code?: number; message?: string };
      throw new ApiError(s.code ?? 500, 'WatchError', s.message ?? 'watch error');
    }
    const rv = e.object.metadata.resourceVersion;
    if (e.type === 'BOOKMARK') return rv;
    const obj = this.shape(e.object);
    const k = key(obj);
    const old = this.store.get(k);
    if (e.type === 'DELETED') this.store.delete(k);
    else this.store.set(k, obj);
    this.o.onChange(obj, old, e.type === 'DELETED');
    return rv;
  }
}

/** What readers of a cache use: Informer, or NamespacedInformers over several namespaces. */
export interface Cache {
  readonly hasSynced: boolean;
  get(namespace: string | undefined, name: string): KubeObject | undefined;
  list(): KubeObject[];
  start(): void;
  stop(): Promise<void>;
}

/**
 * One Informer per namespace behind the Cache interface: a component whose RBAC grants list and
 * watch only in some namespaces (a RoleBinding in each) cannot list cluster-wide. An object of
 * another namespace is simply not there (get: undefined).
 */
export class NamespacedInformers implements Cache {
  private readonly by: Map<string, Informer>;
  constructor(namespaces: readonly string[], make: (namespace: string) => Informer) {
    this.by = new Map(namespaces.map((ns) => [ns, make(ns)]));
  }
  get hasSynced(): boolean {
    return [...this.by.values()].every((i) => i.hasSynced);
  }
  get(namespace: string | undefined, name: string): KubeObject | undefined {
    return namespace === undefined ? undefined : this.by.get(namespace)?.get(namespace, name);
  }
  list(): KubeObject[] {
    return [...this.by.values()].flatMap((i) => i.list());
  }
  start(): void {
    for (const i of this.by.values()) i.start();
  }
  async stop(): Promise<void> {
    await Promise.all([...this.by.values()].map((i) => i.stop()));
  }
}
