// Validation of the tuning record (tuning.json) before a privileged step restores from it (issue 12):
// the state directory is a hostPath, and whoever can write it would otherwise choose which file the
// next privileged cleanup writes and what. An entry is ours only if it names a path tpfleet itself
// writes: a /proc/sys key of the allowlist (api/tuning-sysctls.ts) or of the data path, the IRQ
// affinity of an interrupt this host has, or an RPS/XPS file of a queue of one of its interfaces;
// the value to restore is a kernel value's shape (numbers, words, CPU lists/masks), one line.
// Anything else is refused, reported, and never touched. Pure apart from existence checks.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { IFNAME } from '../../api/fields.ts';
import { SYSCTLS, SYSCTLS_OWNED_ELSEWHERE } from '../../api/tuning-sysctls.ts';

/** Sysctls the data path itself owns (daemonset/tuning-step.ts requiredWrites). */
export const DATA_PATH_SYSCTLS = ['net.ipv4.tcp_early_demux'] as const;

export const sysctlPath = (key: string): string => `/proc/sys/${key.replace(/\./g, '/')}`;

const OURS = new Set<string>([...Object.keys(SYSCTLS), ...Object.keys(SYSCTLS_OWNED_ELSEWHERE), ...DATA_PATH_SYSCTLS]);
const IRQ = /^\/proc\/irq\/(\d{1,6})\/smp_affinity_list$/;
const QUEUE = new RegExp(`^/sys/class/net/(${IFNAME})/queues/((rx|tx)-\\d{1,5})/(rps_cpus|rps_flow_cnt|xps_cpus)$`);
const VALUE = /^[0-9A-Za-z_,.:\- \t]{0,4096}$/;
const COMPARES = new Set(['words', 'cpulist', 'cpumask']);

export interface RecordEntry {
  path: string;
  compare: string;
  group: string;
  original: string;
  applied: string | null;
  guard?: string;
}

/** Why `key` → `e` is not an entry tpfleet could have written on this host, or undefined. */
export function foreignEntry(key: string, e: RecordEntry, root: string): string | undefined {
  if (typeof e?.path !== 'string' || typeof e.original !== 'string') return 'not a tuning entry';
  if (!COMPARES.has(e.compare)) return `unknown comparison ${JSON.stringify(e.compare)}`;
  if (!VALUE.test(e.original) || (e.applied !== null && !VALUE.test(String(e.applied))))
    return 'the value is not a kernel value (numbers, words, CPU lists or masks on one line)';
  if (e.path.startsWith('/proc/sys/')) {
    if (!OURS.has(key) || e.path !== sysctlPath(key)) return `${e.path} is not a sysctl tpfleet sets`;
    return e.guard === undefined ? undefined : 'a sysctl entry has no guard';
  }
  const irq = IRQ.exec(e.path);
  if (irq) {
    if (key !== `irq/${irq[1]}/smp_affinity_list`) return `key ${key} does not name ${e.path}`;
    if (!existsSync(join(root, 'proc/irq', irq[1]!))) return `IRQ ${irq[1]} does not exist on this host`;
    if (e.guard !== undefined && !new RegExp(`^/proc/irq/${irq[1]}/[^/]{1,64}$`).test(e.guard))
      return `guard ${e.guard} is not an action of IRQ ${irq[1]}`;
    return undefined;
  }
  const q = QUEUE.exec(e.path);
  if (q) {
    const [, ifname, queue, dir, file] = q;
    if (key !== `${ifname}/${queue}/${file}`) return `key ${key} does not name ${e.path}`;
    if ((file === 'xps_cpus') !== (dir === 'tx')) return `${file} is not a file of ${dir} queues`;
    if (!existsSync(join(root, 'sys/class/net', ifname!, 'queues', queue!)))
      return `queue ${queue} of ${ifname} does not exist on this host`;
    return e.guard === undefined ? undefined : 'a queue entry has no guard';
  }
  return `${e.path} is not a path tpfleet writes`;
}
