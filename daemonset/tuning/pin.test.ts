import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { test } from 'node:test';
import { allowedCpus, pinProcess } from './pin.ts';

test('a worker process is pinned to the planned CPUs (all threads)', async () => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  try {
    const pid = child.pid!;
    const before = allowedCpus(pid);
    const target = [before[before.length - 1]!];
    const dry = await pinProcess(pid, target, { dryRun: true });
    assert.deepEqual(dry.argv, ['taskset', '--all-tasks', '--cpu-list', '--pid', String(target[0]), String(pid)]);
    assert.deepEqual(allowedCpus(pid), before, 'dry run does not pin');
    const r = await pinProcess(pid, target);
    assert.equal(r.error, undefined);
    assert.deepEqual(allowedCpus(pid), target);
    if (availableParallelism() > 1) assert.notDeepEqual(target, before);
    const bad = await pinProcess(pid, [4000]);
    assert.ok(bad.error, 'an impossible CPU is reported, not thrown');
    assert.deepEqual(allowedCpus(pid), target);
  } finally {
    child.kill();
  }
});
