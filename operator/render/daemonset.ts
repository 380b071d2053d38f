// The node fleet: one DaemonSet per TransparentProxy. Pure rendering; see docs/adr/0005 for the
// security context and 0006 for the update strategy and the cleanup mode used on deletion.
import { DEFAULTS, INTERCEPTION_TAINT, NODE_STATE_COPY_DIR, NODE_STATE_DIR } from '../../api/defaults.ts';
import { leaveWaitSeconds } from '../../api/fields.ts';
import type { NodeConfig } from '../../api/nodeconfig.ts';
import { probeAddress } from '../../api/probe-address.ts';
import { DATAPATH_CONDITION_TYPE } from '../../api/selftest.ts';
import type { TransparentProxySpec } from '../../api/transparentproxy.ts';
import type { KubeObject } from '../../kube/client.ts';
import { credentials } from './credentials.ts';
import {
  activeLabelKey,
  METRICS_PORT_ANNOTATION,
  MODE_ANNOTATION,
  names,
  ownedMeta,
  POD_HASH_ANNOTATION,
  selectorLabels,
  commonLabels,
  leaveSelectorLabels,
  shortHash,
} from './names.ts';

/**
 * run: the proxy fleet. cleanup: the same DaemonSet once the object is deleted, restoring every
 * node. leave: a second DaemonSet (names().leaveDaemonSet) on the nodes leaving the active set
 * (label value "leaving"), which waits for the old proxy to drain and then restores the node.
 */
export type FleetMode = 'run' | 'cleanup' | 'leave';

export interface DaemonSetInput {
  tp: KubeObject;
  /** Pod settings: nodeSelector, tolerations, proxy.image, imagePullPolicy, resources. */
  spec: TransparentProxySpec;
  /** The node config's proxy section, defaults filled in (renderNodeConfig): ports and drain timeout. */
  proxy: NodeConfig['proxy'];
  /** The pod hash (api/reload.ts): what only a new process can change. Config changes apply in place. */
  podHash: string;
  /** Image used when spec.proxy.image is omitted (operator flag). */
  defaultImage: string;
  /** Node label limiting the pods to active nodes; undefined when every candidate is active.
   *  Required for leave, whose pods go where this label says "leaving". */
  activeLabel?: string;
  mode: FleetMode;
}

const CONFIG_DIR = '/etc/tpfleet';
const CONFIG_FILE = `${CONFIG_DIR}/nodeconfig.yaml`;
/**
 * The config in force on the node (emptyDir): the init apply writes the document it applied, the
 * agent-watch rewrites it after each in-place reload, and the sidecar reads it and reloads when it
 * changes (daemonset/reload.ts, sidecar/reload.ts). The kubelet refreshes the ConfigMap mount only
 * within its sync period (about a minute) and without telling anyone: the agent watches the API.
 */
const LIVE_DIR = '/run/tpfleet-live';
const LIVE_FILE = `${LIVE_DIR}/nodeconfig.yaml`;
const STATE_DIR = NODE_STATE_DIR;
/** Where client libraries look for in-cluster credentials (KubeConfig.loadFromCluster). */
const TOKEN_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** Kubernetes' own default for bound tokens; the kubelet refreshes the file at 80 % of it. */
const TOKEN_SECONDS = 3607;
const SIDECAR_UID = 65532;

/**
 * The rendered DaemonSet. In run mode the sidecar carries a token of its own pod template
 * (--template; its probes go to the loopback address derived from it, /readyz?template=): during
 * a surge rollout the old and the new pod share the node's status port, and each pod's readiness
 * must come from its own sidecar. The token is the hash of the template rendered without it, so
 * any template change changes it.
 */
export function renderDaemonSet(i: DaemonSetInput): Record<string, unknown> {
  if (i.mode !== 'run') return render(i, null);
  const probe = render(i, '');
  return render(i, shortHash(JSON.stringify((probe.spec as { template: unknown }).template)));
}

const VOLUME_MOUNTS = [
  { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
  { name: 'state', mountPath: STATE_DIR },
  { name: 'state-copy', mountPath: NODE_STATE_COPY_DIR },
  { name: 'xtables-lock', mountPath: '/run/xtables.lock' },
];
/** Where agent-watch sees the host's /proc/sys/net writable (ADR 0020). */
const SYSCTL_ROOT = '/host';
const RUN_MOUNTS = [...VOLUME_MOUNTS, { name: 'live', mountPath: LIVE_DIR }];
/** `--owner`: the owner marker the agent writes into the node's rules (daemonset/owner.ts, ADR 0015). */
const agent = (i: DaemonSetInput, verb: string) => [
  'tpfleet-agent',
  verb,
  '--config',
  CONFIG_FILE,
  '--state-dir',
  STATE_DIR,
  '--state-copy-dir',
  NODE_STATE_COPY_DIR,
  '--owner',
  `${i.tp.metadata.namespace}.${i.tp.metadata.name}`,
];
/** The pods' grace period: the sidecar's drain timeout, plus time to exit. */
const graceSeconds = (i: DaemonSetInput) => leaveWaitSeconds(i.proxy.timeouts.drain);

function render(i: DaemonSetInput, token: string | null): Record<string, unknown> {
  const tp = i.tp,
    n = names(tp.metadata.name);
  const proxy = i.spec.proxy ?? {};
  const image = proxy.image ?? i.defaultImage;
  const pullPolicy = proxy.imagePullPolicy ?? DEFAULTS.pod.imagePullPolicy;
  // Both restoring modes run the privileged cleanup, then a container that only stays up.
  const cleanup = i.mode !== 'run',
    leave = i.mode === 'leave';
  if (leave && !i.activeLabel) throw new Error('renderDaemonSet: leave mode needs activeLabel');
  const selector = leave ? leaveSelectorLabels(tp.metadata.name) : selectorLabels(tp.metadata.name);
  const labels = leave
    ? { ...commonLabels(tp.metadata.name), ...selector, 'app.kubernetes.io/component': 'node-leave' }
    : commonLabels(tp.metadata.name);
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: leave ? { ...ownedMeta(tp, n.leaveDaemonSet), labels } : ownedMeta(tp, n.daemonSet),
    spec: {
      selector: { matchLabels: selector },
      // Zero-gap rollouts (ADR 0006): on each node, one at a time, the new pod starts beside the
      // old one (maxSurge 1, maxUnavailable 0); both sidecars listen on the same SO_REUSEPORT
      // ports, and the old one drains only once the new one is Ready. Hence no container
      // declares a port: with hostNetwork every declared port is a hostPort, and the scheduler
      // would refuse the second pod. Cleanup and leave run on every node at once, no overlap.
      updateStrategy: {
        type: 'RollingUpdate',
        rollingUpdate: cleanup ? { maxSurge: 0, maxUnavailable: '100%' } : { maxSurge: 1, maxUnavailable: 0 },
      },
      template: {
        metadata: {
          labels,
          annotations: {
            [POD_HASH_ANNOTATION]: i.podHash,
            [MODE_ANNOTATION]: i.mode,
            'kubectl.kubernetes.io/default-container': cleanup ? 'cleanup-done' : 'sidecar',
            // Where to scrape, since no container declares its port (the chart's PodMonitor reads it).
            ...(cleanup ? {} : { [METRICS_PORT_ANNOTATION]: String(i.proxy.metricsPort) }),
          },
        },
        spec: {
          serviceAccountName: n.serviceAccount,
          automountServiceAccountToken: false,
          // No Service environment variables: nothing here reads them, and the sidecar's launcher
          // refuses NODE_* variables (a Service named "node" would set NODE_SERVICE_HOST).
          enableServiceLinks: false,
          hostNetwork: true,
          dnsPolicy: 'ClusterFirstWithHostNet',
          priorityClassName: 'system-node-critical',
          terminationGracePeriodSeconds: graceSeconds(i),
          // Ready only once agent-watch's probe went through the rules in force to this pod's sidecar
          // (daemonset/selftest.ts, ADR 0021); the restoring modes run no agent-watch.
          ...(cleanup ? {} : { readinessGates: [{ conditionType: DATAPATH_CONDITION_TYPE }] }),
          ...placement(i),
          // Our own readiness taint (operator/taint.ts): the proxy is what lifts it, and the leave
          // and cleanup pods must reach nodes that carry it again.
          tolerations: [
            ...(i.spec.tolerations ?? []),
            { key: INTERCEPTION_TAINT, operator: 'Exists', effect: 'NoSchedule' },
          ],
          initContainers: [agentInit(i, image, pullPolicy)],
          containers: cleanup
            ? [cleanupDone(image, pullPolicy)]
            : [
                sidecar(i, image, pullPolicy, token ?? ''),
                watcher(
                  image,
                  pullPolicy,
                  [
                    ...agent(i, 'watch'),
                    '--live-dir',
                    LIVE_DIR,
                    '--configmap',
                    n.configMap,
                    '--sysctl-root',
                    SYSCTL_ROOT,
                  ],
                  [...RUN_MOUNTS, { name: 'sysctl-net', mountPath: `${SYSCTL_ROOT}/proc/sys/net` }],
                ),
              ],
          volumes: volumes(i, n.configMap),
        },
      },
    },
  };
}

/** Which nodes the pods go to: nodeSelector, and for the proxy fleet an affinity off leaving nodes. */
function placement(i: DaemonSetInput) {
  const tp = i.tp;
  if (i.mode === 'leave') {
    // Only the label: the node must be restored even if spec.nodeSelector no longer matches it.
    return { nodeSelector: { 'kubernetes.io/os': 'linux', [i.activeLabel!]: 'leaving' } };
  }
  const active = i.activeLabel ? { [i.activeLabel]: 'true' } : {};
  // Never on a node still leaving this fleet (operator/nodes.ts): its leave pod's cleanup would
  // race this pod's apply. Matters when every candidate is active (no label selector).
  const notLeaving = {
    key: activeLabelKey(tp.metadata.namespace ?? '', tp.metadata.name),
    operator: 'NotIn',
    values: ['leaving'],
  };
  return {
    nodeSelector: { 'kubernetes.io/os': 'linux', ...i.spec.nodeSelector, ...active },
    affinity: {
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [notLeaving] }] },
      },
    },
  };
}

/** The only privileged container: installs (or removes) rules, routes and tuning in the host namespaces, then exits. */
function agentInit(i: DaemonSetInput, image: string, pullPolicy: string) {
  const leave = i.mode === 'leave';
  // Leaving: new connections go direct at once, the old sidecar drains (it exits within its drain
  // timeout, the pod's grace period is drain + 10 s), then the node is restored (daemonset/leave.ts).
  const command = leave
    ? [...agent(i, 'cleanup'), '--wait-port', String(i.proxy.metricsPort), '--wait-timeout', String(graceSeconds(i))]
    : i.mode === 'cleanup'
      ? agent(i, 'cleanup')
      : [...agent(i, 'apply'), '--live-dir', LIVE_DIR];
  return {
    name: leave ? 'agent-leave' : i.mode === 'cleanup' ? 'agent-cleanup' : 'agent-apply',
    image,
    imagePullPolicy: pullPolicy,
    command,
    securityContext: { privileged: true, runAsUser: 0 },
    volumeMounts: i.mode === 'run' ? RUN_MOUNTS : VOLUME_MOUNTS,
  };
}

function volumes(i: DaemonSetInput, configMap: string) {
  const tp = i.tp;
  return [
    ...(i.mode === 'run'
      ? [
          apiAccessVolume(),
          { name: 'live', emptyDir: { medium: 'Memory', sizeLimit: '16Mi' } },
          // agent-watch's in-place tuning (ADR 0020): the net.* sysctls of the netns it already holds
          // NET_ADMIN in (hostNetwork). Its own /proc/sys stays read-only; no other /proc or /sys path.
          { name: 'sysctl-net', hostPath: { path: '/proc/sys/net', type: 'Directory' } },
        ]
      : []),
    { name: 'config', configMap: { name: configMap, items: [{ key: 'nodeconfig.yaml', path: 'nodeconfig.yaml' }] } },
    // Per-object state so two TransparentProxies on one node never share rule state.
    {
      name: 'state',
      hostPath: { path: `${STATE_DIR}/${tp.metadata.namespace}.${tp.metadata.name}`, type: 'DirectoryOrCreate' },
    },
    {
      name: 'state-copy',
      hostPath: {
        path: `${NODE_STATE_COPY_DIR}/${tp.metadata.namespace}.${tp.metadata.name}`,
        type: 'DirectoryOrCreate',
      },
    },
    { name: 'xtables-lock', hostPath: { path: '/run/xtables.lock', type: 'FileOrCreate' } },
    ...(i.mode === 'run' ? credentials(i.spec).map((c) => c.volume) : []),
  ];
}

function sidecar(i: DaemonSetInput, image: string, pullPolicy: string, token: string) {
  const proxy = i.spec.proxy ?? {};
  const metricsPort = i.proxy.metricsPort;
  // The sidecar's own loopback address (api/probe-address.ts): the status port itself is shared
  // with the other pod's sidecar during a surge, and a probe answered by the wrong one made the old
  // pod unready, which makes the DaemonSet controller delete it before the new one is Ready.
  const host = token ? { host: probeAddress(token) } : {};
  const probe = (path: string, periodSeconds: number) => ({
    httpGet: { ...host, path, port: metricsPort },
    periodSeconds,
    timeoutSeconds: 2,
    failureThreshold: 3,
  });
  return {
    name: 'sidecar',
    image,
    imagePullPolicy: pullPolicy,
    command: ['tpfleet-sidecar', '--config', LIVE_FILE, ...(token ? ['--template', token] : [])],
    // No `ports` (see updateStrategy). Readiness every 2 s, because a surge rollout waits for it
    // before it stops the old pod; the template in the path is a second guard (status.ts).
    readinessProbe: probe(`/readyz?template=${token}`, 2),
    livenessProbe: { ...probe('/healthz', 5), initialDelaySeconds: 10 },
    resources: proxy.resources ?? { requests: { cpu: '100m', memory: '128Mi' } },
    // Non-root with exactly one capability. NET_RAW (IP_TRANSPARENT, and with keepClientIp the
    // non-local bind; the kernel takes NET_RAW or NET_ADMIN, ADR 0002) reaches the process through the
    // image's file capability on its launcher (images/launcher/sidecar-exec.c), and the kernel only
    // honours file capabilities when no_new_privs is unset, hence allowPrivilegeEscalation: true
    // (ADR 0005). The bounding set still holds NET_RAW only.
    securityContext: {
      runAsUser: SIDECAR_UID,
      runAsGroup: SIDECAR_UID,
      runAsNonRoot: true,
      allowPrivilegeEscalation: true,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'], add: ['NET_RAW'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [{ name: 'live', mountPath: LIVE_DIR, readOnly: true }, ...credentials(i.spec).map((c) => c.mount)],
  };
}

/**
 * The service-account token, CA and namespace, as the automatic mount would provide them, but as
 * an explicit volume: the pod keeps automountServiceAccountToken: false, so only the container
 * that mounts this (agent-watch) holds API credentials, not the sidecar or the privileged init.
 */
function apiAccessVolume() {
  return {
    name: 'kube-api-access',
    projected: {
      sources: [
        { serviceAccountToken: { path: 'token', expirationSeconds: TOKEN_SECONDS } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        {
          downwardAPI: {
            items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }],
          },
        },
      ],
    },
  };
}

const fieldEnv = (name: string, fieldPath: string) => ({
  name,
  valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath } },
});

function watcher(image: string, pullPolicy: string, command: string[], volumeMounts: unknown[]) {
  return {
    name: 'agent-watch',
    image,
    imagePullPolicy: pullPolicy,
    command,
    // Who it is, for the conditions it publishes on its own pod (pods/status), and its pod hash: a
    // ConfigMap change with another pod hash replaces this pod and is not applied in place.
    env: [
      fieldEnv('POD_NAME', 'metadata.name'),
      fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
      fieldEnv('POD_HASH', `metadata.annotations['${POD_HASH_ANNOTATION}']`),
    ],
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
    // Root for netlink/nft, but not privileged: only the two network capabilities.
    securityContext: {
      runAsUser: 0,
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [...volumeMounts, { name: 'kube-api-access', mountPath: TOKEN_DIR, readOnly: true }],
  };
}

/** Cleanup mode: the init container removed the rules; this container running == "node done". */
function cleanupDone(image: string, pullPolicy: string) {
  return {
    name: 'cleanup-done',
    image,
    imagePullPolicy: pullPolicy,
    command: ['sleep', 'infinity'],
    resources: { requests: { cpu: '1m', memory: '8Mi' }, limits: { memory: '32Mi' } },
    securityContext: {
      runAsUser: SIDECAR_UID,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
  };
}
