// What a reconcile needs (the API client, the informer caches, operator settings, the write memo
// that keeps steady state free of API writes) and what it returns.
import type { Logger } from 'pino';
import type { KubeClient, KubeObject } from '../kube/client.ts';
import type { Cache, Informer } from '../kube/informer.ts';
import type { EventRecorder } from './events.ts';
import type { OwnedKind } from './kinds.ts';
import { stableJson } from './status.ts';
import { shortHash } from './render/names.ts';
import type { Tenancy } from './tenancy.ts';
import type { TransparentProxyStatus } from '../api/transparentproxy-status.ts';

/** One informer per owned kind (kinds.ts), plus the TransparentProxies, nodes and pods. */
/** The owned kinds and pods: per reconciled namespace (Cache), or cluster-wide for every namespace. */
export type Caches = Record<OwnedKind, Cache> & { proxies: Informer; nodes: Informer; pods: Cache };

export type Outcome = 'success' | 'invalid' | 'cleanup' | 'gone';
export interface Result {
  outcome: Outcome;
  requeueAfterMs?: number;
}

export interface Settings {
  defaultImage: string;
  /** How long deletion waits for nodes to report their rules removed. */
  cleanupTimeoutMs: number;
  /** Namespaces, images and control-plane allowance of this installation (tenancy.ts). */
  tenancy: Tenancy;
}

export interface ReconcileContext {
  client: KubeClient;
  caches: Caches;
  settings: Settings;
  log: Logger;
  memo: ApplyMemo;
  now: () => Date;
  /** Events on TransparentProxies (aggregated, rate-limited; operator/events.ts). */
  events: EventRecorder;
  /**
   * Per object key, the full status last computed (every node): what Events are derived from once
   * the written status lists only some nodes (status-bounded.ts). Lost on restart, see transitions.ts.
   */
  views: Map<string, TransparentProxyStatus>;
  /**
   * The objects that claim a node object `key` claims (claims.ts): all the one-per-node checks
   * need to look at. Absent: every cached object.
   */
  rivals?: (key: string) => KubeObject[];
}

/**
 * Remembers, per object path, the hash of what we last applied and the version the server
 * answered. If the cached object is still at that version and the render is unchanged, the apply
 * is skipped: a steady-state reconcile makes zero requests. The version is metadata.generation
 * where the kind has one (DaemonSet, HPA: their frequent status updates do not count), else the
 * resourceVersion. Anything else (first run after a restart, a spec edited by someone else)
 * re-applies, which SSA turns into a no-op or a repair. clear() (on every periodic resync)
 * also repairs metadata-only drift, at the cost of one no-op apply per object per resync.
 */
export class ApplyMemo {
  private readonly m = new Map<string, { hash: string; version: string }>();

  private static version(o: KubeObject): string {
    return o.metadata.generation !== undefined ? `g${o.metadata.generation}` : `rv${o.metadata.resourceVersion}`;
  }

  async apply(client: KubeClient, path: string, desired: object, live: KubeObject | undefined): Promise<KubeObject> {
    const hash = shortHash(stableJson(desired));
    const prev = this.m.get(path);
    if (live && prev && prev.hash === hash && prev.version === ApplyMemo.version(live)) return live;
    const res = await client.apply(path, desired);
    this.m.set(path, { hash, version: ApplyMemo.version(res) });
    return res;
  }

  forget(path: string): void {
    this.m.delete(path);
  }

  clear(): void {
    this.m.clear();
  }
}
