// One reconcile of one TransparentProxy: validate, choose active nodes, render, apply (SSA under
// one field manager), report status. Validation happens before any write, so a bad spec changes
// nothing but the status (InvalidSpec naming the field). Idempotent and restart-safe: every
// object has a fixed name and is applied whole, so a crash mid-way converges on the next run.
import { resourcePath, type KubeObject } from '../kube/client.ts';
import type { ReconcileContext, Result } from './context.ts';
import { nodeConflict } from './conflicts.ts';
import { finalize, ensureFinalizer } from './finalize.ts';
import { syncActiveNodes } from './nodes.ts';
import { renderDaemonSet } from './render/daemonset.ts';
import { activeLabelKey, names, selectorString } from './render/names.ts';
import { renderedSpec } from './render/nodeconfig.ts';
import { renderAgentRole, renderAgentRoleBinding, renderConfigMap, renderHpa, renderMetricsService, renderServiceAccount } from './render/objects.ts';
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
    for (const [r, obj] of [[R.serviceAccounts, n.serviceAccount], [R.roles, n.agentRole], [R.roleBindings, n.agentRole], [R.configMaps, n.configMap],
      [R.daemonSets, n.daemonSet], [R.daemonSets, n.leaveDaemonSet], [R.services, n.service], [R.hpas, n.hpa]] as const) {
      ctx.memo.forget(resourcePath(r, namespace, obj));
    }
    return { outcome: 'gone' };
  }
  if (tp.metadata.deletionTimestamp) return finalize(ctx, tp);
  await ensureFinalizer(ctx, tp);

  const rendered = renderedSpec(tp);
  const statusBase = { generation: tp.metadata.generation ?? 0, prev: tp.status, now: ctx.now().toISOString(), selector: selectorString(name) };
  if (!rendered.ok) {
    ctx.log.info({ tp: key, problems: rendered.problems }, 'spec rejected; nothing changed');
    await writeStatus(ctx, tp, { ...statusBase, invalid: rendered.problems });
    return { outcome: 'invalid' };
  }
  const { spec, config, yaml, hash } = rendered.value;
  // Checked before any write, like a bad spec: a conflicting object changes nothing (conflicts.ts).
  const conflict = nodeConflict(tp, spec, ctx.caches.proxies.list(), ctx.caches.nodes.list());
  if (conflict) {
    ctx.log.info({ tp: key, problem: conflict }, 'nodes taken by an older TransparentProxy; nothing changed');
    await writeStatus(ctx, tp, { ...statusBase, invalid: [conflict] });
    return { outcome: 'invalid' };
  }
  const active = await syncActiveNodes(ctx, namespace, name, spec);
  const n = names(name);
  const c = ctx.caches;
  const path = (r: typeof R.configMaps, obj: string) => resourcePath(r, namespace, obj);
  await ctx.memo.apply(ctx.client, path(R.serviceAccounts, n.serviceAccount), renderServiceAccount(tp), c.serviceAccounts.get(namespace, n.serviceAccount));
  await ctx.memo.apply(ctx.client, path(R.roles, n.agentRole), renderAgentRole(tp), c.roles.get(namespace, n.agentRole));
  await ctx.memo.apply(ctx.client, path(R.roleBindings, n.agentRole), renderAgentRoleBinding(tp), c.roleBindings.get(namespace, n.agentRole));
  // ConfigMap before DaemonSet: new pods must find the config their hash annotation promises.
  await ctx.memo.apply(ctx.client, path(R.configMaps, n.configMap), renderConfigMap(tp, yaml, hash), c.configMaps.get(namespace, n.configMap));
  const ds = await ctx.memo.apply(ctx.client, path(R.daemonSets, n.daemonSet), renderDaemonSet({
    tp, spec, proxy: config.proxy, configHash: hash, defaultImage: ctx.settings.defaultImage, mode: 'run',
    activeLabel: spec.replicas === undefined ? undefined : activeLabelKey(namespace, name),
  }), c.daemonSets.get(namespace, n.daemonSet));
  // Always present (level-based): it runs only where a node is labelled "leaving" (nodes.ts).
  await ctx.memo.apply(ctx.client, path(R.daemonSets, n.leaveDaemonSet), renderDaemonSet({
    tp, spec, proxy: config.proxy, configHash: hash, defaultImage: ctx.settings.defaultImage, mode: 'leave', activeLabel: activeLabelKey(namespace, name),
  }), c.daemonSets.get(namespace, n.leaveDaemonSet));
  await ctx.memo.apply(ctx.client, path(R.services, n.service), renderMetricsService(tp, config), c.services.get(namespace, n.service));
  if (spec.autoscaling?.enabled) {
    await ctx.memo.apply(ctx.client, path(R.hpas, n.hpa), renderHpa(tp, spec), c.hpas.get(namespace, n.hpa));
  } else if (ownedBy(c.hpas.get(namespace, n.hpa), tp)) {
    await ctx.client.delete(path(R.hpas, n.hpa));
    ctx.memo.forget(path(R.hpas, n.hpa));
  }
  await active.finish();
  await writeStatus(ctx, tp, {
    ...statusBase, configHash: hash, active: active.active, draining: active.leaving(), candidates: active.candidates, requested: spec.replicas,
    ...fleetPods(ctx.caches.pods.list(), namespace, name), daemonSet: dsInfo(c.daemonSets.get(namespace, n.daemonSet) ?? ds),
  });
  return { outcome: 'success' };
}

function dsInfo(ds: KubeObject): StatusInput['daemonSet'] {
  return { generation: ds.metadata.generation, status: (ds as { status?: DaemonSetStatus }).status };
}
