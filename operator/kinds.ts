// The resources the operator reads and writes, and what makes an object ours. Shared by the
// reconcile (reconcile.ts), the finalizer (finalize.ts), node activation (nodes.ts) and the
// informers (controller.ts); pure. To own a new kind: add it to OWNED_KINDS and its objects to
// OWNED (owned.ts); apply, informers, caches and forgetting follow from the two tables.
import { GROUP, PLURAL, VERSION } from '../api/transparentproxy.ts';
import type { TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import type { KubeObject, ResourceRef } from '../kube/client.ts';

export const TP: ResourceRef = { group: GROUP, version: VERSION, plural: PLURAL, namespaced: true };

/**
 * The kinds the operator creates per TransparentProxy (owner-referenced, labelled managed-by): each
 * gets an informer and a cache (controller.ts); the objects of each kind are listed in owned.ts.
 */
export const OWNED_KINDS = {
  serviceAccounts: { group: '', version: 'v1', plural: 'serviceaccounts', namespaced: true },
  roles: { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'roles', namespaced: true },
  roleBindings: { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'rolebindings', namespaced: true },
  configMaps: { group: '', version: 'v1', plural: 'configmaps', namespaced: true },
  daemonSets: { group: 'apps', version: 'v1', plural: 'daemonsets', namespaced: true },
  services: { group: '', version: 'v1', plural: 'services', namespaced: true },
  hpas: { group: 'autoscaling', version: 'v2', plural: 'horizontalpodautoscalers', namespaced: true },
} as const satisfies Record<string, ResourceRef>;
export type OwnedKind = keyof typeof OWNED_KINDS;

/** Every resource the operator reads or writes: the owned kinds, and the nodes and pods it watches. */
export const R = {
  ...OWNED_KINDS,
  nodes: { group: '', version: 'v1', plural: 'nodes', namespaced: false },
  pods: { group: '', version: 'v1', plural: 'pods', namespaced: true },
} as const satisfies Record<string, ResourceRef>;

export type TransparentProxyObject = KubeObject & { spec?: unknown; status?: TransparentProxyStatus };

export function ownedBy(obj: KubeObject | undefined, tp: KubeObject): boolean {
  return !!obj?.metadata.ownerReferences?.some((o) => o.uid === tp.metadata.uid && o.controller);
}
