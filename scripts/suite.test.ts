import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LATE, order, testFiles } from './suite.ts';

const ROOT = join(import.meta.dirname, '..');

test('the suite runs every test file once, in path order, the slow-build tiers last', () => {
  const files = ['b/x.test.ts', 'a/late.test.ts', 'a/y.test.ts', 'c/z.test.ts', 'a-b/w.test.ts'];
  assert.deepEqual(order(files, ['a/late.test.ts']), [
    'a-b/w.test.ts',
    'a/y.test.ts',
    'b/x.test.ts',
    'c/z.test.ts',
    'a/late.test.ts',
  ]);
  assert.deepEqual(order(files, []), [...files].sort());
});

test("the file list is node's '**/*.test.ts' without node_modules, and includes the late tiers", () => {
  const files = testFiles();
  assert.ok(files.includes('scripts/suite.test.ts'));
  assert.ok(files.includes('daemonset/tuning/plan.test.ts'), 'nested directories are walked');
  assert.ok(!files.some((f) => f.startsWith('node_modules/') || f.includes('/node_modules/')));
  for (const f of Object.keys(LATE)) assert.ok(files.includes(f), `${f} is a test file of the repo`);
});

test('every tool a late tier needs is one tools/k8s/build.sh builds', () => {
  for (const [file, tools] of Object.entries(LATE)) {
    assert.ok(tools.length > 0, file);
    for (const t of tools) assert.ok(existsSync(join(ROOT, 'tools', 'k8s', t, 'package')), `${file}: ${t}`);
  }
});
