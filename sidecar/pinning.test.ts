// Worker CPU pinning from tuning.affinity: the plan (pure, on recorded node facts) and the real
// sidecar process, whose workers' /proc/<pid>/task/*/status must show the planned CPU.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { ConfigError, parseNodeConfig } from '../api/load.ts';
import { readNodeFacts } from '../host/facts.ts';
import { nsExec, privilegedSkipReason, sh, waitFor } from '../e2e/netns.ts';
import { REPO, scratch, startInNs, tsNode, type Proc } from '../e2e/proc.ts';
import { cpuOfSlot, planWorkerPinning } from './pinning.ts';
import { settingsFrom } from './settings.ts';

const nodeConfig = (proxy: object, affinity?: object) => ({
  apiVersion: 'tpfleet.io/v1alpha1',
  kind: 'NodeConfig',
  proxy,
  ...(affinity ? { tuning: { affinity } } : {}),
});
/** The recorded hyper-threaded 8-core node (CPUs 0-15, siblings n and n+8) of the planner's golden tests. */
const ht8 = () => readNodeFacts(path.join(REPO, 'host/testdata/ht8-mlx5/root'), []);
const allowed = (pid: number | 'self', task: number | string = pid): string =>
  /^Cpus_allowed_list:\s*(.*)$/m.exec(readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8'))![1]!;
const ownCpus = allowed('self', process.pid);

test('the worker count follows the planned CPUs when proxy.workers is 0; workers go round-robin, one CPU each', () => {
  const cfg = parseNodeConfig(
    nodeConfig({ workers: 0, maxConnections: 9 }, { mode: 'explicit', irqCpus: '0', workerCpus: '2-4' }),
  );
  const pin = planWorkerPinning(cfg.tuning, ht8(), 'x.yaml')!;
  assert.deepEqual(pin.cpus, [2, 3, 4]);
  const s = settingsFrom(cfg, 16, pin);
  assert.equal(s.workers, 3);
  assert.equal(s.worker.maxConnections, 3);
  assert.deepEqual(
    [0, 1, 2, 3, 4].map((slot) => cpuOfSlot(pin, slot)),
    [2, 3, 4, 2, 3],
  );
  const fixed = settingsFrom(
    parseNodeConfig(nodeConfig({ workers: 5 }, { mode: 'explicit', irqCpus: '0', workerCpus: '2-4' })),
    16,
    pin,
  );
  assert.equal(fixed.workers, 5, 'an explicit proxy.workers wins over the plan');
});

test("auto mode pins to the agent's worker CPUs; mode off plans nothing", () => {
  const auto = parseNodeConfig(nodeConfig({}, { mode: 'auto', maxWorkers: 4 }));
  const pin = planWorkerPinning(auto.tuning, ht8(), 'x.yaml')!;
  // The agent's plan for this node: NIC interrupts on 1-2 (the core of CPU 0 goes last), so workers
  // take the first threads of the next cores, capped at maxWorkers.
  assert.deepEqual(pin.cpus, [3, 4, 5, 6]);
  assert.equal(planWorkerPinning(parseNodeConfig(nodeConfig({})).tuning, ht8(), 'x.yaml'), null);
});

test('a worker CPU list with no online CPU is a config error naming tuning.affinity.workerCpus', () => {
  const cfg = parseNodeConfig(nodeConfig({}, { mode: 'explicit', irqCpus: '0', workerCpus: '20-21' }));
  assert.throws(
    () => planWorkerPinning(cfg.tuning, ht8(), 'x.yaml'),
    (e: ConfigError) =>
      e instanceof ConfigError && /tuning\.affinity\.workerCpus: no CPU .*20-21 are offline/.test(e.message),
  );
  const partly = planWorkerPinning(
    parseNodeConfig(nodeConfig({}, { mode: 'explicit', irqCpus: '0', workerCpus: '15-17' })).tuning,
    ht8(),
    'x.yaml',
  )!;
  assert.deepEqual(partly.cpus, [15], 'offline CPUs are dropped when some remain');
  assert.match(partly.problems.join(), /16-17 are offline/);
});

function runMain(configFile: string): Promise<{ code: number | null; stderr: string }> {
  const [cmd, ...rest] = tsNode('sidecar/main.ts');
  const p = spawn(cmd!, [...rest, '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => p.on('exit', (code) => resolve({ code, stderr })));
}

test('the sidecar exits 2 naming tuning.affinity.workerCpus for offline or malformed worker CPUs', async () => {
  const dir = scratch('sidecar-pin-bad');
  try {
    const offline = await runMain(
      dir.file('offline.yaml', stringify(nodeConfig({}, { mode: 'explicit', irqCpus: '0', workerCpus: '8000' }))),
    );
    assert.equal(offline.code, 2, offline.stderr);
    assert.match(offline.stderr, /tuning\.affinity\.workerCpus: no CPU .*8000 are offline/);
    const malformed = await runMain(
      dir.file('malformed.yaml', stringify(nodeConfig({}, { mode: 'auto', workerCpus: '1-x' }))),
    );
    assert.equal(malformed.code, 2, malformed.stderr);
    assert.match(malformed.stderr, /tuning\.affinity\.workerCpus: must be a CPU list/);
  } finally {
    dir.remove();
  }
});

interface Listening {
  pid: number;
  workers: number;
  workerCpus?: string;
  pinned?: { pid: number; cpus: string }[];
}

/** Starts the sidecar in a fresh namespace, hands its listening line and process to `check`, then stops it. */
async function withSidecar(
  name: string,
  proxy: object,
  affinity: object | undefined,
  check: (l: Listening, p: Proc) => Promise<void>,
): Promise<void> {
  const ns = `${name}${process.pid % 100000}`;
  const dir = scratch(`sidecar-${name}`);
  let p: Proc | undefined;
  try {
    await sh(['ip', 'netns', 'add', ns]);
    await nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    const file = dir.file('c.yaml', stringify(nodeConfig({ logLevel: 'info', ...proxy }, affinity)));
    p = await startInNs(ns, [...tsNode('sidecar/main.ts'), '--config', file], { ready: /"msg":"listening"/ });
    const line = p
      .output()
      .split('\n')
      .find((l) => l.includes('"msg":"listening"'))!;
    await check(JSON.parse(line) as Listening, p);
    // Exit 0 on SIGTERM (a clean drain), well within the 30 s drain timeout: three processes tearing
    // down under a loaded CI machine took over 5 s once.
    assert.equal(
      await p.stop(15_000),
      0,
      `the sidecar did not exit 0 on SIGTERM; its output:\n${p.output().slice(-3000)}`,
    );
  } finally {
    await p?.stop(500);
    await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    dir.remove();
  }
}

/** The workers of the primary `pid` (its child processes). */
const workerPids = (pid: number): number[] =>
  readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .sort((a, b) => a - b);
/** Cpus_allowed_list of a process, asserting every one of its threads has the same. */
function processCpus(pid: number): string {
  const lists = new Set(readdirSync(`/proc/${pid}/task`).map((tid) => allowed(pid, tid)));
  assert.equal(lists.size, 1, `threads of ${pid} disagree: ${[...lists].join(' | ')}`);
  return [...lists][0]!;
}

test('explicit workerCpus "1" and workers 0: one worker, all its threads on CPU 1', {
  skip: privilegedSkipReason(),
}, async () => {
  await withSidecar('spa', { workers: 0 }, { mode: 'explicit', irqCpus: '0', workerCpus: '1' }, async (l, p) => {
    assert.equal(l.workers, 1);
    assert.equal(l.workerCpus, '1');
    const pids = workerPids(l.pid);
    assert.equal(pids.length, 1);
    assert.deepEqual(l.pinned, [{ pid: pids[0], cpus: '1' }]);
    assert.equal(processCpus(pids[0]!), '1');
    assert.equal(processCpus(l.pid), ownCpus, 'the primary is not pinned');
    assert.match(p.output(), /"workerCpus":"1","workers":1,.*"msg":"pinning each worker/);
  });
});

test('workerCpus "0-1": two workers on CPU 0 and CPU 1; a restarted worker keeps its CPU', {
  skip: privilegedSkipReason(),
}, async () => {
  await withSidecar('spb', { workers: 0 }, { mode: 'explicit', irqCpus: '0', workerCpus: '0-1' }, async (l) => {
    assert.equal(l.workers, 2);
    const pids = workerPids(l.pid);
    assert.equal(pids.length, 2);
    const byCpu = new Map(pids.map((pid) => [processCpus(pid), pid]));
    assert.deepEqual([...byCpu.keys()].sort(), ['0', '1']);
    assert.deepEqual(l.pinned, [
      { pid: byCpu.get('0'), cpus: '0' },
      { pid: byCpu.get('1'), cpus: '1' },
    ]);
    process.kill(byCpu.get('0')!, 'SIGKILL');
    let fresh: number[] = [];
    await waitFor('a replacement worker', async () => {
      fresh = workerPids(l.pid).filter((pid) => pid !== byCpu.get('1'));
      return fresh.length === 1 && fresh[0] !== byCpu.get('0') && processCpus(fresh[0]!) === '0';
    });
    assert.equal(processCpus(byCpu.get('1')!), '1');
  });
});

test('with affinity off the workers keep the full CPU set and nothing is logged about pinning', {
  skip: privilegedSkipReason(),
}, async () => {
  await withSidecar('spc', { workers: 2 }, undefined, async (l, p) => {
    assert.equal(l.workerCpus, undefined);
    assert.equal(l.pinned, undefined);
    const pids = workerPids(l.pid);
    assert.equal(pids.length, 2);
    for (const pid of pids) assert.equal(processCpus(pid), ownCpus);
    assert.doesNotMatch(p.output(), /pinning/);
  });
});
