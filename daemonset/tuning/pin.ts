// Pins a process (all its threads) to CPUs with util-linux taskset (argv only, no shell). For the
// agent or the sidecar's supervisor when the workers are separate processes; a worker can equally
// call sched_setaffinity on itself through the native addon with the same CPU list.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { cpuList, formatCpuList, type CpuSet } from '../../host/cpulist.ts';

const run = promisify(execFile);

export interface PinResult {
  pid: number;
  cpus: string;
  argv: string[];
  error?: string;
}

export async function pinProcess(pid: number, cpus: CpuSet, opts: { dryRun?: boolean } = {}): Promise<PinResult> {
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`pinProcess: bad pid ${pid}`);
  if (cpus.length === 0) throw new Error('pinProcess: empty CPU list');
  const list = formatCpuList(cpus);
  const argv = ['taskset', '--all-tasks', '--cpu-list', '--pid', list, String(pid)];
  if (opts.dryRun) return { pid, cpus: list, argv };
  try {
    await run(argv[0]!, argv.slice(1));
    return { pid, cpus: list, argv };
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    return { pid, cpus: list, argv, error: err.stderr?.trim() || err.message };
  }
}

/** The CPUs a process may run on (Cpus_allowed_list of /proc/<pid>/status). */
export function allowedCpus(pid: number): CpuSet {
  const m = /^Cpus_allowed_list:\s*(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`/proc/${pid}/status has no Cpus_allowed_list`);
  return cpuList(m[1]!);
}
