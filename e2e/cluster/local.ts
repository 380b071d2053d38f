// The `local` provider: a real control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, all built from their Go modules) whose nodes are played by kwok, plus the
// custom-metrics test adapter, so what the controllers do (DaemonSet scheduling across nodes,
// the HPA acting on a /scale subresource, node labels) is real, without Docker. Pods are never
// run (capabilities.runsPods false): kwok reports them Running and Ready once scheduled.
//
// Layout: local-net.ts (a netns + veth for the adapter; the API server binds the host side),
// local-controlplane.ts, local-kwok.ts (nodes), local-metrics.ts (adapter + APIServices).
// Invariant: delete() kills every process and removes every directory and interface made here;
// the harness's exit hooks do the same if the test process dies first.
import { execFile, type ChildProcess } from 'node:child_process';
import { stopProcess } from '../testenv/testenv.ts';
import { kindNodes } from './kind.ts';
import { startControlPlane, type ControlPlane } from './local-controlplane.ts';
import { startKwok } from './local-kwok.ts';
import { startMetricsAdapter } from './local-metrics.ts';
import { createLocalNet, type LocalNet } from './local-net.ts';
import type { Cluster, Provider } from './provider.ts';

/** Same name as the kind provider's cluster, so node names match across providers. */
export const CLUSTER_NAME = 'tpfleet-e2e';

/** A Cluster plus what its own test checks: delete() must leave none of these behind. */
export interface LocalCluster extends Cluster {
  /** Every process the cluster runs: etcd, kube-apiserver, kcm, scheduler, kwok, metrics adapter. */
  readonly pids: readonly number[];
  /** Directory holding the cluster's data, certificates and component logs (removed by delete()). */
  readonly dir: string;
  /** The network namespace and host address the provider added (removed by delete()). */
  readonly net: { readonly ns: string; readonly hostIp: string };
}

function hasCommand(cmd: string, args: string[]): Promise<boolean> {
  return new Promise((resolve) => execFile(cmd, args, (err) => resolve(!err)));
}

export interface LocalProvider extends Provider {
  create(kindConfigPath: string): Promise<LocalCluster>;
}

export const localProvider: LocalProvider = {
  name: 'local',
  async unavailable() {
    if (process.getuid?.() !== 0) return 'needs root (a network namespace for the custom-metrics adapter)';
    if (!(await hasCommand('ip', ['-V']))) return 'no `ip` command (iproute2)';
    if (!(await hasCommand('openssl', ['version']))) return 'no `openssl` command (test certificates)';
    return null;
  },

  async create(kindConfigPath) {
    const nodes = kindNodes(kindConfigPath, CLUSTER_NAME);
    let net: LocalNet | undefined, cp: ControlPlane | undefined;
    const extra: ChildProcess[] = [];
    let deleted = false;
    const teardown = async () => {
      if (deleted) return;
      deleted = true;
      for (const p of extra.reverse()) await stopProcess(p);
      await cp?.stop(); // kcm, scheduler, API server, etcd; then the data directory
      await net?.destroy();
    };
    try {
      net = await createLocalNet();
      cp = await startControlPlane(net.hostIp);
      const env = cp.env;
      const kwok = await startKwok(env, nodes, env.dir);
      extra.push(kwok);
      const adapter = await startMetricsAdapter(env, net);
      extra.push(adapter.proc);
      const all = [...cp.procs.values(), ...extra];
      return {
        provider: 'local',
        kubeconfigPath: env.kubeconfigPath,
        dir: env.dir,
        net: { ns: net.ns, hostIp: net.hostIp },
        capabilities: { runsPods: false, realDataPath: false, settableMetrics: true },
        nodes,
        pids: [...env.pids, ...all.map((p) => p.pid!)],
        // No-op by design: kwok nodes have no container runtime, so nothing ever pulls an image;
        // pods reach Running with whatever image reference they name. (runsPods is false, so the
        // suite runs the operator as a process instead of its container.)
        async loadImages() {},
        setPodMetric: adapter.setPodMetric,
        delete: teardown,
      };
    } catch (e) {
      await teardown();
      throw e;
    }
  },
};
