// The smaller owned objects: ConfigMap (the NodeConfig document), ServiceAccount, metrics
// Service and the HPA on /scale. Pure rendering.
import { DEFAULTS } from '../../api/defaults.ts';
import { durationMs } from '../../api/net.ts';
import type { NodeConfig } from '../../api/nodeconfig.ts';
import { GROUP, KIND, VERSION, type TransparentProxySpec } from '../../api/transparentproxy.ts';
import type { KubeObject } from '../../kube/client.ts';
import {
  CONFIG_HASH_ANNOTATION,
  CONNECTIONS_METRIC,
  names,
  ownedMeta,
  POD_HASH_ANNOTATION,
  selectorLabels,
} from './names.ts';

/** The node agents watch this object (daemonset/reload.ts): the pod hash tells them whether a change is
 * theirs to apply in place or will replace their pod. */
export function renderConfigMap(tp: KubeObject, yaml: string, hash: string, podHash: string) {
  const meta = ownedMeta(tp, names(tp.metadata.name).configMap);
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { ...meta, annotations: { [CONFIG_HASH_ANNOTATION]: hash, [POD_HASH_ANNOTATION]: podHash } },
    data: { 'nodeconfig.yaml': yaml },
  };
}

export function renderServiceAccount(tp: KubeObject) {
  // No token is mounted by default: only the agent-watch container gets one (a projected volume,
  // see daemonset.ts), for the one thing it may do (renderAgentRole).
  return {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: ownedMeta(tp, names(tp.metadata.name).serviceAccount),
    automountServiceAccountToken: false,
  };
}

/**
 * The node agent's API permissions: get + patch pods/status in this namespace, to publish its
 * conditions on its own pod (daemonset/tuning-publish.ts). RBAC cannot say "only your own pod"; the
 * namespace bounds it, and the operator overwrites nothing but its own condition types. And get +
 * watch on its fleet's one ConfigMap, by name (a watch with a metadata.name field selector is
 * authorized against resourceNames): changes reach the node in seconds (daemonset/reload.ts).
 */
export function renderAgentRole(tp: KubeObject) {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: ownedMeta(tp, names(tp.metadata.name).agentRole),
    rules: [
      { apiGroups: [''], resources: ['pods/status'], verbs: ['get', 'patch'] },
      {
        apiGroups: [''],
        resources: ['configmaps'],
        resourceNames: [names(tp.metadata.name).configMap],
        verbs: ['get', 'watch'],
      },
    ],
  };
}

export function renderAgentRoleBinding(tp: KubeObject) {
  const n = names(tp.metadata.name);
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: ownedMeta(tp, n.agentRole),
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: n.agentRole },
    subjects: [{ kind: 'ServiceAccount', name: n.serviceAccount, namespace: tp.metadata.namespace }],
  };
}

/** Headless: every proxy pod (hostNetwork, so the node IP) is its own scrape endpoint. */
export function renderMetricsService(tp: KubeObject, config: NodeConfig) {
  const port = config.proxy.metricsPort;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: ownedMeta(tp, names(tp.metadata.name).service),
    spec: {
      clusterIP: 'None',
      selector: selectorLabels(tp.metadata.name),
      ports: [{ name: 'metrics', port, targetPort: port, protocol: 'TCP' }],
    },
  };
}

/**
 * autoscaling/v2 HPA whose target is the TransparentProxy's /scale: it writes spec.replicas (the
 * number of active nodes) from the average open connections per proxy pod (custom metrics API).
 */
export function renderHpa(tp: KubeObject, spec: TransparentProxySpec) {
  const a = spec.autoscaling ?? {},
    d = DEFAULTS.autoscaling;
  const windowMs = durationMs(a.scaleDownStabilization ?? d.scaleDownStabilization);
  const target = hpaTarget(spec);
  return {
    apiVersion: 'autoscaling/v2',
    kind: 'HorizontalPodAutoscaler',
    metadata: ownedMeta(tp, names(tp.metadata.name).hpa),
    spec: {
      scaleTargetRef: { apiVersion: `${GROUP}/${VERSION}`, kind: KIND, name: tp.metadata.name },
      minReplicas: a.minReplicas ?? d.minReplicas,
      maxReplicas: a.maxReplicas ?? a.minReplicas ?? d.minReplicas,
      metrics: [
        {
          type: 'Pods',
          pods: {
            metric: { name: CONNECTIONS_METRIC },
            target: {
              type: 'AverageValue',
              averageValue: String(target.perPod),
            },
          },
        },
      ],
      behavior: {
        ...(target.upWindowS === undefined ? {} : { scaleUp: { stabilizationWindowSeconds: target.upWindowS } }),
        scaleDown: { stabilizationWindowSeconds: Math.round(windowMs / 1000) },
      },
    },
  };
}

/**
 * Connections per proxy pod the HPA aims for, and the scale-up window. With autoscaling.utilization
 * it is percent of maxConnections (at least 1), and the scale-up window makes the HPA take the lowest
 * recommendation of that window: it scales out only when the load stayed above the target that long.
 */
export function hpaTarget(spec: TransparentProxySpec): { perPod: number; upWindowS?: number } {
  const a = spec.autoscaling ?? {},
    d = DEFAULTS.autoscaling;
  if (!a.utilization) return { perPod: a.targetConnectionsPerProxy ?? d.targetConnectionsPerProxy };
  const maxConn = spec.proxy?.maxConnections ?? DEFAULTS.proxy.maxConnections;
  const percent = a.utilization.percent ?? d.utilization.percent;
  return {
    perPod: Math.max(1, Math.floor((maxConn * percent) / 100)),
    upWindowS: Math.round(durationMs(a.utilization.window ?? d.utilization.window) / 1000),
  };
}
