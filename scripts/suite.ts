// `npm test` with no arguments: every test file of the repo, one at a time, in path order, except
// that the files needing tools that take long to build cold (the autoscaling tier: Prometheus,
// prometheus-adapter, kube-state-metrics and KEDA, about 40 minutes of Go builds on this 2-core
// machine) run last, while those tools build in the background at idle CPU and I/O priority. On
// a fresh machine the builds then use the CPU the other tiers leave idle (they wait on timers,
// probes and API servers much of the time) instead of adding their whole time to the suite's
// (issue 16). Once built (cached under ~/.cache/tpfleet) nothing runs in the background and the
// order is the only difference from `node --test --test-concurrency=1 '**/*.test.ts'`.
//
// tools/k8s/build.sh locks per binary: a test file that needs one of these tools before its
// background build is done waits for that build (which then has the CPU to itself) and finds it
// built; a test needing any other binary is never held up by it.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { KEDA_BINARIES } from '../e2e/cluster/local-keda.ts';
import { MONITORING_BINARIES } from '../e2e/cluster/local-monitoring.ts';
import { binDir, missingBinaries } from '../e2e/testenv/binaries.ts';

const ROOT = join(import.meta.dirname, '..');
const SKIP_DIRS = new Set(['node_modules', '.git', 'build']);

/** Test files whose tools are slow to build cold, with those tools: they run last. */
export const LATE: Readonly<Record<string, readonly string[]>> = {
  'e2e/cluster/autoscale.test.ts': [...MONITORING_BINARIES, ...KEDA_BINARIES],
};

/** Every `*.test.ts` under `root`, repo-relative, as `node --test '**\/*.test.ts'` finds them. */
export function testFiles(root = ROOT): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory() && !SKIP_DIRS.has(e.name)) walk(join(dir, e.name));
      else if (e.isFile() && e.name.endsWith('.test.ts')) out.push(relative(root, join(dir, e.name)));
    }
  };
  walk(root);
  return out;
}

/** Path order (byte order, as node's glob gives), the `late` files moved to the end in the same order. */
export function order(files: readonly string[], late: readonly string[]): string[] {
  const sorted = [...files].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const isLate = new Set(late);
  return [...sorted.filter((f) => !isLate.has(f)), ...sorted.filter((f) => isLate.has(f))];
}

/**
 * Starts tools/k8s/build.sh for `names` in its own process group at SCHED_IDLE, I/O class idle
 * and nice 19 (each wrapper only where it exists), its output in `log`. undefined: nothing to build.
 */
export function buildInBackground(names: readonly string[], log: string): ChildProcess | undefined {
  if (names.length === 0) return undefined;
  const fd = openSync(log, 'a');
  const argv = ['chrt', '--idle', '0', 'ionice', '-c', '3', 'nice', '-n', '19', 'bash'];
  argv.push(join(ROOT, 'tools', 'k8s', 'build.sh'), ...names);
  const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  child.on('error', (e) => process.stderr.write(`suite: background build did not start: ${e.message}\n`));
  return child;
}

function main(): void {
  const files = testFiles();
  const late = Object.keys(LATE).filter((f) => files.includes(f));
  const slow = missingBinaries([...new Set(late.flatMap((f) => LATE[f]!))]);
  const dir = binDir();
  mkdirSync(dir, { recursive: true });
  const log = join(dir, '..', 'background-build.log');
  const build = buildInBackground(slow, log);
  if (build)
    process.stdout.write(
      `suite: building ${slow.join(', ')} in the background at idle priority (log: ${log}); ${late.join(', ')} run last\n`,
    );
  // node:test's run(), not `node --test` with a file list: the CLI sorts the files it is given.
  const ac = new AbortController();
  const stream = run({
    files: order(files, late).map((f) => join(ROOT, f)),
    concurrency: 1,
    execArgv: ['--import', 'tsx'],
    signal: ac.signal,
  });
  stream.on('test:fail', (e) => {
    if (!e.todo) process.exitCode = 1;
  });
  // An interrupted suite takes its background build along (build.sh writes to a temporary name
  // first, so a killed build never leaves a binary the next run would trust).
  const stopBuild = () => {
    if (build?.pid !== undefined && build.exitCode === null && build.signalCode === null) {
      try {
        process.kill(-build.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    }
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () => {
      process.exitCode = 1;
      ac.abort();
      stopBuild();
    });
  stream.on('end', stopBuild);
  stream.compose(spec).pipe(process.stdout);
}

if (process.argv[1] && import.meta.filename === process.argv[1]) main();
