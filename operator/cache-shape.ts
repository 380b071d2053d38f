// What the operator's informer caches keep of each object (kube/informer.ts `transform`, applied as
// each listed page or watch event is decoded, before anything is stored or handed to a handler).
// At fleet scale the Node cache is most of the operator's memory, and most of a Node is what the
// operator never reads: managedFields, status.images (up to 50 entries on a real kubelet),
// nodeInfo, addresses, capacity, the heartbeat times of every condition (issue 17). Like
// controller-runtime's cache TransformFunc, the cache keeps exactly the fields a code path reads;
// what reads them:
//   Node: metadata.name/labels (selectors: scheduling.ts, conflicts.ts, claims.ts, taint.ts, the
//     zone), metadata.resourceVersion (the informer's relist diff, taint.ts's guarded patch),
//     uid/creationTimestamp/deletionTimestamp (kept: identity, cheap), spec.taints whole (taint.ts
//     writes the others back: a trimmed taint would lose its timeAdded), spec.unschedulable and the
//     Ready condition's status (scheduling.ts isCandidate, controller.ts's node fingerprint).
//   Pod (the fleet namespaces, managed-by label): metadata without managedFields (labels,
//     annotations, timestamps: pods.ts), spec.nodeName, status.conditions whole (readiness and the
//     agent's tuning, policy, config and traffic conditions: pods.ts).
//   Everything else (TransparentProxies, the owned kinds, DaemonSets): the whole object minus
//     metadata.managedFields, which no code path reads from a cache.
// A new reader of another field must add it here (cache-shape.test.ts pins the readers' answers
// on a full object and on its cached shape).
import type { KubeObject } from '../kube/client.ts';

type Meta = KubeObject['metadata'] & { managedFields?: unknown };

/** metadata minus managedFields (often half of a small object's JSON). */
function meta(o: KubeObject): KubeObject['metadata'] {
  const { managedFields: _, ...rest } = o.metadata as Meta;
  return rest;
}

export function withoutManagedFields(o: KubeObject): KubeObject {
  if (!('managedFields' in o.metadata)) return o;
  return { ...o, metadata: meta(o) };
}

interface NodeLike extends KubeObject {
  spec?: { taints?: unknown[]; unschedulable?: boolean };
  status?: { conditions?: { type: string; status: string }[] };
}

export function nodeShape(o: KubeObject): KubeObject {
  const n = o as NodeLike;
  const m = n.metadata;
  const metadata: KubeObject['metadata'] = { name: m.name };
  for (const k of ['uid', 'resourceVersion', 'creationTimestamp', 'deletionTimestamp', 'labels'] as const)
    if (m[k] !== undefined) (metadata as Record<string, unknown>)[k] = m[k];
  const spec: NonNullable<NodeLike['spec']> = {};
  if (n.spec?.taints !== undefined) spec.taints = n.spec.taints;
  if (n.spec?.unschedulable !== undefined) spec.unschedulable = n.spec.unschedulable;
  const ready = n.status?.conditions?.find((c) => c.type === 'Ready');
  return {
    metadata,
    spec,
    status: { conditions: ready ? [{ type: ready.type, status: ready.status }] : [] },
  };
}

interface PodLike extends KubeObject {
  spec?: { nodeName?: string };
  status?: { conditions?: unknown[] };
}

export function podShape(o: KubeObject): KubeObject {
  const p = o as PodLike;
  const out: PodLike = { metadata: meta(p), spec: {}, status: {} };
  if (p.spec?.nodeName !== undefined) out.spec!.nodeName = p.spec.nodeName;
  if (p.status?.conditions !== undefined) out.status!.conditions = p.status.conditions;
  return out;
}
