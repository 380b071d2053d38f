// A small Kubernetes REST client over node:https with the credentials of a kubeconfig or the pod's
// service account (applyToHTTPSOptions: kube/credentials.ts, or client-node's KubeConfig). We use
// it instead of client-node's generated APIs because the operator needs server-side apply (also on
// /status), /scale and long watches with explicit resourceVersion/bookmark handling, and one place
// that counts every write (no-hot-loop metric).
import * as http from 'node:http';
import * as https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { ApiCredentials } from './credentials.ts';

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    finalizers?: string[];
    deletionTimestamp?: string;
    creationTimestamp?: string;
    ownerReferences?: {
      apiVersion: string;
      kind: string;
      name: string;
      uid: string;
      controller?: boolean;
      blockOwnerDeletion?: boolean;
    }[];
  };
  [k: string]: unknown;
}

export interface ObjectList {
  /** continue: the token for the next page of a paginated list (absent on the last page). */
  metadata: { resourceVersion: string; continue?: string };
  items: KubeObject[];
}
export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: KubeObject;
}
export type WriteVerb = 'apply' | 'patch' | 'delete' | 'create';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface ResourceRef {
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
}

export function resourcePath(r: ResourceRef, namespace?: string, name?: string, subresource?: string): string {
  let p = r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  if (r.namespaced && namespace) p += `/namespaces/${encodeURIComponent(namespace)}`;
  p += `/${r.plural}`;
  if (name) p += `/${encodeURIComponent(name)}`;
  if (subresource) p += `/${subresource}`;
  return p;
}

interface RequestOpts {
  accept?: string;
  body?: unknown;
  contentType?: string;
  query?: Record<string, string>;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** The lean credentials of kube/credentials.ts (the operator, the node agent) or client-node's KubeConfig (tests, tools). */
export type Credentials = KubeConfig | ApiCredentials;

export class KubeClient {
  readonly server: string;
  private readonly creds: Pick<ApiCredentials, 'applyToHTTPSOptions'>;
  constructor(
    creds: Credentials,
    readonly fieldManager: string,
    private readonly onWrite: (verb: WriteVerb) => void = () => {},
  ) {
    let server: string | undefined;
    if ('getCurrentCluster' in creds) {
      server = creds.getCurrentCluster()?.server;
      if (!server) throw new Error('kubeconfig has no current cluster');
    } else server = creds.server;
    this.server = server.replace(/\/$/, '');
    this.creds = creds;
  }

  private async open(method: string, path: string, o: RequestOpts): Promise<http.IncomingMessage> {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(o.query ?? {})) url.searchParams.set(k, v);
    const opts: https.RequestOptions = {
      method,
      headers: { Accept: o.accept ?? 'application/json' },
      signal: o.signal,
    };
    await this.creds.applyToHTTPSOptions(opts);
    const payload = o.body === undefined ? undefined : JSON.stringify(o.body);
    if (payload !== undefined) opts.headers = { ...opts.headers, 'Content-Type': o.contentType ?? 'application/json' };
    const lib = url.protocol === 'http:' ? http : https;
    return new Promise((resolve, reject) => {
      const req = lib.request(url, opts, resolve);
      req.on('error', reject);
      if (o.timeoutMs)
        req.setTimeout(o.timeoutMs, () => req.destroy(new Error(`${method} ${path}: timeout after ${o.timeoutMs} ms`)));
      req.end(payload);
    });
  }

  async request<T>(method: string, path: string, o: RequestOpts = {}): Promise<T> {
    const res = await this.open(method, path, { timeoutMs: 30_000, ...o });
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) {
      // /healthz-style endpoints answer plain text; everything else is JSON.
      if (!(res.headers['content-type'] ?? '').includes('json')) return text as T;
      return (text ? JSON.parse(text) : {}) as T;
    }
    let reason = 'Unknown',
      message = text.slice(0, 2000);
    try {
      const s = JSON.parse(text) as { reason?: string; message?: string };
      reason = s.reason ?? reason;
      message = s.message ?? message;
    } catch {
      /* not a Status object: keep the raw text */
    }
    throw new ApiError(status, reason, `${method} ${path}: ${status} ${reason}: ${message}`);
  }

  async get<T extends KubeObject = KubeObject>(path: string, o: RequestOpts = {}): Promise<T | undefined> {
    try {
      return await this.request<T>('GET', path, o);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return undefined;
      throw e;
    }
  }

  list(path: string, query: Record<string, string> = {}): Promise<ObjectList> {
    return this.request<ObjectList>('GET', path, { query });
  }

  /** Server-side apply under this client's field manager; force: we own what we render. */
  apply<T extends KubeObject = KubeObject>(path: string, obj: unknown): Promise<T> {
    this.onWrite('apply');
    return this.request<T>('PATCH', path, {
      body: obj,
      contentType: 'application/apply-patch+yaml',
      query: { fieldManager: this.fieldManager, force: 'true' },
    });
  }

  mergePatch<T extends KubeObject = KubeObject>(path: string, patch: unknown): Promise<T> {
    this.onWrite('patch');
    return this.request<T>('PATCH', path, {
      body: patch,
      contentType: 'application/merge-patch+json',
      query: { fieldManager: this.fieldManager },
    });
  }

  jsonPatch<T extends KubeObject = KubeObject>(path: string, ops: unknown[]): Promise<T> {
    this.onWrite('patch');
    return this.request<T>('PATCH', path, {
      body: ops,
      contentType: 'application/json-patch+json',
      query: { fieldManager: this.fieldManager },
    });
  }

  create<T extends KubeObject = KubeObject>(path: string, obj: unknown): Promise<T> {
    this.onWrite('create');
    return this.request<T>('POST', path, { body: obj, query: { fieldManager: this.fieldManager } });
  }

  async delete(path: string, query: Record<string, string> = {}): Promise<boolean> {
    this.onWrite('delete');
    try {
      await this.request('DELETE', path, { query });
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return false;
      throw e;
    }
  }

  /**
   * Streams watch events to `onEvent` until the server closes the stream, the signal aborts or an
   * error occurs (rejects). Lines are newline-delimited JSON; partial lines are buffered.
   */
  async watch(
    path: string,
    query: Record<string, string>,
    onEvent: (e: WatchEvent) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const res = await this.open('GET', path, { query: { ...query, watch: '1' }, signal });
    if (res.statusCode !== 200) {
      res.resume();
      throw new ApiError(res.statusCode ?? 0, 'WatchFailed', `watch ${path}: HTTP ${res.statusCode}`);
    }
    let buf = '';
    for await (const chunk of res) {
      buf += (chunk as Buffer).toString('utf8');
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) onEvent(JSON.parse(line) as WatchEvent);
      }
    }
  }
}
