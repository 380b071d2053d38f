// Configuration files of one local-real node: containerd's config.toml (CRI plugin, cgroupfs,
// every path under the node's own directory so two nodes never share state), the CNI ptp
// network on the node's pod CIDR, and the kubelet's KubeletConfiguration. Pure functions of a
// NodePaths value; the node module writes them. Invariant: nothing here points at a host-wide
// path that another node or a host containerd/kubelet could also use (/var/lib/containerd,
// /run/containerd/runc, /var/lib/cni/networks, /var/log/pods, /var/run/nri, /etc/containerd).
import { join } from 'node:path';

export interface NodePaths {
  name: string;
  /** The node's directory: containerd root/state, kubelet root, CNI config, logs. */
  dir: string;
  /** containerd's gRPC socket (the kubelet's containerRuntimeEndpoint). */
  socket: string;
  /** Directory of containerd, containerd-shim-runc-v2 and ctr. */
  bin: string;
  /** The node's address on its veth (kubelet address, node IP). */
  nodeIp: string;
  /** e.g. 10.244.1.0/24: the node's pods take addresses from it. */
  podCidr: string;
  /** cgroup parent of everything the node runs (kubelet cgroupRoot), e.g. /tpf-<id>. */
  cgroupRoot: string;
  /** CNI network name, unique per node: libcni caches results in the host-wide /var/lib/cni/results/<network>-<sandbox>-<ifname>. */
  cniNetwork: string;
  caCert: string;
  sandboxImage: string;
}

export const nodePaths = (dir: string) => ({
  containerdRoot: join(dir, 'containerd', 'root'),
  containerdState: join(dir, 'containerd', 'state'),
  kubeletRoot: join(dir, 'kubelet'),
  cniConf: join(dir, 'cni'),
  podLogs: join(dir, 'pod-logs'),
});

/** TOML string literal (single-quoted literals cannot hold a quote; our paths never do). */
function lit(s: string): string {
  if (/['\n]/.test(s)) throw new Error(`local-real: unexpected character in config value ${s}`);
  return `'${s}'`;
}

export function containerdConfig(n: NodePaths): string {
  const p = nodePaths(n.dir);
  const cri = "plugins.'io.containerd.cri.v1.runtime'";
  return [
    'version = 3',
    `root = ${lit(p.containerdRoot)}`,
    `state = ${lit(p.containerdState)}`,
    `temp = ${lit(join(n.dir, 'containerd', 'tmp'))}`,
    // No drop-ins from /etc; NRI's socket and the remote snapshotters are host-wide: off.
    'imports = []',
    "disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.erofs', 'io.containerd.differ.v1.erofs', 'io.containerd.mount-handler.v1.erofs']",
    '[grpc]',
    `  address = ${lit(n.socket)}`,
    '[ttrpc]',
    `  address = ${lit(`${n.socket}.ttrpc`)}`,
    "[plugins.'io.containerd.internal.v1.opt']",
    `  path = ${lit(join(n.dir, 'containerd', 'opt'))}`,
    "[plugins.'io.containerd.cri.v1.images']",
    "  snapshotter = 'overlayfs'",
    "[plugins.'io.containerd.cri.v1.images'.pinned_images]",
    `  sandbox = ${lit(n.sandboxImage)}`,
    `[${cri}]`,
    // Pod network namespaces live under the node's state dir, not in the host's /run/netns list.
    '  netns_mounts_under_state_dir = true',
    // Lowering oom_score_adj (the sandbox's -998, Guaranteed pods' -997) needs CAP_SYS_RESOURCE,
    // which sandboxed CI hosts (this VM's root included) may not have: runc then fails with
    // "can't get final child's PID from pipe: EOF". Never go below containerd's own score.
    '  restrict_oom_score_adj = true',
    '  disable_apparmor = true',
    '  enable_selinux = false',
    `[${cri}.containerd]`,
    "  default_runtime_name = 'runc'",
    `[${cri}.containerd.runtimes.runc]`,
    "  runtime_type = 'io.containerd.runc.v2'",
    `  runtime_path = ${lit(join(n.bin, 'containerd-shim-runc-v2'))}`,
    `[${cri}.containerd.runtimes.runc.options]`,
    "  BinaryName = '/usr/sbin/runc'",
    `  Root = ${lit(join(n.dir, 'runc'))}`,
    '  SystemdCgroup = false',
    `[${cri}.cni]`,
    "  bin_dirs = ['/usr/lib/cni']",
    `  conf_dir = ${lit(p.cniConf)}`,
    '  use_internal_loopback = true',
    '',
  ].join('\n');
}

/**
 * Point-to-point veths with a host route per pod, as kindnet wires kind's pods; no bridge: with
 * br_netfilter (bridge-nf-call-iptables, on by default) a bridged packet meets the iptables
 * PREROUTING hook at the bridge layer, where a TPROXY socket assignment does not survive, so
 * interception would be tested on a topology no kind node has. No masquerade: pod addresses are
 * routed (the host has a route per node's pod CIDR), so a server on another node sees the
 * client pod's own address, as on kind, and keepClientIp can be checked.
 */
export function cniConfig(n: NodePaths): string {
  return JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: n.cniNetwork,
      plugins: [
        {
          type: 'ptp',
          ipMasq: false,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: n.podCidr }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: join(n.dir, 'cni-ipam'),
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );
}

export function kubeletConfig(n: NodePaths, taints: { key: string; effect: string }[]): Record<string, unknown> {
  return {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: n.nodeIp,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: 10248,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: n.cgroupRoot,
    cgroupsPerQOS: true,
    // This VM (and many CI hosts) still has cgroup v1; kubelet 1.35+ refuses it unless told.
    failCgroupV1: false,
    failSwapOn: false,
    // As a production kubelet: no anonymous access; clients are the API server (its kubelet client
    // certificate, signed by the cluster CA) or bearer tokens the API server reviews; every request
    // is authorized by the API server (SubjectAccessReview, allowed to nodes by system:node).
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true, cacheTTL: '30s' },
      x509: { clientCAFile: n.caCert },
    },
    authorization: { mode: 'Webhook', webhook: { cacheAuthorizedTTL: '30s', cacheUnauthorizedTTL: '5s' } },
    containerRuntimeEndpoint: `unix://${n.socket}`,
    podLogsDir: nodePaths(n.dir).podLogs,
    serverTLSBootstrap: false,
    rotateCertificates: false,
    registerNode: true,
    registerWithTaints: taints,
    clusterDomain: 'cluster.local',
    resolvConf: join(n.dir, 'resolv.conf'),
    // A shared test machine: never evict the suite's pods because the disk is fuller than a node's would be.
    evictionHard: {
      'memory.available': '50Mi',
      'nodefs.available': '1%',
      'imagefs.available': '1%',
      'nodefs.inodesFree': '1%',
    },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    nodeStatusUpdateFrequency: '5s',
    syncFrequency: '10s',
    maxPods: 30,
  };
}
