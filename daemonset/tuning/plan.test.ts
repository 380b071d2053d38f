import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Tuning } from '../../api/tuning.ts';
import { canonicalSysctl, SYSCTLS } from '../../api/tuning-sysctls.ts';
import { TUNING_CONDITION_TYPE as type } from '../../api/tuning-condition.ts';
import { applyCondition, planSysctls, planTuning, readNodeFacts, type ApplyReport } from './index.ts';
import { PROFILES, profileEntries } from '../../api/tuning-profiles.ts';

const TESTDATA = join(import.meta.dirname, '..', '..', 'host', 'testdata');

test('every profile value is allowlisted, in range, canonical and explained', () => {
  for (const [name, entries] of Object.entries(PROFILES)) {
    for (const e of entries) {
      const r = canonicalSysctl(e.key, e.value);
      assert.ok('text' in r, `${name}: ${e.key}=${e.value}: ${'error' in r ? r.error : ''}`);
      assert.equal(r.text, e.value, `${name}: ${e.key} written canonically`);
      assert.ok(e.why.length > 40, `${name}: ${e.key} says why`);
    }
  }
  const ch = new Map(profileEntries('conntrack-heavy').map((e) => [e.key, e.value]));
  for (const e of profileEntries('throughput'))
    assert.ok(ch.has(e.key), `conntrack-heavy builds on throughput (${e.key})`);
  assert.equal(ch.get('fs.file-max'), '4194304', 'a later entry for the same key wins');
  assert.deepEqual(planSysctls({ profile: 'none', overrides: {} }), []);
});

test('overrides win over the profile and are exact; the agent re-validates them', () => {
  const t = Tuning.parse({ sysctls: { profile: 'throughput', overrides: { 'net.core.somaxconn': 1024 } } });
  const s = planSysctls(t.sysctls).find((x) => x.key === 'net.core.somaxconn')!;
  assert.deepEqual(s, { key: 'net.core.somaxconn', value: '1024', atLeast: false, source: 'override' });
  assert.throws(
    () => planSysctls({ profile: 'none', overrides: { 'kernel.panic': '1' } }),
    /tuning\.sysctls\.overrides\.kernel\.panic: kernel\.panic is not an allowed sysctl/,
  );
});

test('one plan holds the sysctl and affinity writes; the condition names what went wrong', () => {
  const facts = readNodeFacts(join(TESTDATA, 'numa2-ixgbe', 'root'));
  const plan = planTuning(Tuning.parse({ sysctls: { profile: 'latency' }, affinity: { mode: 'auto' } }), facts);
  assert.equal(plan.writes.filter((w) => w.group === 'sysctl').length, plan.sysctls.length);
  assert.ok(plan.writes.some((w) => w.key === 'irq/120/smp_affinity_list'));
  assert.ok(plan.writes.some((w) => w.key === 'net.core.rps_sock_flow_entries' && w.value === '32768'));
  const ok: ApplyReport = {
    dryRun: false,
    changed: [{ key: 'a', from: '1', to: '2' }],
    unchanged: [],
    adjusted: [],
    missing: [],
    failed: [],
    drift: [],
    released: { restored: [], refused: [], skippedDrift: [], missing: [], failed: [] },
  };
  const c = applyCondition(plan, ok);
  assert.equal(c.reason, 'IrqbalanceConflict', 'irqbalance in this fixture would move our IRQs');
  assert.match(c.message, /--banirq=120/);
  const quiet = planTuning(Tuning.parse({ sysctls: { profile: 'latency' } }), facts);
  assert.deepEqual(applyCondition(quiet, ok), { type, status: 'True', reason: 'Applied', message: 'applied 1 values' });
  const drifted = applyCondition(quiet, ok, {
    checked: 3,
    drift: [{ key: 'net.ipv4.tcp_fin_timeout', want: '15', got: '60' }],
  });
  assert.deepEqual(drifted, {
    type,
    status: 'False',
    reason: 'TuningDrift',
    message: 'drifted: net.ipv4.tcp_fin_timeout want 15 got 60',
  });
  const missing = applyCondition(quiet, { ...ok, missing: ['net.core.netdev_max_backlog'] });
  assert.equal(missing.reason, 'TuningPartial');
  assert.match(missing.message, /missing on this kernel: net\.core\.netdev_max_backlog/);
});

test('docs/tuning.md lists every profile value and every allowlisted key', () => {
  const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'tuning.md'), 'utf8');
  for (const name of Object.keys(PROFILES)) {
    if (name !== 'none') assert.ok(doc.includes(`### \`${name}\``), `section for ${name}`);
    for (const e of profileEntries(name as keyof typeof PROFILES))
      assert.ok(
        doc.includes(`| \`${e.key}\` | \`${e.value}\` | ${e.atLeast ? 'at least' : 'exact'} |`),
        `${name}: ${e.key} documented`,
      );
  }
  for (const k of Object.keys(SYSCTLS)) assert.ok(doc.includes(`| \`${k}\` |`), `${k} in the allowlist table`);
});
