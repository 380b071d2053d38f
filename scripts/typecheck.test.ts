// The whole repo type-checks under the strict tsconfig: tsx strips types without checking them, so
// without this test a type error would only show up for a reader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

test('tsc --noEmit passes on the whole repo', async () => {
  const root = path.resolve(import.meta.dirname, '..');
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const r = await promisify(execFile)(process.execPath, [tsc, '--noEmit', '-p', root], {
    cwd: root,
    maxBuffer: 16 << 20,
  }).then(
    () => ({ ok: true, out: '' }),
    (e: { stdout?: string }) => ({ ok: false, out: e.stdout ?? String(e) }),
  );
  assert.ok(r.ok, `type errors:\n${r.out}`);
});
