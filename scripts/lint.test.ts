// The repo is formatted and lint clean (biome.json): `biome ci` checks both and writes nothing.
// Fix a failure with `npm run format` (formatting) or by hand (lint); generated files are not
// checked (biome.json files.includes), their generators own their layout.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

test('biome ci: every .ts and .json file is formatted and passes the lint rules', async () => {
  const root = path.resolve(import.meta.dirname, '..');
  const biome = path.join(root, 'node_modules/@biomejs/biome/bin/biome');
  const r = await promisify(execFile)(process.execPath, [biome, 'ci', '--colors=off', '--max-diagnostics=50', '.'], {
    cwd: root,
    maxBuffer: 16 << 20,
  }).then(
    () => ({ ok: true, out: '' }),
    (e: { stdout?: string; stderr?: string }) => ({ ok: false, out: `${e.stdout ?? ''}${e.stderr ?? String(e)}` }),
  );
  assert.ok(r.ok, `formatting or lint errors (npm run format fixes the formatting):\n${r.out}`);
});
