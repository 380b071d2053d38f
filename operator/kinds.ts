// The resources the operator reads and writes, and what makes an object ours. Shared by the
// reconcile (reconcile.ts), the finalizer (finalize.ts), node activation (nodes.ts) and the
// informers (controller.ts); pure.
import { GROUP, PLURAL, VERSION } from '../api/transparentproxy.ts';
import type { TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import type { KubeObject } from '../kube/client.ts';

export const TP = { group: GROUP, version: VERSION, plural: PLURAL, namespaced: true };
export const R = {
  daemonSets: { group: 'apps', version: 'v1', plural: 'daemonsets', namespaced: true },
  configMaps: { group: '', version: 'v1', plural: 'configmaps', namespaced: true },
  serviceAccounts: { group: '', version: 'v1', plural: 'serviceaccounts', namespaced: true },
  roles: { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'roles', namespaced: true },
  roleBindings: { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'rolebindings', namespaced: true },
  services: { group: '', version: 'v1', plural: 'services', namespaced: true },
  hpas: { group: 'autoscaling', version: 'v2', plural: 'horizontalpodautoscalers', namespaced: true },
  nodes: { group: '', version: 'v1', plural: 'nodes', namespaced: false },
  pods: { group: '', version: 'v1', plural: 'pods', namespaced: true },
};

export type TransparentProxyObject = KubeObject & { spec?: unknown; status?: TransparentProxyStatus };

export function ownedBy(obj: KubeObject | undefined, tp: KubeObject): boolean {
  return !!obj?.metadata.ownerReferences?.some((o) => o.uid === tp.metadata.uid && o.controller);
}
