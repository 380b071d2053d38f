// Duration bounds end to end (issue 20, path 4): every duration the schema accepts renders objects
// whose consumers accept them. A drain of 3591 s used to render a leave pod with --wait-timeout
// 3601, which the agent refused (exit 2) before setting the drain gate: the node stayed "leaving"
// and, FailClosed, dropped its traffic. Spans the operator's rendering and the agent's CLI.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DURATION_BOUNDS, MAX_TIMER_MS } from '../api/fields.ts';
import { formatIssues } from '../api/load.ts';
import { durationMs } from '../api/net.ts';
import { TransparentProxySpec } from '../api/transparentproxy.ts';
import { run } from '../daemonset/run.ts';
import { renderDaemonSet } from '../operator/render/daemonset.ts';
import { activeLabelKey } from '../operator/render/names.ts';
import { renderNodeConfig } from '../operator/render/nodeconfig.ts';

const AGENT = join(import.meta.dirname, '..', 'daemonset', 'main.ts');
const tp = {
  apiVersion: 'tpfleet.io/v1alpha1',
  kind: 'TransparentProxy',
  metadata: { name: 'long', namespace: 'fleet', uid: '00000000-0000-4000-8000-000000000002' },
};

function leaveCommand(drain: string): string[] {
  const r = renderNodeConfig({ proxy: { timeouts: { drain } } });
  assert.ok(r.ok, r.ok ? '' : r.problems.join('; '));
  const ds = renderDaemonSet({
    tp,
    spec: r.value.spec,
    proxy: r.value.config.proxy,
    podHash: r.value.podHash,
    defaultImage: 'unused',
    activeLabel: activeLabelKey('fleet', 'long'),
    mode: 'leave',
  }) as { spec: { template: { spec: { initContainers: { command: string[] }[] } } } };
  return ds.spec.template.spec.initContainers[0]!.command;
}

test('every drain up to the schema maximum renders a leave pod the agent runs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-bounds-'));
  try {
    for (const drain of ['0s', '30s', '3591s', DURATION_BOUNDS.drain.max]) {
      assert.equal(TransparentProxySpec.safeParse({ proxy: { timeouts: { drain } } }).success, true, drain);
      const [bin, ...args] = leaveCommand(drain);
      assert.equal(bin, 'tpfleet-agent');
      // No state in the directory: nothing to drain, and --dry-run touches nothing either way.
      args[args.indexOf('--state-dir') + 1] = dir;
      args[args.indexOf('--state-copy-dir') + 1] = join(dir, 'copy');
      const r = await run([process.execPath, '--import', 'tsx', AGENT, ...args, '--dry-run']);
      assert.equal(r.code, 0, `drain ${drain}: ${args.join(' ')}: ${r.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a drain above the maximum is refused by the schema naming the field', () => {
  for (const drain of ['3601s', '1h1s', '2h']) {
    const r = TransparentProxySpec.safeParse({ proxy: { timeouts: { drain } } });
    assert.ok(!r.success, drain);
    assert.deepEqual(formatIssues(r.error), ['proxy.timeouts.drain: must be between 0s and 1h'], drain);
    const n = renderNodeConfig({ proxy: { timeouts: { drain } } });
    assert.equal(n.ok, false, drain);
  }
});

test('every duration bound fits Node timers and the native engine (2^31-1 ms)', () => {
  for (const [field, b] of Object.entries(DURATION_BOUNDS)) {
    // Certificate lifetimes are compared with dates, never handed to a timer (api/fields.ts).
    if (!('timer' in b)) assert.ok(durationMs(b.max) <= MAX_TIMER_MS, `${field}: ${b.max}`);
    assert.ok(durationMs(b.min) <= durationMs(b.max), field);
  }
});
