// Golden files, one way for every test: the text a test produces is compared with a committed file.
// A missing golden fails (a test must never pass by comparing its output with itself); goldens are
// written only when asked, with TPFLEET_UPDATE_GOLDEN=1, and then reviewed as a diff.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

const REPO = join(import.meta.dirname, '..');
export const UPDATE_GOLDEN = process.env.TPFLEET_UPDATE_GOLDEN === '1';

/** Asserts that `actual` equals the golden file at `path` (absolute); rewrites it under TPFLEET_UPDATE_GOLDEN=1. */
export function assertGolden(path: string, actual: string): void {
  const name = relative(REPO, path);
  if (UPDATE_GOLDEN) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, actual);
    return;
  }
  if (!existsSync(path))
    assert.fail(`golden file ${name} is missing: run with TPFLEET_UPDATE_GOLDEN=1 to write it, then review it`);
  assert.equal(
    actual,
    readFileSync(path, 'utf8'),
    `${name} differs from the golden file (TPFLEET_UPDATE_GOLDEN=1 rewrites it; review the diff)`,
  );
}
