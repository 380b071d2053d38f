// One reconcile of one TransparentProxy: validate, choose active nodes, render, apply (SSA under
// one field manager), report status. Validation happens before any write, so a bad spec changes
// nothing but the status (InvalidSpec naming the field). Idempotent and restart-safe: every
// object has a fixed name and is applied whole, so a crash mid-way converges on the next run.
import { resourcePath, type KubeObject } from '../kube/client.ts';
import type { ReconcileContext, Result } from './context.ts';
import { sharedWithNewer } from './conflicts.ts';
import { CREDENTIALS_RECHECK_MS, credentialProblems } from './credentials.ts';
import { finalize, ensureFinalizer } from './finalize.ts';
import { syncActiveNodes } from './nodes.ts';
import { OWNED } from './owned.ts';
import { activeLabelKey, names, selectorString } from './render/names.ts';
import type { RenderedNodeConfig } from './render/nodeconfig.ts';
import { namespaceProblem } from './tenancy.ts';
import { validate } from './validate.ts';
import { policyInForce, policyRejected } from './policy-status.ts';
import { invalidMessage, type DaemonSetStatus, type StatusInput } from './status.ts';
import { ownedBy, R, type TransparentProxyObject } from './kinds.ts';
import { fleetPods } from './pods.ts';
import { syncTaints } from './taint.ts';
import { writeStatus } from './write-status.ts';
import { isBounded } from './status-bounded.ts';
import type { TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import { fleetTransitions, refusalTransition, type EventSpec } from './transitions.ts';

/**
 * The candidate selector of an object's live DaemonSet (its template's nodeSelector without the
 * active-node label), or undefined when it has none: what it still runs on while its spec is rejected.
 */
export function appliedSelector(
  caches: Pick<ReconcileContext['caches'], 'daemonSets'>,
  o: KubeObject,
): Record<string, string> | undefined {
  const { namespace = '', name } = o.metadata;
  const ds = caches.daemonSets.get(namespace, names(name).daemonSet) as
    | (KubeObject & { spec?: { template?: { spec?: { nodeSelector?: Record<string, string> } } } })
    | undefined;
  const sel = ds && ownedBy(ds, o) ? ds.spec?.template?.spec?.nodeSelector : undefined;
  if (!sel) return undefined;
  const { [activeLabelKey(namespace, name)]: _active, ...candidates } = sel;
  return candidates;
}

export async function reconcile(ctx: ReconcileContext, key: string): Promise<Result> {
  const [namespace = '', name = ''] = key.split('/');
  const tp = ctx.caches.proxies.get(namespace, name) as TransparentProxyObject | undefined;
  if (!tp) {
    // Deleted without our finalizer having run (e.g. removed by hand): owned objects go with
    // owner references; node labels are not owned, so clear them here.
    await (await syncActiveNodes(ctx, namespace, name, undefined)).finish();
    await syncTaints(ctx, [], new Set());
    ctx.views.delete(key);
    const n = names(name);
    for (const o of OWNED) ctx.memo.forget(resourcePath(R[o.kind], namespace, o.name(n)));
    return { outcome: 'gone' };
  }
  if (tp.metadata.deletionTimestamp) return finalize(ctx, tp);
  const statusBase = {
    generation: tp.metadata.generation ?? 0,
    prev: tp.status,
    now: ctx.now().toISOString(),
    selector: selectorString(name),
  };
  // Another team's namespace: a status saying so and nothing else, not even our finalizer (ADR 0016).
  const foreign = namespaceProblem(namespace, ctx.settings.tenancy);
  if (foreign) return reject(ctx, tp, statusBase, [foreign], 'namespace not reconciled by this installation', false);
  await ensureFinalizer(ctx, tp);

  // The same check the admission webhook makes (validate.ts), before any write: a bad spec or a
  // conflicting object changes nothing but the status.
  const applied = (o: KubeObject) => appliedSelector(ctx.caches, o);
  const rivals = ctx.rivals ? ctx.rivals(key) : ctx.caches.proxies.list();
  const verdict = validate(tp, {
    tenancy: ctx.settings.tenancy,
    proxies: rivals,
    nodes: ctx.caches.nodes.list(),
    applied,
  });
  if (!verdict.ok)
    return reject(
      ctx,
      tp,
      statusBase,
      verdict.problems,
      verdict.why,
      verdict.why === 'nodes taken by an older TransparentProxy',
    );
  const { spec, hash } = verdict.value;
  const shared = sharedWithNewer(tp, spec, rivals, ctx.caches.nodes.list(), applied);
  // Upstream Secrets that are missing or incomplete (credentials.ts); looked at again soon, since
  // no watch tells us when one appears.
  const secrets = await credentialProblems(ctx.client, namespace, spec);
  if (secrets.length) {
    await reject(ctx, tp, statusBase, secrets, 'upstream credentials unusable; nothing changed', false);
    return { outcome: 'invalid', requeueAfterMs: CREDENTIALS_RECHECK_MS };
  }
  const active = await syncActiveNodes(ctx, namespace, name, spec);
  const ds = await applyOwned(ctx, tp, verdict.value);
  await active.finish();
  const pods = fleetPods(ctx.caches.pods.list(), namespace, name);
  // After finish(): a node that just started leaving is no longer meant to intercept (taint.ts).
  await syncTaints(
    ctx,
    active.active.map((c) => c.name).filter((n) => !active.leaving().includes(n)),
    pods.readyNodes,
  );
  const { full } = await writeStatus(ctx, tp, {
    ...statusBase,
    configHash: hash,
    active: active.active,
    draining: active.leaving(),
    candidates: active.candidates,
    requested: spec.replicas,
    ...pods,
    daemonSet: dsInfo(ctx.caches.daemonSets.get(namespace, names(name).daemonSet) ?? ds),
    policy: policyInForce(spec),
    sharedNodes: shared,
  });
  // From the full views, never the written list (it may name only some nodes): nothing changed, no Event.
  await emit(ctx, tp, fleetTransitions(previousView(ctx, key, tp, full), full, spec.replicas));
  ctx.views.set(key, full);
  return { outcome: 'success' };
}

/**
 * The full view the last reconcile computed, else the stored status. After a restart a bounded
 * stored status does not say which unlisted nodes were active: node Events then start from the
 * current nodes (no NodeActivated for all of them again); Scaled and Degraded still compare with
 * the stored counts and conditions.
 */
function previousView(
  ctx: ReconcileContext,
  key: string,
  tp: TransparentProxyObject,
  full: TransparentProxyStatus,
): TransparentProxyStatus | undefined {
  const seen = ctx.views.get(key);
  if (seen) return seen;
  return isBounded(tp.status) ? { ...tp.status, nodes: full.nodes } : tp.status;
}

/** Events for what changed, after the status recording it was written (events.ts, transitions.ts). */
async function emit(ctx: ReconcileContext, tp: TransparentProxyObject, events: EventSpec[]): Promise<void> {
  for (const e of events) await ctx.events.record(tp, e);
}

type StatusBase = Pick<StatusInput, 'generation' | 'prev' | 'now' | 'selector'>;

/**
 * A spec that must not roll out: InvalidSpec naming the fields, status.policy naming the rule or
 * upstream at fault, and a Warning Event (InvalidSpec, or Conflict for nodes another object holds)
 * when the problem is new (not on every requeue).
 */
async function reject(
  ctx: ReconcileContext,
  tp: TransparentProxyObject,
  base: StatusBase,
  problems: string[],
  why: string,
  conflict: boolean,
): Promise<Result> {
  ctx.log.info({ tp: `${tp.metadata.namespace}/${tp.metadata.name}`, problems }, why);
  const events = refusalTransition(tp.status, invalidMessage(problems), conflict);
  await writeStatus(ctx, tp, {
    ...base,
    invalid: problems,
    policy: policyRejected(tp.status?.policy, problems, tp.spec),
  });
  await emit(ctx, tp, events);
  return { outcome: 'invalid' };
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
