import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { renderTable, writeSection } from './report.ts';

test('the table prints ratios against HAProxy and dashes for what was not measured', () => {
  const t = renderTable([
    { path: 'direct', iperf1: 15 },
    { path: 'haproxy', iperf1: 6, connPerSec: 8000, memPerConnKiB: 3.5 },
    { path: 'tpfleet', iperf1: 3, connPerSec: 10000, memPerConnKiB: 14 },
  ]);
  const ratio = t.split('\n').find((l) => l.startsWith('| ratio tpfleet / haproxy'));
  assert.ok(ratio, t);
  assert.match(ratio, /\| 0\.50× \| – \| – \| 1\.25× \| – \| – \| – \| – \| 4\.00× \|$/);
  assert.ok(!t.includes('ratio direct'), 'the direct path is a reference, not a proxy to rank');
});

test('writeSection replaces its own section and keeps the rest of the file', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'report-'));
  try {
    const f = path.join(dir, 'b.md');
    writeFileSync(f, '# Benchmarks\n\nintro\n');
    writeSection(f, 'x', 'first');
    writeSection(f, 'x', 'second');
    const text = readFileSync(f, 'utf8');
    assert.match(text, /intro/);
    assert.match(text, /second/);
    assert.doesNotMatch(text, /first/);
  } finally {
    rmSync(dir, { recursive: true });
  }
});
