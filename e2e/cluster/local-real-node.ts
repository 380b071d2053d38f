// One local-real node: a network namespace wired to the host by a veth (local-net.ts), its own
// containerd and its own kubelet, both entered with `nsenter` into that namespace and into one
// mount namespace of the node's (not `ip netns exec`, which would give each its own: the
// kubelet's volume mounts must be visible to containerd's runc). containerd is moved into the node's cgroup right after
// start, so every shim and container it forks is in <controller>/<cgroupRoot>: teardown kills
// what that tree holds, unmounts what the node left under its directory, removes the cgroups,
// then the namespace. Invariant: destroy() touches only this node's pids, mounts, cgroups and
// names, is idempotent, and also runs from the process exit hook.
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { NODE_STATE_COPY_DIR, NODE_STATE_DIR } from '../../api/defaults.ts';
import { KUBERNETES_SERVICE_IP, startProcess, stopProcess, tail } from '../testenv/testenv.ts';
import { createLocalNet, type LocalNet } from './local-net.ts';
import { cniConfig, containerdConfig, kubeletConfig, type NodePaths } from './local-real-config.ts';

const run = promisify(execFile);
const CGROUP_FS = '/sys/fs/cgroup';

export interface RealNode {
  name: string;
  net: LocalNet;
  paths: NodePaths;
  containerd: ChildProcess;
  kubelet: ChildProcess;
  logs: { containerd: string; kubelet: string };
  /** Runs argv on the node's host: its network and mount namespaces. */
  exec(argv: readonly string[]): Promise<string>;
  /** `ctr` against the node's containerd (k8s.io namespace). */
  ctr(args: readonly string[]): Promise<string>;
  destroy(): Promise<void>;
}

export interface NodeSpec {
  name: string;
  index: number;
  dir: string;
  bin: string;
  kubeconfig: string;
  caCert: string;
  sandboxImage: string;
  labels: Record<string, string>;
  taints: { key: string; effect: string }[];
  /** Where the API server listens (host side of the control plane's veth). */
  apiServer: { host: string; port: number };
}

/**
 * No kube-proxy: the node's own nft table sends the `kubernetes` Service's ClusterIP to the API
 * server, for hostNetwork pods (output) and pods on their veths (prerouting). Static, so a node's
 * ruleset before and after the product ran differs only by what the product did.
 */
function serviceNatRules(api: { host: string; port: number }): string {
  const rule = `ip daddr ${KUBERNETES_SERVICE_IP} tcp dport 443 dnat to ${api.host}:${api.port}`;
  return [
    'table ip tpfleet-local-real {',
    `  chain prerouting { type nat hook prerouting priority dstnat; policy accept; ${rule}; }`,
    `  chain output { type nat hook output priority -100; policy accept; ${rule}; }`,
    '}',
    '',
  ].join('\n');
}

/** Mounted cgroup hierarchies: /sys/fs/cgroup itself on a v2-only host, else each v1/hybrid mount. */
function hierarchies(): string[] {
  if (existsSync(join(CGROUP_FS, 'cgroup.procs'))) return [CGROUP_FS];
  return readdirSync(CGROUP_FS)
    .map((h) => join(CGROUP_FS, h))
    .filter((d) => existsSync(join(d, 'cgroup.procs')));
}

/** The cgroup `root` (e.g. /tpf-1-0) in every hierarchy where it exists. */
function cgroupDirs(root: string): string[] {
  return hierarchies()
    .map((h) => join(h, root))
    .filter((d) => existsSync(d));
}

/** Every cgroup under `dir`, deepest first (rmdir order). */
function cgroupTree(dir: string): string[] {
  const subs = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => join(dir, e.name));
  return [...subs.flatMap(cgroupTree), dir];
}

function pidsIn(dirs: string[]): number[] {
  const pids = new Set<number>();
  for (const d of dirs) {
    for (const c of cgroupTree(d)) {
      try {
        for (const l of readFileSync(join(c, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.add(Number(l));
      } catch {
        /* gone */
      }
    }
  }
  return [...pids];
}

/**
 * The listening sockets of the node's shims: a shim binds /run/containerd/s/<hash> (a host-wide
 * directory whatever containerd's state dir) and only removes it on a clean exit, so teardown
 * collects them before SIGKILL and unlinks them after.
 */
function shimSockets(pids: number[], shimBin: string): string[] {
  const paths: string[] = [];
  for (const pid of pids) {
    try {
      if (readlinkSync(`/proc/${pid}/exe`) !== shimBin) continue;
      const inodes = new Set(
        readdirSync(`/proc/${pid}/fd`)
          .map((fd) => {
            try {
              return readlinkSync(`/proc/${pid}/fd/${fd}`);
            } catch {
              return '';
            }
          })
          .map((l) => /^socket:\[(\d+)\]$/.exec(l)?.[1])
          .filter(Boolean),
      );
      for (const line of readFileSync(`/proc/${pid}/net/unix`, 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f[6] && inodes.has(f[6]) && f[7]?.startsWith('/run/containerd/s/')) paths.push(f[7]);
      }
    } catch {
      /* exited */
    }
  }
  return paths;
}

/** Kills everything in the node's cgroups (shims, containers), then removes the cgroups. */
function cleanCgroups(root: string, shimBin: string): void {
  const sockets = shimSockets(pidsIn(cgroupDirs(root)), shimBin);
  for (let i = 0; i < 50; i++) {
    const pids = pidsIn(cgroupDirs(root));
    if (pids.length === 0) break;
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* exited */
      }
    }
    execFileSync('sleep', ['0.1']);
  }
  for (const d of cgroupDirs(root))
    for (const c of cgroupTree(d)) {
      try {
        rmdirSync(c);
      } catch {
        /* busy or gone */
      }
    }
  for (const s of sockets) rmSync(s, { force: true });
}

/** Mount points under `dir` (this host's mount table), deepest first. */
function mountsUnder(dir: string): string[] {
  const unoctal = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => unoctal(l.split(' ')[4]!))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

function unmountAll(dir: string): void {
  for (let i = 0; i < 5; i++) {
    const ms = mountsUnder(dir);
    if (ms.length === 0) return;
    for (const m of ms) {
      try {
        execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
  }
}

/** libcni's result cache entries of our network (a SIGKILLed containerd never tore its pods down). */
function removeCniCache(prefix: string): void {
  const d = '/var/lib/cni/results';
  try {
    for (const f of readdirSync(d)) if (f.startsWith(prefix)) rmSync(join(d, f), { force: true });
  } catch {
    /* no cache dir */
  }
}

/**
 * Host paths each node gets its own copy of, as every kind node has its own root filesystem.
 * /run/tpfleet and /var/lib/tpfleet: the agent's state and its copy (hostPaths, ADR 0015), which
 * would otherwise be one directory for all nodes: one node's cleanup would consume another's state,
 * and each node's janitor would take the others' copies for leftovers of its own. The other
 * two are compiled into the kubelet, whatever its --root-dir: the device-plugin registration socket
 * (/var/lib/kubelet/device-plugins/kubelet.sock; each kubelet empties the directory, then binds:
 * two kubelets starting together race to "bind: address already in use" and one exits) and the
 * container-log symlinks (/var/log/containers, which each kubelet's GC prunes of links to
 * containers it does not know, i.e. every other node's).
 */
const NODE_PRIVATE_PATHS = [
  NODE_STATE_DIR,
  NODE_STATE_COPY_DIR,
  '/var/lib/kubelet/device-plugins',
  '/var/log/containers',
];

/**
 * A persistent mount namespace for the node (a slave of the host's: host mounts still appear in
 * it, its own never leak out), with NODE_PRIVATE_PATHS bind-mounted from the node's directory.
 * containerd and the kubelet both run in it, so the kubelet's volume mounts are runc's too;
 * they all go away with the namespace once its processes are dead and `file` is unmounted.
 */
async function nodeMountNs(dir: string): Promise<string> {
  const holder = join(dir, 'mntns');
  mkdirSync(holder);
  // An nsfs bind mount needs a parent mount that does not propagate (else it would loop into the new namespace).
  await run('mount', ['--bind', holder, holder]);
  await run('mount', ['--make-private', holder]);
  const file = join(holder, 'mnt');
  writeFileSync(file, '');
  await run('unshare', [`--mount=${file}`, '--propagation', 'slave', 'true']);
  for (const p of NODE_PRIVATE_PATHS) {
    const src = join(dir, 'host', p);
    mkdirSync(src, { recursive: true });
    mkdirSync(p, { recursive: true }); // the mount point (an empty directory on the host)
    await run('nsenter', [`--mount=${file}`, '--', 'mount', '--bind', src, p]);
  }
  return file;
}

/**
 * Moves `pid` into <hierarchy>/<id>/<leaf> in every hierarchy (named ones included): what it
 * forks (containerd's shims and containers) inherits the whole set, so teardown, or a later
 * run's sweepStale(), finds every process of the node there.
 */
function joinCgroup(id: string, leaf: string, pid: number): void {
  for (const h of hierarchies()) {
    const c = join(h, id, leaf);
    mkdirSync(c, { recursive: true });
    try {
      writeFileSync(join(c, 'cgroup.procs'), String(pid));
    } catch {
      /* a hierarchy refusing the move: the others still hold the pid */
    }
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Removes what a run that died without its exit hooks (SIGKILL) left: its nodes' processes and
 * cgroups (named tpf-<pid>-<n>), mounts and directories (<tmp>/tpfleet-real-<pid>-*) and CNI
 * cache entries, and its nodes' network namespaces and veths (local-net's names: tpf-local-<pid>x<n>,
 * tpl<pid>x<n>h; pid_max is below 100000 here, so the name holds the whole pid), for pids no
 * longer alive. Without it, a dead run's pod-CIDR routes would block the next run's.
 */
export function sweepStale(tmp: string, bin: string): void {
  const dead = (name: string, re: RegExp) => {
    const m = re.exec(name);
    return m && !alive(Number(m[1])) ? m[0] : null;
  };
  const roots = new Set(
    hierarchies().flatMap((h) =>
      readdirSync(h)
        .map((e) => dead(e, /^tpf-(\d+)-\d+$/))
        .filter((x): x is string => !!x),
    ),
  );
  for (const r of roots) {
    cleanCgroups(`/${r}`, join(bin, 'containerd-shim-runc-v2'));
    removeCniCache(`tpfleet-${r}-`);
  }
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!);
  for (const ns of netns.filter((n) => dead(n, /^tpf-local-(\d+)x\d+$/))) {
    for (const argv of [
      ['link', 'del', `tpl${ns.slice('tpf-local-'.length)}h`],
      ['netns', 'del', ns],
    ]) {
      try {
        execFileSync('ip', argv, { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
  }
  for (const d of readdirSync(tmp).filter((e) => dead(e, /^tpfleet-real-(\d+)-/))) {
    unmountAll(join(tmp, d));
    rmSync(join(tmp, d), { recursive: true, force: true });
  }
}

const liveNodes = new Map<string, () => void>();
process.on('exit', () => {
  for (const f of liveNodes.values()) f();
});

async function waitFile(path: string, child: ChildProcess, log: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`exited (${child.exitCode ?? child.signalCode}):\n${tail(log)}`);
    if (Date.now() > deadline) throw new Error(`no ${path} after ${timeoutMs} ms:\n${tail(log)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts one node; the caller waits for its Node object to become Ready. */
export async function startRealNode(s: NodeSpec): Promise<RealNode> {
  const dir = join(s.dir, s.name);
  mkdirSync(dir, { recursive: true });
  const id = `tpf-${process.pid}-${s.index}`; // the pid lets sweepStale() tell a dead run's leftovers
  let net: LocalNet | undefined;
  const procs: ChildProcess[] = [];
  let destroyed = false;
  const syncTeardown = () => {
    for (const p of procs.reverse()) {
      try {
        p.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    cleanCgroups(`/${id}`, join(s.bin, 'containerd-shim-runc-v2'));
    unmountAll(dir);
    rmSync(dir, { recursive: true, force: true });
    removeCniCache(`tpfleet-${id}-`);
  };
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    for (const p of [...procs].reverse()) await stopProcess(p);
    syncTeardown();
    await net?.destroy();
    liveNodes.delete(id);
  };
  liveNodes.set(id, syncTeardown);
  try {
    net = await createLocalNet();
    const ns = net.ns;
    // The node reaches the control plane (and anything else on the host) through its veth.
    await run('ip', ['-n', ns, 'route', 'add', 'default', 'via', net.hostIp]);
    const paths: NodePaths = {
      name: s.name,
      dir,
      socket: join(dir, 'containerd.sock'),
      bin: s.bin,
      nodeIp: net.nsIp,
      podCidr: `10.244.${s.index + 1}.0/24`,
      cgroupRoot: `/${id}`,
      cniNetwork: `tpfleet-${id}`,
      caCert: s.caCert,
      sandboxImage: s.sandboxImage,
    };
    // Pod addresses are routed, not masqueraded: the host routes each node's pod CIDR via that
    // node (the API server's pods/proxy, pod-to-pod across nodes) and forwards what arrives on
    // the node's veth. Per-interface forwarding only: the host's global ip_forward is untouched,
    // and the setting goes with the veth.
    await run('ip', ['route', 'replace', paths.podCidr, 'via', net.nsIp]);
    const hostDev = (await run('ip', ['-o', '-4', 'addr', 'show', 'to', `${net.hostIp}/32`])).stdout.split(/\s+/)[1];
    if (!hostDev) throw new Error(`local-real: no host interface has ${net.hostIp}`);
    writeFileSync(`/proc/sys/net/ipv4/conf/${hostDev}/forwarding`, '1');
    writeFileSync(join(dir, 'service-nat.nft'), serviceNatRules(s.apiServer));
    await run('ip', ['netns', 'exec', ns, 'nft', '-f', join(dir, 'service-nat.nft')]);
    mkdirSync(join(dir, 'cni'), { recursive: true });
    writeFileSync(join(dir, 'containerd.toml'), containerdConfig(paths));
    writeFileSync(join(dir, 'cni', '10-ptp.conflist'), cniConfig(paths));
    writeFileSync(join(dir, 'resolv.conf'), readFileSync('/etc/resolv.conf'));
    const nsPath = `/run/netns/${ns}`;
    const mntNs = await nodeMountNs(dir);
    const enter = [`--mount=${mntNs}`, `--net=${nsPath}`, '--'];
    const logs = { containerd: join(dir, 'containerd.log'), kubelet: join(dir, 'kubelet.log') };
    const containerd = startProcess(
      'nsenter',
      [...enter, join(s.bin, 'containerd'), '--config', join(dir, 'containerd.toml')],
      logs.containerd,
    );
    procs.push(containerd);
    joinCgroup(id, 'runtime', containerd.pid!);
    await waitFile(paths.socket, containerd, logs.containerd, 30_000);
    const ctr = async (args: readonly string[]) =>
      (await run(join(s.bin, 'ctr'), ['--address', paths.socket, '-n', 'k8s.io', ...args], { maxBuffer: 16 << 20 }))
        .stdout;
    const kubeletYaml = join(dir, 'kubelet.yaml');
    writeFileSync(kubeletYaml, stringify(kubeletConfig(paths, s.taints)));
    const kubelet = startProcess(
      'nsenter',
      [
        ...enter,
        join(s.bin, 'kubelet'),
        `--config=${kubeletYaml}`,
        `--kubeconfig=${s.kubeconfig}`,
        `--root-dir=${join(dir, 'kubelet')}`,
        `--cert-dir=${join(dir, 'kubelet-pki')}`,
        `--hostname-override=${s.name}`,
        `--node-ip=${net.nsIp}`,
        `--node-labels=${Object.entries(s.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(',')}`,
        '--v=2',
      ],
      logs.kubelet,
    );
    procs.push(kubelet);
    joinCgroup(id, 'kubelet', kubelet.pid!);
    return {
      name: s.name,
      net,
      paths,
      containerd,
      kubelet,
      logs,
      ctr,
      destroy,
      exec: async (argv) => (await run('nsenter', [...enter, ...argv], { maxBuffer: 16 << 20 })).stdout,
    };
  } catch (e) {
    await destroy();
    throw e;
  }
}
