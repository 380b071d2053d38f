// Deletion (docs/adr/0006): the finalizer keeps the TransparentProxy until every node removed its
// rules. The operator switches the DaemonSet to cleanup mode (init container `tpfleet-agent
// cleanup`, then a container that just stays up): a cleanup pod that is Ready is a node reporting
// "done". The DaemonSet controller aggregates that into the DaemonSet status, which is what we
// wait for. Then node labels and the finalizer go, and owner references let the garbage collector
// delete the rest. The finalizer never goes while a node still holds rules (a node with TPROXY
// rules and no agent black-holes its traffic, FailClosed): --cleanup-timeout after deletion
// started turns into Degraded=True naming the nodes and a warning, not a release (ADR 0015). A
// node deleted from the cluster leaves the DaemonSet's desired count, so it does not hold it.
import { DEFAULTS } from '../api/defaults.ts';
import { ProxyConfig } from '../api/nodeconfig.ts';
import { TransparentProxySpec } from '../api/transparentproxy.ts';
import { resourcePath, type KubeObject } from '../kube/client.ts';
import type { ReconcileContext, Result } from './context.ts';
import { ownedBy, R, TP, type TransparentProxyObject } from './kinds.ts';
import { pendingLeaves, syncActiveNodes } from './nodes.ts';
import { uncleanNodes } from './pods.ts';
import { renderDaemonSet } from './render/daemonset.ts';
import { FINALIZER, POD_HASH_ANNOTATION, MODE_ANNOTATION, names, selectorString } from './render/names.ts';
import { rolloutComplete, type DaemonSetStatus } from './status.ts';
import { writeStatus } from './write-status.ts';
import { syncTaints } from './taint.ts';

interface LiveDaemonSet extends KubeObject {
  spec?: {
    template?: {
      metadata?: { annotations?: Record<string, string> };
      spec?: {
        nodeSelector?: Record<string, string>;
        tolerations?: unknown[];
        initContainers?: { image?: string; imagePullPolicy?: string }[];
      };
    };
  };
  status?: DaemonSetStatus;
}

export async function ensureFinalizer(ctx: ReconcileContext, tp: KubeObject): Promise<void> {
  const current = tp.metadata.finalizers ?? [];
  if (current.includes(FINALIZER)) return;
  // resourceVersion makes the merge patch conditional: a concurrent change to the list is a 409
  // and a retry, never a lost finalizer.
  await ctx.client.mergePatch(resourcePath(TP, tp.metadata.namespace, tp.metadata.name), {
    metadata: { resourceVersion: tp.metadata.resourceVersion, finalizers: [...current, FINALIZER] },
  });
}

export function cleanupProgress(ds: LiveDaemonSet): {
  switched: boolean;
  done: boolean;
  pending: number;
  total: number;
} {
  const switched = ds.spec?.template?.metadata?.annotations?.[MODE_ANNOTATION] === 'cleanup';
  const s = ds.status ?? {};
  const total = s.desiredNumberScheduled ?? 0;
  const finished = Math.min(s.updatedNumberScheduled ?? 0, s.numberReady ?? 0);
  const done = switched && rolloutComplete({ generation: ds.metadata.generation, status: s }) && finished >= total;
  return { switched, done, pending: Math.max(total - finished, 0), total };
}

/** The cleanup-mode DaemonSet, placed exactly where the live one runs (same nodes, image). */
function cleanupDaemonSet(ctx: ReconcileContext, tp: KubeObject, live: LiveDaemonSet) {
  const t = live.spec?.template;
  const parsed = TransparentProxySpec.safeParse((tp as { spec?: unknown }).spec ?? {});
  const init = t?.spec?.initContainers?.[0];
  const spec: TransparentProxySpec = {
    nodeSelector: t?.spec?.nodeSelector,
    tolerations: (t?.spec?.tolerations ?? []) as TransparentProxySpec['tolerations'],
    proxy: {
      image: init?.image ?? ctx.settings.defaultImage,
      imagePullPolicy: (init?.imagePullPolicy ?? DEFAULTS.pod.imagePullPolicy) as 'IfNotPresent',
    },
  };
  // The spec's drain timeout (the cleanup pods' grace period) even when the rest of it no longer renders.
  const proxy = ProxyConfig.parse({ timeouts: parsed.success ? parsed.data.proxy?.timeouts : undefined });
  const hash = t?.metadata?.annotations?.[POD_HASH_ANNOTATION] ?? '';
  return renderDaemonSet({
    tp,
    spec,
    proxy,
    podHash: hash,
    defaultImage: ctx.settings.defaultImage,
    mode: 'cleanup',
  });
}

/** 300000 -> "5m", 90000 -> "1m30s": the timeout as the flag was written. */
export function formatMs(ms: number): string {
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
    ['ms', 1],
  ] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) parts.push(`${n}${unit}`);
    rest -= n * size;
  }
  return parts.join('') || '0s';
}

export async function finalize(ctx: ReconcileContext, tp: TransparentProxyObject): Promise<Result> {
  const { namespace = '', name } = tp.metadata;
  if (!tp.metadata.finalizers?.includes(FINALIZER)) return { outcome: 'gone' };
  // A deleted object means no node to intercept: its taints go at once (taint.ts), the cleanup follows.
  await syncTaints(ctx, [], new Set());
  // A namespace no longer reconciled (ADR 0016): its fleet objects are neither watched nor writable
  // for this operator, so it cannot see whether the nodes were restored. Keep the finalizer (never
  // release blindly, ADR 0015) until the namespace is listed again or an administrator removes it.
  if (!ctx.settings.tenancy.reconciles(namespace)) {
    ctx.log.warn({ tp: `${namespace}/${name}` }, 'deleting in a namespace not reconciled: finalizer kept');
    return { outcome: 'invalid' };
  }
  const dsName = names(name).daemonSet;
  const live = ctx.caches.daemonSets.get(namespace, dsName) as LiveDaemonSet | undefined;
  const remaining = Date.parse(tp.metadata.deletionTimestamp!) + ctx.settings.cleanupTimeoutMs - ctx.now().getTime();
  // Nodes that were leaving (scale-in) are restored by the leave DaemonSet, which stays until the
  // owner references go; the active ones by the live DaemonSet switched to cleanup mode.
  const leaving = pendingLeaves(ctx, namespace, name);
  const p = live && ownedBy(live, tp) ? cleanupProgress(live) : undefined;
  const done = (!p || p.done) && leaving.length === 0;
  if (!done) {
    if (p && !p.switched) {
      ctx.log.info({ tp: `${namespace}/${name}` }, 'deleting: switching the fleet to cleanup mode');
      await ctx.memo.apply(
        ctx.client,
        resourcePath(R.daemonSets, namespace, dsName),
        cleanupDaemonSet(ctx, tp, live!),
        live,
      );
    }
    const pending = (p ? (p.switched ? p.pending : p.total) : 0) + leaving.length;
    const nodes = [
      ...new Set([...uncleanNodes(ctx.caches.pods.list(), namespace, name, MODE_ANNOTATION), ...leaving]),
    ].sort();
    const timedOut = remaining <= 0 ? formatMs(ctx.settings.cleanupTimeoutMs) : undefined;
    if (timedOut)
      ctx.log.warn(
        { tp: `${namespace}/${name}`, pending, nodes, cleanupTimeout: timedOut },
        'cleanup timed out; the finalizer stays until these nodes removed their rules',
      );
    await writeStatus(ctx, tp, {
      generation: tp.metadata.generation ?? 0,
      prev: tp.status,
      now: ctx.now().toISOString(),
      selector: selectorString(name),
      configHash: tp.status?.configHash,
      cleanup: { pending, total: (p?.total ?? 0) + leaving.length, nodes, timedOut },
    });
    // Before the timeout, at it (to flip Degraded on time), after it every 30 s for the warning.
    return { outcome: 'cleanup', requeueAfterMs: remaining > 0 ? Math.min(5000, remaining) : 30_000 };
  }
  await (await syncActiveNodes(ctx, namespace, name, undefined)).finish();
  const rest = (tp.metadata.finalizers ?? []).filter((f) => f !== FINALIZER);
  await ctx.client.mergePatch(resourcePath(TP, namespace, name), {
    metadata: { resourceVersion: tp.metadata.resourceVersion, finalizers: rest },
  });
  ctx.log.info({ tp: `${namespace}/${name}` }, 'nodes cleaned up; finalizer removed');
  return { outcome: 'success' };
}
