// The cluster behind `npm run cluster:up | cluster:down | cluster:status` and `npm run demo`: the
// local-real cluster (real control plane,
// the kind-config.yaml workers as real kubelets + containerd in network namespaces) for a person
// to use with kubectl and helm, with tpfleet installed by its chart from the locally built images.
//
// `up` starts a detached supervisor (`serve`) that owns every cluster process and returns once the
// cluster is ready, printing the kubeconfig path. `down` signals the supervisor, whose teardown
// removes every process, mount, cgroup, namespace and route (local-real.ts invariant).
// State lives in $TPFLEET_CACHE/cluster (state.json, supervisor.log, kubeconfig); a state file
// whose supervisor is gone (machine rebooted, process killed) is stale and ignored.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { buildImages } from '../../images/images.ts';
import { installChart } from './install.ts';
import { localRealProvider } from './local-real.ts';

const KIND_CONFIG = join(import.meta.dirname, '..', '..', 'kind-config.yaml');

export interface UpState {
  pid: number;
  kubeconfig: string;
  fleetNamespace: string;
  nodeImage: string;
  nodes: string[];
  started: string;
}

export function clusterDir(env: Record<string, string | undefined> = process.env): string {
  // TPFLEET_CLUSTER_DIR: a second state directory (the demo's own test uses one).
  return env.TPFLEET_CLUSTER_DIR ?? join(env.TPFLEET_CACHE ?? join(homedir(), '.cache', 'tpfleet'), 'cluster');
}
const paths = (dir: string) => ({
  state: join(dir, 'state.json'),
  log: join(dir, 'supervisor.log'),
  kubeconfig: join(dir, 'kubeconfig'),
  failed: join(dir, 'failed'),
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The running cluster's state, or undefined (none, or its supervisor is gone). */
export function readUp(dir = clusterDir()): UpState | undefined {
  const p = paths(dir);
  if (!existsSync(p.state)) return undefined;
  const s = JSON.parse(readFileSync(p.state, 'utf8')) as UpState;
  return alive(s.pid) ? s : undefined;
}

export function hints(s: UpState): string {
  return [
    `tpfleet cluster is up (local-real: nodes ${s.nodes.join(', ')}; supervisor pid ${s.pid})`,
    `kubeconfig: ${s.kubeconfig}`,
    '',
    `  export KUBECONFIG=${s.kubeconfig}`,
    '  kubectl get nodes -L tpfleet.io/proxy-candidate,topology.kubernetes.io/zone',
    `  kubectl apply -f operator/samples/minimal.yaml     # a TransparentProxy in ${s.fleetNamespace}`,
    `  kubectl get transparentproxies -n ${s.fleetNamespace} -w`,
    '  npm run cluster:down                               # removes everything it made',
  ].join('\n');
}

export async function up(dir = clusterDir()): Promise<number> {
  const running = readUp(dir);
  if (running) {
    console.log(hints(running));
    return 0;
  }
  const p = paths(dir);
  mkdirSync(dir, { recursive: true });
  for (const f of [p.state, p.failed]) rmSync(f, { force: true });
  const log = openSync(p.log, 'w');
  // Detached, in its own session: the cluster outlives this command and the terminal.
  const child = spawn(process.execPath, [...process.execArgv, join(import.meta.dirname, 'up.ts'), 'serve'], {
    detached: true,
    stdio: ['ignore', log, log],
    env: process.env,
  });
  child.unref();
  console.log(
    `starting the local-real cluster (supervisor pid ${child.pid}; log ${p.log}); the first run builds Kubernetes and the images (~20 min)`,
  );
  const deadline = Date.now() + 45 * 60_000;
  while (Date.now() < deadline) {
    const s = readUp(dir);
    if (s) {
      console.log(hints(s));
      return 0;
    }
    if (existsSync(p.failed) || !alive(child.pid!)) {
      console.error(
        `cluster:up failed; the end of ${p.log}:\n${readFileSync(p.log, 'utf8').split('\n').slice(-30).join('\n')}`,
      );
      return 1;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  console.error(`cluster:up: not ready after 45 min; see ${p.log}`);
  return 1;
}

export async function serve(dir = clusterDir()): Promise<void> {
  const p = paths(dir);
  const stamp = (m: string) => console.log(`${new Date().toISOString()} ${m}`);
  let teardown: (() => Promise<void>) | undefined;
  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    stamp(`stopping (${why}): removing the cluster`);
    rmSync(p.state, { force: true });
    await teardown?.();
    stamp('removed');
    process.exit(0);
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => void stop(sig));
  try {
    stamp('building the images (buildah; skipped when unchanged)');
    const built = await buildImages(['operator', 'node']);
    const images = {
      operator: built.find((b) => b.ref.includes('operator'))!,
      node: built.find((b) => b.ref.includes('node'))!,
    };
    stamp('starting the control plane and the real nodes');
    const c = await localRealProvider.create(KIND_CONFIG);
    teardown = () => c.delete();
    if (stopping) return;
    stamp('importing the images into every node');
    await c.loadImages([images.operator, images.node]);
    stamp('helm install');
    const inst = await installChart(c, images);
    copyFileSync(c.kubeconfigPath, p.kubeconfig);
    const state: UpState = {
      pid: process.pid,
      kubeconfig: p.kubeconfig,
      fleetNamespace: inst.fleetNamespace,
      nodeImage: inst.nodeImage,
      nodes: c.nodes.map((n) => n.name),
      started: new Date().toISOString(),
    };
    writeFileSync(p.state, JSON.stringify(state, null, 2));
    stamp('ready');
  } catch (e) {
    stamp(`failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    writeFileSync(p.failed, String(e));
    await stop('start-up failed');
  }
  // Stays alive: the cluster's processes are this process's children.
  setInterval(() => undefined, 1 << 30);
}

export async function down(dir = clusterDir()): Promise<number> {
  const s = readUp(dir);
  if (!s) {
    console.log('no tpfleet cluster is running');
    rmSync(paths(dir).state, { force: true });
    return 0;
  }
  process.kill(s.pid, 'SIGTERM');
  const deadline = Date.now() + 120_000;
  while (alive(s.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
  if (alive(s.pid)) {
    console.error(`the supervisor (pid ${s.pid}) did not stop within 2 min; see ${paths(dir).log}`);
    return 1;
  }
  console.log('tpfleet cluster removed');
  return 0;
}
