// One reconcile of one TransparentProxy: validate, choose active nodes, render, apply (SSA under
// one field manager), report status. Validation happens before any write, so a bad spec changes
// nothing but the status (InvalidSpec naming the field). Idempotent and restart-safe: every
// object has a fixed name and is applied whole, so a crash mid-way converges on the next run.
import { resourcePath, type KubeObject } from '../kube/client.ts';
import type { ReconcileContext, Result } from './context.ts';
import { nodeConflict } from './conflicts.ts';
import { finalize, ensureFinalizer } from './finalize.ts';
import { syncActiveNodes } from './nodes.ts';
import { OWNED } from './owned.ts';
import { names, selectorString } from './render/names.ts';
import { renderedSpec, type RenderedNodeConfig } from './render/nodeconfig.ts';
import type { DaemonSetStatus, StatusInput } from './status.ts';
import { ownedBy, R, type TransparentProxyObject } from './kinds.ts';
import { fleetPods } from './pods.ts';
import { writeStatus } from './write-status.ts';

export async function reconcile(ctx: ReconcileContext, key: string): Promise<Result> {
  const [namespace = '', name = ''] = key.split('/');
  const tp = ctx.caches.proxies.get(namespace, name) as TransparentProxyObject | undefined;
  if (!tp) {
    // Deleted without our finalizer having run (e.g. removed by hand): owned objects go with
    // owner references; node labels are not owned, so clear them here.
    await (await syncActiveNodes(ctx, namespace, name, undefined)).finish();
    const n = names(name);
    for (const o of OWNED) ctx.memo.forget(resourcePath(R[o.kind], namespace, o.name(n)));
    return { outcome: 'gone' };
  }
  if (tp.metadata.deletionTimestamp) return finalize(ctx, tp);
  await ensureFinalizer(ctx, tp);

  const rendered = renderedSpec(tp);
  const statusBase = {
    generation: tp.metadata.generation ?? 0,
    prev: tp.status,
    now: ctx.now().toISOString(),
    selector: selectorString(name),
  };
  if (!rendered.ok) {
    ctx.log.info({ tp: key, problems: rendered.problems }, 'spec rejected; nothing changed');
    await writeStatus(ctx, tp, { ...statusBase, invalid: rendered.problems });
    return { outcome: 'invalid' };
  }
  const { spec, hash } = rendered.value;
  // Checked before any write, like a bad spec: a conflicting object changes nothing (conflicts.ts).
  const conflict = nodeConflict(tp, spec, ctx.caches.proxies.list(), ctx.caches.nodes.list());
  if (conflict) {
    ctx.log.info({ tp: key, problem: conflict }, 'nodes taken by an older TransparentProxy; nothing changed');
    await writeStatus(ctx, tp, { ...statusBase, invalid: [conflict] });
    return { outcome: 'invalid' };
  }
  const active = await syncActiveNodes(ctx, namespace, name, spec);
  const ds = await applyOwned(ctx, tp, rendered.value);
  await active.finish();
  await writeStatus(ctx, tp, {
    ...statusBase,
    configHash: hash,
    active: active.active,
    draining: active.leaving(),
    candidates: active.candidates,
    requested: spec.replicas,
    ...fleetPods(ctx.caches.pods.list(), namespace, name),
    daemonSet: dsInfo(ctx.caches.daemonSets.get(namespace, names(name).daemonSet) ?? ds),
  });
  return { outcome: 'success' };
}

/**
 * Applies every owned object (owned.ts, in table order) or deletes the ones no longer wanted that
 * we own. Returns what the server answered for the proxy DaemonSet (the cache may lag behind).
 */
async function applyOwned(
  ctx: ReconcileContext,
  tp: TransparentProxyObject,
  rendered: RenderedNodeConfig,
): Promise<KubeObject | undefined> {
  const namespace = tp.metadata.namespace ?? '',
    n = names(tp.metadata.name);
  let fleet: KubeObject | undefined;
  for (const o of OWNED) {
    const name = o.name(n),
      path = resourcePath(R[o.kind], namespace, name),
      live = ctx.caches[o.kind].get(namespace, name);
    const desired = o.render({ tp, rendered, defaultImage: ctx.settings.defaultImage });
    if (desired) {
      const res = await ctx.memo.apply(ctx.client, path, desired, live);
      if (o.kind === 'daemonSets' && name === n.daemonSet) fleet = res;
    } else if (ownedBy(live, tp)) {
      await ctx.client.delete(path);
      ctx.memo.forget(path);
    }
  }
  return fleet;
}

function dsInfo(ds: KubeObject | undefined): StatusInput['daemonSet'] {
  return { generation: ds?.metadata.generation, status: (ds as { status?: DaemonSetStatus } | undefined)?.status };
}
