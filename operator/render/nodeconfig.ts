// spec → NodeConfig document (api/nodeconfig.ts), validated by the very schema the node agent and
// sidecar parse at start-up, so a spec the operator accepts is a config the nodes accept. Errors
// name the TransparentProxy field ("spec.interception.mark: must lie within mask"). The parsed
// NodeConfig is returned too: the rest of the rendering reads its values (defaults filled in)
// instead of repeating the defaults. Pure.
import { stringify } from 'yaml';
import type { z } from 'zod';
import { fieldPath } from '../../api/load.ts';
import { NodeConfig } from '../../api/nodeconfig.ts';
import { TransparentProxySpec } from '../../api/transparentproxy.ts';
import type { KubeObject } from '../../kube/client.ts';
import { podHash, shortHash } from '../../api/reload.ts';
import { credentialSecrets } from './credentials.ts';

export interface RenderedNodeConfig {
  spec: TransparentProxySpec;
  /** The document as the nodes will parse it: every default filled in, durations in ms. */
  config: NodeConfig;
  yaml: string;
  /** The config hash: over the whole document (the ConfigMap's annotation, what nodes report). */
  hash: string;
  /** The pod hash: over what only a new process can change (api/reload.ts); the pod template carries it. */
  podHash: string;
}
export type NodeConfigResult = { ok: true; value: RenderedNodeConfig } | { ok: false; problems: string[] };

/** Keys of spec.proxy that are pod settings, not part of the node config document. */
const POD_ONLY = new Set(['image', 'imagePullPolicy', 'resources']);

/** zod issues → "spec.<field>: <message>"; an unknown key is named as a field of its own. */
export function specProblems(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.flatMap((i) =>
    i.code === 'unrecognized_keys'
      ? i.keys.map((k) => `spec.${fieldPath([...i.path, k])}: unknown field`)
      : [`spec.${fieldPath(i.path)}: ${i.message}`],
  );
}

export function renderNodeConfig(rawSpec: unknown): NodeConfigResult {
  const parsed = TransparentProxySpec.safeParse(rawSpec ?? {});
  if (!parsed.success) {
    return { ok: false, problems: specProblems(parsed.error.issues) };
  }
  const spec = parsed.data;
  const proxy = Object.fromEntries(Object.entries(spec.proxy ?? {}).filter(([k]) => !POD_ONLY.has(k)));
  const doc = {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'NodeConfig',
    interception: spec.interception ?? {},
    proxy,
    ...(spec.tuning ? { tuning: spec.tuning } : {}),
    ...(spec.policy ? { policy: spec.policy } : {}),
  };
  const checked = NodeConfig.safeParse(doc);
  if (!checked.success) {
    return { ok: false, problems: specProblems(checked.error.issues) };
  }
  // The document holds the user's values as written (defaults stay implicit) so that an operator
  // upgrade with new defaults does not roll every fleet; the hash covers exactly this text.
  const yaml = stringify(doc, { sortMapEntries: true });
  const pod = podHash(doc, credentialSecrets(spec));
  return { ok: true, value: { spec, config: checked.data, yaml, hash: shortHash(yaml), podHash: pod } };
}

const rendered = new WeakMap<object, NodeConfigResult>();

/**
 * renderNodeConfig of an object's spec, once per object version: informers replace an object on
 * every change and never mutate one, so the object's identity is its version. The reconcile of an
 * object and the conflict checks of the others (conflicts.ts) share the result.
 */
export function renderedSpec(obj: KubeObject): NodeConfigResult {
  const known = rendered.get(obj);
  if (known) return known;
  const r = renderNodeConfig(obj.spec);
  rendered.set(obj, r);
  return r;
}
