// Writes the /proc + /sys fixture trees the planner's golden tests read (only the files
// readNodeFacts opens, laid out like the kernel's, symlinks included).
//   make-fixtures.ts synth              the two bare-metal trees, from the descriptions below
//   make-fixtures.ts record vm-virtio1  records THIS machine (a 2-vCPU virtio VM) into a tree
// The bare-metal trees are modelled on real machines (a 2-socket Xeon with an ixgbe NIC on the
// second socket, an 8-core SMT box with a ConnectX mlx5 NIC); their /proc/interrupts lines use the
// drivers' real vector names.
import { mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuList } from '../cpulist.ts';

const HERE = dirname(fileURLToPath(import.meta.url));

interface Nic { name: string; pci: string; virtio?: string; driver: string; bus: string; numa: number; rx: number; tx: number; vectors: string[]; firstIrq: number; defaultRoute: boolean }
interface Machine {
  online: string; nodes: string[]; siblings: (cpu: number) => string; nics: Nic[];
  irqbalance?: { pid: number; environ: string[]; cmdline: string[] }; etc?: Record<string, string>;
}

function put(root: string, path: string, text: string): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), text);
}
function link(root: string, path: string, target: string): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  symlinkSync(target, join(root, path));
}

function writeMachine(root: string, m: Machine): void {
  rmSync(root, { recursive: true, force: true });
  const online = cpuList(m.online);
  put(root, 'sys/devices/system/cpu/online', `${m.online}\n`);
  put(root, 'sys/devices/system/cpu/possible', `${m.online}\n`);
  for (const c of online) put(root, `sys/devices/system/cpu/cpu${c}/topology/thread_siblings_list`, `${m.siblings(c)}\n`);
  m.nodes.forEach((cpus, i) => put(root, `sys/devices/system/node/node${i}/cpulist`, `${cpus}\n`));
  const cols = online.map((c) => `CPU${c}`.padStart(11)).join('');
  const lines = [`${' '.repeat(4)}${cols}`, `   0:${online.map((c) => String(c === 0 ? 35 : 0).padStart(11)).join('')}   IO-APIC   2-edge      timer`];
  let route = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n';
  for (const n of m.nics) {
    const pciDir = `sys/devices/${n.pci}`;
    const devDir = n.virtio ? `${pciDir}/${n.virtio}` : pciDir;
    put(root, `${pciDir}/numa_node`, `${n.numa}\n`);
    const netDir = `${devDir}/net/${n.name}`;
    for (let q = 0; q < n.rx; q++) { put(root, `${netDir}/queues/rx-${q}/rps_cpus`, '0\n'); put(root, `${netDir}/queues/rx-${q}/rps_flow_cnt`, '0\n'); }
    for (let q = 0; q < n.tx; q++) put(root, `${netDir}/queues/tx-${q}/xps_cpus`, '0\n');
    link(root, `sys/class/net/${n.name}`, relative(join(root, 'sys/class/net'), join(root, netDir)));
    link(root, `${netDir}/device`, relative(join(root, netDir), join(root, devDir)));
    put(root, `${devDir}/uevent`, `DRIVER=${n.driver}\n`);
    link(root, `${devDir}/driver`, relative(join(root, devDir), join(root, `sys/bus/${n.bus}/drivers/${n.driver}`)));
    n.vectors.forEach((v, i) => {
      const irq = n.firstIrq + i;
      put(root, `${pciDir}/msi_irqs/${irq}`, 'msix\n');
      put(root, `proc/irq/${irq}/smp_affinity_list`, `${m.online}\n`);
      const counts = online.map((c) => String((irq * 7919 + c * 104729) % 100000).padStart(11)).join('');
      lines.push(`${String(irq).padStart(4)}:${counts}  IR-PCI-MSIX-0000:${n.pci.split('/').pop()!.slice(5)} ${i}-edge      ${v}`);
    });
    if (n.defaultRoute) route += `${n.name}\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n`;
  }
  lines.push(`NMI:${online.map(() => '0'.padStart(11)).join('')}   Non-maskable interrupts`);
  put(root, 'proc/interrupts', lines.join('\n') + '\n');
  put(root, 'proc/net/route', route);
  put(root, 'proc/sys/net/core/rps_sock_flow_entries', '0\n');
  if (m.irqbalance) {
    const p = m.irqbalance;
    put(root, `proc/${p.pid}/comm`, 'irqbalance\n');
    put(root, `proc/${p.pid}/environ`, p.environ.map((e) => `${e}\0`).join(''));
    put(root, `proc/${p.pid}/cmdline`, p.cmdline.map((e) => `${e}\0`).join(''));
  }
  put(root, 'proc/1/comm', 'systemd\n');
  for (const [f, t] of Object.entries(m.etc ?? {})) put(root, f, t);
}

const range = (n: number, f: (i: number) => string): string[] => Array.from({ length: n }, (_, i) => f(i));

/** 2 sockets x 8 cores x 2 threads; ixgbe dual port on socket 1 (16 combined queues each); irqbalance running, nothing banned. */
const numa2: Machine = {
  online: '0-31', nodes: ['0-7,16-23', '8-15,24-31'], siblings: (c) => `${c % 16},${(c % 16) + 16}`,
  nics: [
    { name: 'ens1f0', pci: 'pci0000:80/0000:80:02.0/0000:81:00.0', driver: 'ixgbe', bus: 'pci', numa: 1, rx: 16, tx: 16, firstIrq: 120, defaultRoute: true, vectors: [...range(16, (i) => `ens1f0-TxRx-${i}`), 'ens1f0'] },
    { name: 'ens1f1', pci: 'pci0000:80/0000:80:02.0/0000:81:00.1', driver: 'ixgbe', bus: 'pci', numa: 1, rx: 16, tx: 16, firstIrq: 140, defaultRoute: false, vectors: [...range(16, (i) => `ens1f1-TxRx-${i}`), 'ens1f1'] },
  ],
  irqbalance: { pid: 812, environ: ['PATH=/usr/sbin:/usr/bin', 'IRQBALANCE_ARGS='], cmdline: ['/usr/sbin/irqbalance', '--foreground'] },
};

/** 1 socket, 8 cores x 2 threads (siblings n, n+8); ConnectX (mlx5) with 8 channels; irqbalance installed, not running. */
const ht8: Machine = {
  online: '0-15', nodes: ['0-15'], siblings: (c) => `${c % 8},${(c % 8) + 8}`,
  nics: [{
    name: 'enp1s0f0np0', pci: 'pci0000:00/0000:00:01.1/0000:01:00.0', driver: 'mlx5_core', bus: 'pci', numa: 0, rx: 8, tx: 8, firstIrq: 60, defaultRoute: true,
    vectors: ['mlx5_async0@pci:0000:01:00.0', ...range(8, (i) => `mlx5_comp${i}@pci:0000:01:00.0`)],
  }],
  etc: { 'etc/default/irqbalance': '#IRQBALANCE_ONESHOT=\nIRQBALANCE_BANNED_CPULIST=0\nIRQBALANCE_ARGS="--banirq=61"\n' },
};

/** Copies this machine's files (the ones readNodeFacts reads) for its default-route interfaces. */
function record(root: string): void {
  rmSync(root, { recursive: true, force: true });
  const copy = (p: string) => { try { put(root, p, readFileSync(`/${p}`, 'utf8')); } catch { /* absent here */ } };
  for (const f of ['sys/devices/system/cpu/online', 'sys/devices/system/cpu/possible', 'proc/interrupts', 'proc/net/route', 'proc/net/ipv6_route', 'proc/sys/net/core/rps_sock_flow_entries', 'etc/default/irqbalance']) copy(f);
  for (const c of cpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8'))) copy(`sys/devices/system/cpu/cpu${c}/topology/thread_siblings_list`);
  for (const n of readdirSync('/sys/devices/system/node').filter((x) => /^node\d+$/.test(x))) copy(`sys/devices/system/node/${n}/cpulist`);
  const ifs = new Set(readFileSync('/proc/net/route', 'utf8').split('\n').slice(1).map((l) => l.split('\t')).filter((f) => f[1] === '00000000').map((f) => f[0]!));
  for (const name of ifs) {
    const netDir = realpathSync(`/sys/class/net/${name}`).slice(1), devDir = realpathSync(`/sys/class/net/${name}/device`).slice(1);
    link(root, `sys/class/net/${name}`, relative(join(root, 'sys/class/net'), join(root, netDir)));
    link(root, `${netDir}/device`, relative(join(root, netDir), join(root, devDir)));
    copy(`${devDir}/uevent`);
    link(root, `${devDir}/driver`, readlinkSync(`/${devDir}/driver`));
    for (const d of [devDir, dirname(devDir)]) {
      copy(`${d}/numa_node`);
      let msi: string[] = [];
      try { msi = readdirSync(`/${d}/msi_irqs`); } catch { /* none */ }
      for (const irq of msi) { copy(`${d}/msi_irqs/${irq}`); copy(`proc/irq/${irq}/smp_affinity_list`); }
    }
    for (const q of readdirSync(`/${netDir}/queues`)) {
      mkdirSync(join(root, netDir, 'queues', q), { recursive: true });
      // tx_timeout is always readable: it keeps a tx queue whose xps_cpus the kernel refuses to show
      // (single-queue virtio) from being an empty directory, which git would not record.
      for (const f of ['rps_cpus', 'rps_flow_cnt', 'xps_cpus', 'tx_timeout']) copy(`${netDir}/queues/${q}/${f}`);
    }
  }
}

const [cmd, name] = process.argv.slice(2);
if (cmd === 'synth') {
  writeMachine(join(HERE, 'numa2-ixgbe', 'root'), numa2);
  writeMachine(join(HERE, 'ht8-mlx5', 'root'), ht8);
} else if (cmd === 'record' && name) {
  record(join(HERE, name, 'root'));
} else {
  console.error('usage: make-fixtures.ts synth | record <name>');
  process.exitCode = 2;
}

