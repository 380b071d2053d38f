// Names, labels and owner references shared by every rendered object. Pure.
import { createHash } from 'node:crypto';
import { GROUP, KIND, VERSION } from '../../api/transparentproxy.ts';
import type { KubeObject } from '../../kube/client.ts';

export const FIELD_MANAGER = 'tpfleet-operator';
export const FINALIZER = 'tpfleet.io/node-cleanup';
export const MANAGED_BY = 'tpfleet-operator';
// The two hashes (api/reload.ts): the config hash on the ConfigMap, the pod hash on the pod template.
export { CONFIG_HASH_ANNOTATION, POD_HASH_ANNOTATION, shortHash } from '../../api/reload.ts';
export const MODE_ANNOTATION = 'tpfleet.io/mode';
/** On proxy pods: the sidecar's metrics port (no container declares it; see render/daemonset.ts). */
export const METRICS_PORT_ANNOTATION = 'tpfleet.io/metrics-port';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
/** Pod metric the HPA scales on: the sidecar gauge (sidecar/metrics.ts), served to the HPA by a custom metrics adapter. */
export const CONNECTIONS_METRIC = 'tpfleet_proxy_connections_active';

export function names(tpName: string) {
  return {
    daemonSet: tpName,
    serviceAccount: tpName,
    /** Role + RoleBinding of the node agent's account (pods/status only). */
    agentRole: `${tpName}-node-agent`,
    hpa: tpName,
    configMap: `${tpName}-nodeconfig`,
    service: `${tpName}-metrics`,
    /** Runs on nodes leaving the active set (label "leaving") and restores them (ADR 0006). */
    leaveDaemonSet: `${tpName}-leave`,
  };
}

/** Labels on the pods; also the DaemonSet's selector and status.selector for /scale. */
export function selectorLabels(tpName: string): Record<string, string> {
  return { 'app.kubernetes.io/name': 'tpfleet', 'app.kubernetes.io/instance': tpName };
}

/**
 * Labels of the leave DaemonSet's pods: the same instance (the pod informer enqueues the object by
 * it) but another name, so neither the proxy DaemonSet's selector nor /scale's status.selector
 * (the HPA's pod metrics) ever matches a leave pod.
 */
export function leaveSelectorLabels(tpName: string): Record<string, string> {
  return { 'app.kubernetes.io/name': 'tpfleet-leave', 'app.kubernetes.io/instance': tpName };
}

export function commonLabels(tpName: string): Record<string, string> {
  return {
    ...selectorLabels(tpName),
    'app.kubernetes.io/component': 'node-proxy',
    'app.kubernetes.io/managed-by': MANAGED_BY,
  };
}

export function selectorString(tpName: string): string {
  return Object.entries(selectorLabels(tpName))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

/**
 * Node label marking the nodes a TransparentProxy is active on (only when spec.replicas is set).
 * "<namespace>.<name>" when it fits a label name (63 chars), else a truncated form plus a hash so
 * distinct objects never share a key.
 */
export function activeLabelKey(namespace: string, name: string): string {
  const full = `${namespace}.${name}`;
  const part =
    full.length <= 63
      ? full
      : `${full.slice(0, 50).replace(/[-.]+$/, '')}-${createHash('sha256').update(full).digest('hex').slice(0, 12)}`;
  return `active.tpfleet.io/${part}`;
}

export function ownerReference(tp: KubeObject) {
  if (!tp.metadata.uid) throw new Error(`${tp.metadata.name}: owner has no uid`);
  return {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: KIND,
    name: tp.metadata.name,
    uid: tp.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** Metadata every owned object gets: name, namespace, labels, controller owner reference. */
export function ownedMeta(tp: KubeObject, name: string) {
  return {
    name,
    namespace: tp.metadata.namespace,
    labels: commonLabels(tp.metadata.name),
    ownerReferences: [ownerReference(tp)],
  };
}
