// The `local-real` provider: the `local` provider's real control plane, with the kind-config.yaml
// workers as real nodes — each its own network namespace, containerd v2 (tools/k8s/containerd)
// and kubelet (local-real-node.ts) — so pods really run: images are imported into each node's
// containerd, the DaemonSet's init and sidecar containers start with their real security
// context, and nodeExec sees the node's own nft ruleset. The control-plane node, on which
// nothing of the suite is scheduled (NoSchedule taint), is played by kwok to spare the 2-core
// machine a fourth kubelet. No Docker, no registry: the sandbox image is built locally.
// Invariant: delete() stops every process, unmounts every mount and removes every cgroup,
// directory, namespace and veth the cluster made; exit hooks do the same if the test dies.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBinaries } from '../testenv/binaries.ts';
import { stopProcess, tail } from '../testenv/testenv.ts';
import { kindNodes } from './kind.ts';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import { CLUSTER_NAME } from './local.ts';
import { startControlPlane, type ControlPlane } from './local-controlplane.ts';
import { kindNodeLabels, startKwok } from './local-kwok.ts';
import { startMetricsAdapter } from './local-metrics.ts';
import { createLocalNet, type LocalNet } from './local-net.ts';
import { ensurePauseImage } from './local-real-image.ts';
import { startRealNode, sweepStale, type RealNode } from './local-real-node.ts';
import type { BuiltImage, Cluster, ClusterNode, Provider } from './provider.ts';

export interface LocalRealCluster extends Cluster {
  /** The real nodes (their namespaces, processes, paths), for the provider's own test. */
  readonly real: readonly RealNode[];
  /** Every process of the cluster (control plane, kwok, containerds, kubelets). */
  readonly pids: readonly number[];
  readonly dir: string;
}

export interface LocalRealOptions {
  /**
   * Register the hand-written custom-metrics test adapter (default true: tests that set exact
   * values). false leaves custom.metrics.k8s.io free for the users' path (prometheus-adapter).
   */
  testMetricsAdapter?: boolean;
}

export interface LocalRealProvider extends Provider {
  create(kindConfigPath: string, opts?: LocalRealOptions): Promise<LocalRealCluster>;
}

const has = (cmd: string, args: string[]) => new Promise<boolean>((r) => execFile(cmd, args, (e) => r(!e)));
/** Labels the kubelet sets itself or refuses in --node-labels (kubernetes.io prefixes). */
const selfLabel = (k: string) => /(^|\.)(kubernetes\.io|k8s\.io)\//.test(k) && !k.startsWith('topology.kubernetes.io/');

/** Node identity: CN system:node:<name> in system:nodes, authorized by the bootstrap system:node role. */
async function nodeKubeconfig(cp: ControlPlane, name: string): Promise<string> {
  return cp.env.userKubeconfig(`system:node:${name}`, ['system:nodes']);
}

async function waitNodesReady(c: { kubeconfigPath: string }, real: RealNode[]): Promise<void> {
  await waitFor(
    'the real nodes to register and become Ready',
    async () => {
      for (const n of real) {
        if (n.kubelet.exitCode !== null) throw new Error(`kubelet of ${n.name} exited:\n${tail(n.logs.kubelet)}`);
        if (n.containerd.exitCode !== null)
          throw new Error(`containerd of ${n.name} exited:\n${tail(n.logs.containerd)}`);
      }
      const items = (
        await kubectlJson<{
          items: { metadata: { name: string }; status?: { conditions?: { type: string; status: string }[] } }[];
        }>(c, ['get', 'nodes'])
      ).items;
      const notReady = real.filter(
        (r) =>
          !items
            .find((i) => i.metadata.name === r.name)
            ?.status?.conditions?.some((x) => x.type === 'Ready' && x.status === 'True'),
      );
      if (notReady.length) throw new Error(`not Ready: ${notReady.map((n) => n.name).join(', ')}`);
      return true;
    },
    120_000,
  );
}

export const localRealProvider: LocalRealProvider = {
  name: 'local-real',
  async unavailable() {
    if (process.getuid?.() !== 0) return 'needs root (network namespaces, cgroups, mounts)';
    for (const [cmd, args, what] of [
      ['ip', ['-V'], 'iproute2'],
      ['nsenter', ['--version'], 'util-linux'],
      ['runc', ['--version'], 'the runc package'],
      ['gcc', ['--version'], 'gcc (the pause image)'],
      ['/usr/lib/cni/ptp', ['--version'], 'containernetworking-plugins'],
    ] as const) {
      if (!(await has(cmd, [...args]))) return `no ${cmd} (${what})`;
    }
    return null;
  },

  async create(kindConfigPath, opts: LocalRealOptions = {}) {
    const nodes = kindNodes(kindConfigPath, CLUSTER_NAME);
    const bin = await ensureBinaries([
      'kube-apiserver',
      'etcd',
      'kubectl',
      'kube-controller-manager',
      'kube-scheduler',
      'kwok',
      'kubelet',
      'containerd',
      'containerd-shim-runc-v2',
      'ctr',
    ]);
    const pause = await ensurePauseImage();
    sweepStale(tmpdir(), bin);
    const dir = mkdtempSync(join(tmpdir(), `tpfleet-real-${process.pid}-`));
    // Registered after the node modules' hooks (imported first), so it runs after they unmounted.
    const removeDir = () => rmSync(dir, { recursive: true, force: true });
    process.once('exit', removeDir);
    let net: LocalNet | undefined, cp: ControlPlane | undefined;
    const real: RealNode[] = [];
    let kwok: Awaited<ReturnType<typeof startKwok>> | undefined;
    let adapter: Awaited<ReturnType<typeof startMetricsAdapter>> | undefined;
    let deleted = false;
    const teardown = async () => {
      if (deleted) return;
      deleted = true;
      for (const n of real.reverse()) await n.destroy();
      if (adapter) await stopProcess(adapter.proc);
      if (kwok) await stopProcess(kwok);
      await cp?.stop();
      await net?.destroy();
      removeDir();
      process.off('exit', removeDir);
    };
    try {
      net = await createLocalNet();
      cp = await startControlPlane(net.hostIp);
      const c = { kubeconfigPath: cp.env.kubeconfigPath };
      // Bootstrap RBAC keeps the system:node role but binds it to nobody (the Node authorizer took
      // over); the harness runs RBAC only, so the nodes' group gets the role as in pre-1.8 clusters.
      await kubectl(c, [
        'create',
        'clusterrolebinding',
        'tpfleet-local-real-nodes',
        '--clusterrole=system:node',
        '--group=system:nodes',
      ]);
      const simulated = nodes.filter((n) => n.role === 'control-plane');
      if (simulated.length) kwok = await startKwok(c, simulated, dir);
      const workers = nodes.filter((n) => n.role === 'worker');
      const url = new URL(cp.env.server);
      const apiServer = { host: url.hostname, port: Number(url.port) };
      for (const [i, n] of workers.entries()) {
        const labels = Object.fromEntries(Object.entries(kindNodeLabels(n)).filter(([k]) => !selfLabel(k)));
        real.push(
          await startRealNode({
            name: n.name,
            index: i,
            dir,
            bin,
            kubeconfig: await nodeKubeconfig(cp, n.name),
            caCert: cp.env.pki.caCert,
            sandboxImage: pause.ref,
            labels,
            taints: [],
            apiServer,
          }),
        );
      }
      for (const n of real) await n.ctr(['images', 'import', pause.archive]);
      await waitNodesReady(c, real);
      // The same custom-metrics test adapter as `local` (in the control plane's namespace), so the
      // HPA path runs here with exact values; autoscale.test.ts leaves it out and serves the real
      // sidecars' metrics through Prometheus and prometheus-adapter instead.
      if (opts.testMetricsAdapter ?? true) adapter = await startMetricsAdapter(cp.env, net);
      const procs = [
        ...cp.procs.values(),
        ...(kwok ? [kwok] : []),
        ...(adapter ? [adapter.proc] : []),
        ...real.flatMap((n) => [n.containerd, n.kubelet]),
      ];
      return {
        provider: 'local-real',
        kubeconfigPath: c.kubeconfigPath,
        dir,
        real,
        capabilities: { runsPods: true, realDataPath: true, settableMetrics: adapter !== undefined },
        nodes: nodes as ClusterNode[],
        pids: [...cp.env.pids, ...procs.map((p) => p.pid!)],
        async loadImages(images: readonly BuiltImage[]) {
          // One node's imports in sequence, the nodes in parallel (each has its own containerd).
          await Promise.all(
            real.map(async (n) => {
              for (const img of images) await n.ctr(['images', 'import', img.archive]);
            }),
          );
        },
        async nodeExec(node, argv) {
          const n = real.find((r) => r.name === node);
          if (!n)
            throw new Error(`local-real: ${node} is not a real node (real: ${real.map((r) => r.name).join(', ')})`);
          return n.exec(argv);
        },
        ...(adapter ? { setPodMetric: adapter.setPodMetric } : {}),
        delete: teardown,
      };
    } catch (e) {
      await teardown();
      throw e;
    }
  },
};
