// Who may get what from a TransparentProxy (docs/adr/0016): creating one runs a privileged, root,
// hostNetwork init container on the nodes it selects, so the installation, not the object, decides
// which namespaces are reconciled, which node images may run and whether control-plane nodes may be
// selected. Set at install time (chart values → operator flags, main.ts); pure.
import type { TransparentProxySpec } from '../api/transparentproxy.ts';

export interface Tenancy {
  /** Whether objects of this namespace are reconciled (others get a status and nothing else). */
  reconciles: (namespace: string) => boolean;
  /** Describes the reconciled namespaces for messages ("tpfleet-fleet", "every namespace"). */
  namespaces: string;
  /** The reconciled namespaces, sorted; undefined for every namespace (`*`). The informers of the
   *  fleet objects watch only these (the operator's RBAC grants them only there). */
  namespaceList?: readonly string[];
  /** Images spec.proxy.image may name: exact, or a prefix ending in ":", "@" or "/". */
  allowedImages: readonly string[];
  /** Whether specs may tolerate control-plane taints or select control-plane nodes. */
  allowControlPlane: boolean;
}

/** Taint keys and node labels that mark control-plane nodes (kubeadm, kind, older clusters). */
export const CONTROL_PLANE_KEYS = ['node-role.kubernetes.io/control-plane', 'node-role.kubernetes.io/master'];

export function tenancy(o: {
  namespaces: readonly string[];
  allowedImages: readonly string[];
  allowControlPlane: boolean;
}): Tenancy {
  const all = o.namespaces.includes('*');
  const set = new Set(o.namespaces);
  return {
    reconciles: (ns) => all || set.has(ns),
    namespaces: all ? 'every namespace' : [...set].sort().join(', '),
    namespaceList: all ? undefined : [...set].sort(),
    allowedImages: [...o.allowedImages],
    allowControlPlane: o.allowControlPlane,
  };
}

/** The default allowlist: any tag or digest of the default image's repository. */
export function imageRepositoryPrefixes(image: string): string[] {
  const repo = image.replace(/@.*$/, '').replace(/:[^:/]*$/, '');
  return [`${repo}:`, `${repo}@`];
}

export function imageAllowed(image: string, allowed: readonly string[]): boolean {
  return allowed.some((a) => (/[:@/]$/.test(a) ? image.startsWith(a) && image.length > a.length : image === a));
}

export function namespaceProblem(namespace: string, t: Tenancy): string | undefined {
  if (t.reconciles(namespace)) return undefined;
  return (
    `metadata.namespace: ${namespace} is not a namespace this tpfleet installation reconciles (${t.namespaces}); ` +
    'nothing is scheduled for this object (chart value fleetNamespaces, operator flag --namespaces)'
  );
}

/** What the installation forbids in a spec the schema accepted; each problem names the field. */
export function tenancyProblems(spec: TransparentProxySpec, t: Tenancy): string[] {
  const out: string[] = [];
  const image = spec.proxy?.image;
  if (image !== undefined && !imageAllowed(image, t.allowedImages))
    out.push(
      `spec.proxy.image: ${JSON.stringify(image)} is not an allowed node image (${t.allowedImages.join(', ')}); ` +
        'the installation sets the list (chart value allowedImages, operator flag --allowed-images)',
    );
  if (t.allowControlPlane) return out;
  const allowance = 'this installation does not run proxies on control-plane nodes (chart value allowControlPlane)';
  (spec.tolerations ?? []).forEach((tol, i) => {
    const key = tol.key ?? '';
    if ((key === '' && tol.operator === 'Exists') || CONTROL_PLANE_KEYS.includes(key))
      out.push(`spec.tolerations[${i}]: tolerates the control-plane taint; ${allowance}`);
  });
  for (const key of Object.keys(spec.nodeSelector ?? {}))
    if (CONTROL_PLANE_KEYS.includes(key))
      out.push(`spec.nodeSelector.${key}: selects control-plane nodes; ${allowance}`);
  return out;
}
