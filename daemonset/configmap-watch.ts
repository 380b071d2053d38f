// agent-watch's view of its fleet's ConfigMap: get, then watch that one object by name (the Role
// grants get and watch on it alone), resumed from the last resourceVersion; any error or a stream
// the server ended re-gets it, with backoff on errors. Each version seen is handed to `onObject`,
// which is awaited (reloads are serialized by the Reloader anyway). Level-based: a missed event is
// made good by the next get.
import type { Logger } from 'pino';
import { errorMessage } from '../api/errors.ts';
import type { KubeClient, KubeObject } from '../kube/client.ts';

export interface ConfigMapWatchOptions {
  client: KubeClient;
  namespace: string;
  name: string;
  onObject: (cm: KubeObject & { data?: Record<string, string> }) => Promise<void>;
  log: Logger;
  signal: AbortSignal;
  /** Server-side watch timeout (then a get and a new watch). */
  watchTimeoutSec?: number;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((r) => {
    const t = setTimeout(r, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        r();
      },
      { once: true },
    );
  });

export async function watchConfigMap(o: ConfigMapWatchOptions): Promise<void> {
  const ns = encodeURIComponent(o.namespace);
  const collection = `/api/v1/namespaces/${ns}/configmaps`;
  let backoff = 500;
  while (!o.signal.aborted) {
    try {
      const cm = await o.client.get(`${collection}/${encodeURIComponent(o.name)}`);
      if (!cm) throw new Error(`ConfigMap ${o.namespace}/${o.name} not found`);
      await o.onObject(cm);
      let rv = cm.metadata.resourceVersion ?? '';
      // Events are handled one after the other, in order, off the stream's callback.
      let chain = Promise.resolve();
      await o.client.watch(
        collection,
        {
          fieldSelector: `metadata.name=${o.name}`,
          resourceVersion: rv,
          timeoutSeconds: String(o.watchTimeoutSec ?? 300),
        },
        (e) => {
          if (e.type !== 'ADDED' && e.type !== 'MODIFIED') return;
          rv = e.object.metadata.resourceVersion ?? rv;
          chain = chain.then(() => o.onObject(e.object as KubeObject & { data?: Record<string, string> }));
        },
        o.signal,
      );
      await chain;
      backoff = 500;
    } catch (e) {
      if (o.signal.aborted) return;
      o.log.warn({ err: errorMessage(e), retryMs: backoff }, 'config watch failed; retrying');
      await sleep(backoff, o.signal);
      backoff = Math.min(backoff * 2, 30_000);
    }
  }
}
