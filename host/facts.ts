// I/O: reads the node facts the affinity planner needs into a plain, JSON-serialisable object.
// Everything is read below `root` ("/" on a node, a fixture tree in tests, or a host mount such as
// /host in a pod), so the planner's golden tests run on recorded trees. Missing files degrade to
// conservative defaults (one NUMA node, no siblings, no IRQs) rather than failing.
// Note: /proc/net/* and /sys/class/net are those of the reader's network namespace, and irqbalance
// is only visible with the host's PID namespace (hostPID) and /etc.
import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { cpuList, cpuMask, type CpuSet } from './cpulist.ts';
import { interfaceQueueIrqs, parseInterrupts, type QueueIrq } from './interrupts.ts';

export interface InterfaceFacts {
  name: string;
  driver: string | null;
  /** NUMA node of the NIC's PCI function; -1 when the platform does not say. */
  numaNode: number;
  rxQueues: string[];
  txQueues: string[];
  queueIrqs: QueueIrq[];
  /** Current smp_affinity_list of each queue IRQ. */
  irqAffinity: Record<string, string>;
}

export interface IrqbalanceFacts {
  running: boolean;
  pid: number | null;
  bannedCpus: CpuSet;
  bannedIrqs: number[];
  /** Where the banned settings were found (environment of the process, its argv, config files). */
  sources: string[];
}

export interface NodeFacts {
  onlineCpus: CpuSet;
  /** nr_cpu_ids: width of the kernel's CPU masks. */
  possibleCpus: number;
  numaNodes: { id: number; cpus: CpuSet }[];
  /** thread_siblings_list per online CPU (itself included). */
  siblings: Record<string, CpuSet>;
  defaultRouteInterfaces: string[];
  interfaces: Record<string, InterfaceFacts>;
  irqbalance: IrqbalanceFacts;
  rpsSockFlowEntries: number | null;
}

const read = (root: string, path: string): string | undefined => {
  try {
    return readFileSync(join(root, path), 'utf8');
  } catch {
    return undefined;
  }
};
const list = (root: string, path: string): string[] => {
  try {
    return readdirSync(join(root, path)).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  } catch {
    return [];
  }
};

export function readNodeFacts(root = '/', wantInterfaces: string[] = []): NodeFacts {
  const online = cpuList(read(root, 'sys/devices/system/cpu/online') ?? '0');
  const possible = cpuList(read(root, 'sys/devices/system/cpu/possible') ?? formatRange(online));
  const siblings: Record<string, CpuSet> = {};
  for (const c of online)
    siblings[c] = cpuList(read(root, `sys/devices/system/cpu/cpu${c}/topology/thread_siblings_list`) ?? String(c));
  let numaNodes = list(root, 'sys/devices/system/node')
    .filter((n) => /^node\d+$/.test(n))
    .map((n) => ({ id: Number(n.slice(4)), cpus: cpuList(read(root, `sys/devices/system/node/${n}/cpulist`) ?? '') }));
  if (numaNodes.length === 0) numaNodes = [{ id: 0, cpus: online }];
  const defaultRouteInterfaces = readDefaultRoutes(root);
  const names = new Set([
    ...wantInterfaces,
    ...defaultRouteInterfaces,
    ...list(root, 'sys/class/net').filter((n) => read(root, `sys/class/net/${n}/device/uevent`) !== undefined),
  ]);
  const irqLines = parseInterrupts(read(root, 'proc/interrupts') ?? '');
  const interfaces: Record<string, InterfaceFacts> = {};
  for (const name of [...names].sort()) {
    if (list(root, `sys/class/net/${name}`).length === 0) continue;
    const dev = deviceDirs(root, name);
    // The device's own vectors; a virtio device has none and uses its PCI parent's.
    const msi = (dev.map((d) => list('/', join(d, 'msi_irqs'))).find((l) => l.length > 0) ?? [])
      .map(Number)
      .filter(Number.isInteger);
    const numa = dev.map((d) => read('/', join(d, 'numa_node'))).find((t) => t !== undefined);
    const queues = list(root, `sys/class/net/${name}/queues`);
    const queueIrqs = interfaceQueueIrqs(name, irqLines, msi.length ? msi : undefined);
    const irqAffinity: Record<string, string> = {};
    for (const q of queueIrqs) irqAffinity[q.irq] = (read(root, `proc/irq/${q.irq}/smp_affinity_list`) ?? '').trim();
    interfaces[name] = {
      name,
      driver: driverName(root, name),
      numaNode: numa === undefined ? -1 : Number(numa.trim()),
      rxQueues: queues.filter((q) => q.startsWith('rx-')),
      txQueues: queues.filter((q) => q.startsWith('tx-')),
      queueIrqs,
      irqAffinity,
    };
  }
  const flow = read(root, 'proc/sys/net/core/rps_sock_flow_entries');
  return {
    onlineCpus: online,
    possibleCpus: (possible[possible.length - 1] ?? 0) + 1,
    numaNodes,
    siblings,
    defaultRouteInterfaces,
    interfaces,
    irqbalance: readIrqbalance(root),
    rpsSockFlowEntries: flow === undefined ? null : Number(flow.trim()),
  };
}

const formatRange = (cpus: CpuSet): string => (cpus.length ? `0-${cpus[cpus.length - 1]}` : '0');

/** The device directory and, for virtio, its PCI parent (where msi_irqs and numa_node live). */
function deviceDirs(root: string, ifname: string): string[] {
  try {
    const dev = realpathSync(join(root, 'sys/class/net', ifname, 'device'));
    return [dev, dirname(dev)];
  } catch {
    return [];
  }
}

function driverName(root: string, ifname: string): string | null {
  try {
    return basename(readlinkSync(join(root, 'sys/class/net', ifname, 'device/driver')));
  } catch {
    return null;
  }
}

/** Interfaces holding an IPv4 or IPv6 default route (in the reader's netns). */
function readDefaultRoutes(root: string): string[] {
  const out = new Set<string>();
  for (const line of (read(root, 'proc/net/route') ?? '').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[1] === '00000000' && f[7] === '00000000') out.add(f[0]!);
  }
  for (const line of (read(root, 'proc/net/ipv6_route') ?? '').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 10 && /^0{32}$/.test(f[0]!) && f[1] === '00' && f[9] !== 'lo') out.add(f[9]!);
  }
  return [...out].sort();
}

function parseEnv(text: string, sep: RegExp): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split(sep)) {
    const m = /^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*)$/.exec(raw);
    if (m)
      env[m[1]!] = m[2]!
        .trim()
        .replace(/^"(.*)"$/, '$1')
        .replace(/^'(.*)'$/, '$1');
  }
  return env;
}

function bannedIrqsOf(args: string[]): number[] {
  const out: number[] = [];
  args.forEach((a, i) => {
    const m = /^--banirq=(\d+)$/.exec(a) ?? (/^(?:-i|--banirq)$/.test(a) ? /^(\d+)$/.exec(args[i + 1] ?? '') : null);
    if (m) out.push(Number(m[1]));
  });
  return out;
}

/** irqbalance: the running process (its environment and argv win), else the packaged config files. */
function readIrqbalance(root: string): IrqbalanceFacts {
  const pid = list(root, 'proc')
    .filter((p) => /^\d+$/.test(p))
    .find((p) => read(root, `proc/${p}/comm`)?.trim() === 'irqbalance');
  const sources: string[] = [];
  let env: Record<string, string> = {},
    args: string[] = [];
  if (pid) {
    env = parseEnv(read(root, `proc/${pid}/environ`) ?? '', /\0/);
    args = (read(root, `proc/${pid}/cmdline`) ?? '').split('\0').filter(Boolean);
    sources.push(`/proc/${pid}/environ`, `/proc/${pid}/cmdline`);
  } else {
    for (const f of ['etc/default/irqbalance', 'etc/sysconfig/irqbalance']) {
      const t = read(root, f);
      if (t === undefined) continue;
      env = { ...parseEnv(t, /\n/), ...env };
      sources.push(`/${f}`);
    }
    args = (env.IRQBALANCE_ARGS ?? '').split(/\s+/).filter(Boolean);
  }
  let bannedCpus: CpuSet = [];
  if (env.IRQBALANCE_BANNED_CPULIST) bannedCpus = cpuList(env.IRQBALANCE_BANNED_CPULIST);
  else if (env.IRQBALANCE_BANNED_CPUS) bannedCpus = cpuMask(env.IRQBALANCE_BANNED_CPUS);
  return {
    running: pid !== undefined,
    pid: pid === undefined ? null : Number(pid),
    bannedCpus,
    bannedIrqs: bannedIrqsOf(args),
    sources,
  };
}
