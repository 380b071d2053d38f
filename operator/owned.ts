// The objects the operator owns per TransparentProxy, in apply order: kind, name, render. One table
// drives the reconcile's apply (and the delete of an object no longer wanted), the forgetting of
// a vanished object's memo entries (reconcile.ts), and, through their kinds, the informers and
// caches (kinds.ts OWNED_KINDS, controller.ts, context.ts). Pure.
import type { KubeObject } from '../kube/client.ts';
import type { OwnedKind } from './kinds.ts';
import { renderDaemonSet } from './render/daemonset.ts';
import { activeLabelKey, type names } from './render/names.ts';
import type { RenderedNodeConfig } from './render/nodeconfig.ts';
import {
  renderAgentRole,
  renderAgentRoleBinding,
  renderConfigMap,
  renderHpa,
  renderMetricsService,
  renderServiceAccount,
} from './render/objects.ts';

export interface OwnedInput {
  tp: KubeObject;
  rendered: RenderedNodeConfig;
  /** Image used when spec.proxy.image is omitted (operator flag). */
  defaultImage: string;
}

export interface OwnedObject {
  kind: OwnedKind;
  name: (n: ReturnType<typeof names>) => string;
  /** The object as it must be; undefined when it must not exist (then it is deleted if we own it). */
  render: (i: OwnedInput) => object | undefined;
}

/** The node fleet in one of its modes; both DaemonSets always exist (level-based). */
function fleet(i: OwnedInput, mode: 'run' | 'leave') {
  const { tp, rendered: r } = i,
    ns = tp.metadata.namespace ?? '';
  const activeLabel =
    mode === 'leave' || r.spec.replicas !== undefined ? activeLabelKey(ns, tp.metadata.name) : undefined;
  return renderDaemonSet({
    tp,
    spec: r.spec,
    proxy: r.config.proxy,
    podHash: r.podHash,
    defaultImage: i.defaultImage,
    mode,
    activeLabel,
  });
}

export const OWNED: readonly OwnedObject[] = [
  { kind: 'serviceAccounts', name: (n) => n.serviceAccount, render: (i) => renderServiceAccount(i.tp) },
  { kind: 'roles', name: (n) => n.agentRole, render: (i) => renderAgentRole(i.tp) },
  { kind: 'roleBindings', name: (n) => n.agentRole, render: (i) => renderAgentRoleBinding(i.tp) },
  // Before the DaemonSet: new pods must find the config their pod hash promises; running nodes
  // watch it and apply what changes in place (daemonset/reload.ts).
  {
    kind: 'configMaps',
    name: (n) => n.configMap,
    render: (i) => renderConfigMap(i.tp, i.rendered.yaml, i.rendered.hash, i.rendered.podHash),
  },
  { kind: 'daemonSets', name: (n) => n.daemonSet, render: (i) => fleet(i, 'run') },
  // Runs only where a node is labelled "leaving" (nodes.ts).
  { kind: 'daemonSets', name: (n) => n.leaveDaemonSet, render: (i) => fleet(i, 'leave') },
  { kind: 'services', name: (n) => n.service, render: (i) => renderMetricsService(i.tp, i.rendered.config) },
  {
    kind: 'hpas',
    name: (n) => n.hpa,
    render: (i) => (i.rendered.spec.autoscaling?.enabled ? renderHpa(i.tp, i.rendered.spec) : undefined),
  },
];
