// The harness's process helpers: a stop awaited in an `after` hook must not end the test process
// before the hook's later cleanup runs. The children are unref'd (a forgotten stop cannot keep a
// test alive), so waiting for their exit has to hold the event loop itself; without that, a child
// that takes a moment to die (a real API server; here 2 GB to free) let the test process exit in
// the middle of its `after` hook, and the janitor tier left its network namespaces on every run.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);

test('an after hook goes on past stopProcess, even when the child is slow to die', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-stop-'));
  try {
    const log = join(dir, 'log'),
      marker = join(dir, 'after-ran');
    const slow = 'x = bytearray(2_000_000_000); print("ready", flush=True); import time; time.sleep(60)';
    writeFileSync(
      join(dir, 'inner.test.ts'),
      [
        "import { readFileSync, writeFileSync } from 'node:fs';",
        "import { after, test } from 'node:test';",
        `import { startProcess, stopProcess } from ${JSON.stringify(join(import.meta.dirname, 'testenv.ts'))};`,
        `const child = startProcess('python3', ['-c', ${JSON.stringify(slow)}], ${JSON.stringify(log)});`,
        `after(async () => { await stopProcess(child); writeFileSync(${JSON.stringify(marker)}, 'ok'); });`,
        "test('the child is up', async () => {",
        `  while (!readFileSync(${JSON.stringify(log)}, 'utf8').includes('ready')) await new Promise((r) => setTimeout(r, 50));`,
        '});',
      ].join('\n'),
    );
    // A runner of its own: without NODE_TEST_CONTEXT it does not take itself for this file's child.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    await run(process.execPath, ['--import', 'tsx', '--test', join(dir, 'inner.test.ts')], { env, timeout: 60_000 });
    assert.ok(existsSync(marker), 'the after hook ran to its end');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
