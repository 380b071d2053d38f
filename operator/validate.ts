// The one check of a TransparentProxy the operator makes before it changes anything, shared by the
// reconcile (a refusal becomes InvalidSpec) and the admission webhook (a refusal fails `kubectl
// apply`): the schema and the node agent's own NodeConfig parser (render/nodeconfig.ts), the
// installation's tenancy rules (tenancy.ts: image allowlist, control-plane nodes) and the
// one-per-node rule against the other objects (conflicts.ts). Pure over what it is given.
import type { KubeObject } from '../kube/client.ts';
import { nodeConflict } from './conflicts.ts';
import { renderedSpec, type RenderedNodeConfig } from './render/nodeconfig.ts';
import { tenancyProblems, type Tenancy } from './tenancy.ts';

export interface ValidationView {
  tenancy: Tenancy;
  /** The other TransparentProxies of the reconciled namespaces (this one may be among them). */
  proxies: KubeObject[];
  nodes: KubeObject[];
  /** The candidate selector an object's live DaemonSet still runs on (reconcile.ts appliedSelector). */
  applied?: (o: KubeObject) => Record<string, string> | undefined;
}

export type Verdict =
  | { ok: true; value: RenderedNodeConfig }
  | {
      ok: false;
      problems: string[];
      why: 'spec rejected; nothing changed' | 'nodes taken by an older TransparentProxy';
    };

export function validate(tp: KubeObject, view: ValidationView): Verdict {
  const rendered = renderedSpec(tp);
  if (!rendered.ok) return { ok: false, problems: rendered.problems, why: 'spec rejected; nothing changed' };
  const { spec } = rendered.value;
  const tenancy = tenancyProblems(spec, view.tenancy);
  if (tenancy.length) return { ok: false, problems: tenancy, why: 'spec rejected; nothing changed' };
  // An object of a namespace this installation does not reconcile takes no nodes (tenancy.ts).
  if (!view.tenancy.reconciles(tp.metadata.namespace ?? '')) return rendered;
  const managed = view.proxies.filter((o) => view.tenancy.reconciles(o.metadata.namespace ?? ''));
  const conflict = nodeConflict(tp, spec, managed, view.nodes, view.applied);
  if (conflict) return { ok: false, problems: [conflict], why: 'nodes taken by an older TransparentProxy' };
  return rendered;
}
