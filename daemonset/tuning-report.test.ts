// The tuning report and the pod condition made from it, on the real engine writing real files of a
// temporary tree (root option): what apply changed, what the kernel lacked, what drifted since.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { applyTuning, checkDrift, sysctlPath, type AffinityPlan, type TuningPlan, type Write } from './tuning/index.ts';
import { podRefFromEnv } from './tuning-publish.ts';
import { TUNING_CONDITION_TYPE as CONDITION_TYPE } from '../api/tuning-condition.ts';
import {
  buildReport,
  MESSAGE_MAX,
  podCondition,
  readReport,
  removeReport,
  summaryLine,
  writeReport,
} from './tuning-report.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tree(files: Record<string, string>): { root: string; stateDir: string } {
  const root = mkdtempSync(join(tmpdir(), 'tpfleet-report-'));
  dirs.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), `${text}\n`);
  }
  return { root, stateDir: join(root, 'state') };
}

const sysctl = (key: string, value: string): Write => ({
  key,
  path: sysctlPath(key),
  value,
  compare: 'words',
  group: 'sysctl',
});
const planOf = (writes: Write[], affinity: Partial<AffinityPlan> = {}): TuningPlan => ({
  sysctls: [],
  writes,
  affinity: {
    irqbalance: { running: false, required: null, conflict: null },
    problems: [],
    notes: [],
    ...affinity,
  } as AffinityPlan,
});

test('apply report: counts and keys changed, unchanged, missing; condition Applied/TuningPartial; round trip through the state dir', () => {
  const t = tree({ '/proc/sys/net/core/somaxconn': '128', '/proc/sys/net/core/netdev_max_backlog': '1000' });
  const plan = planOf([
    sysctl('net.core.somaxconn', '4096'),
    sysctl('net.core.netdev_max_backlog', '1000'),
    sysctl('net.ipv4.tcp_notsent_lowat', '16384'),
  ]);
  const report = buildReport(plan, applyTuning(plan, { stateDir: t.stateDir, root: t.root }));
  assert.deepEqual(report.summary, {
    changed: ['net.core.somaxconn'],
    adjusted: [],
    missing: ['net.ipv4.tcp_notsent_lowat'],
    refused: [],
    unchanged: 1,
    restored: 0,
  });
  assert.equal(
    summaryLine(report.summary),
    '1 changed, 1 unchanged, 0 adjusted, 1 missing, 0 refused, 0 restored; missing: net.ipv4.tcp_notsent_lowat',
  );
  assert.equal(report.base.reason, 'TuningPartial');
  writeReport(t.stateDir, report);
  assert.deepEqual(readReport(t.stateDir), report);
  const c = podCondition(readReport(t.stateDir), checkDrift({ stateDir: t.stateDir, root: t.root }));
  assert.deepEqual(c, {
    type: CONDITION_TYPE,
    status: 'False',
    reason: 'TuningPartial',
    message: 'missing on this kernel: net.ipv4.tcp_notsent_lowat (2 values applied)',
  });
  removeReport(t.stateDir);
  assert.equal(readReport(t.stateDir), undefined);
  assert.deepEqual(podCondition(undefined, { checked: 0, drift: [] }), {
    type: CONDITION_TYPE,
    status: 'True',
    reason: 'NotConfigured',
    message: 'no tuning configured',
  });
});

test('drift is measured live: a value changed by someone else turns the condition to TuningDrift naming the key, and back when restored', () => {
  const t = tree({ '/proc/sys/net/core/somaxconn': '128' });
  const plan = planOf([sysctl('net.core.somaxconn', '4096')]);
  const report = buildReport(plan, applyTuning(plan, { stateDir: t.stateDir, root: t.root }));
  const cond = () => podCondition(report, checkDrift({ stateDir: t.stateDir, root: t.root }));
  assert.deepEqual(cond(), { type: CONDITION_TYPE, status: 'True', reason: 'Applied', message: '1 value applied' });
  writeFileSync(join(t.root, '/proc/sys/net/core/somaxconn'), '512\n');
  assert.deepEqual(cond(), {
    type: CONDITION_TYPE,
    status: 'False',
    reason: 'TuningDrift',
    message: 'drifted: net.core.somaxconn want 4096 got 512',
  });
  writeFileSync(join(t.root, '/proc/sys/net/core/somaxconn'), '4096\n');
  assert.equal(cond().reason, 'Applied', 'the report itself carries no drift, so a repaired value clears');
});

test('irqbalance conflict and refused writes get their reasons; messages are bounded', () => {
  const t = tree({ '/proc/sys/net/core/somaxconn': '128' });
  const plan = planOf([sysctl('net.core.somaxconn', '4096')], {
    irqbalance: {
      running: true,
      required: null,
      conflict: 'irqbalance is running and moves IRQs',
    } as AffinityPlan['irqbalance'],
  });
  const r = buildReport(plan, applyTuning(plan, { stateDir: t.stateDir, root: t.root }));
  assert.equal(podCondition(r, { checked: 1, drift: [] }).reason, 'IrqbalanceConflict');
  const refused = buildReport(planOf([]), {
    dryRun: false,
    changed: [],
    unchanged: [],
    adjusted: [],
    missing: [],
    drift: [],
    failed: [{ key: 'net.core.rmem_max', want: '1', error: 'EPERM: operation not permitted' }],
    released: { restored: [], refused: [], skippedDrift: [], missing: [], failed: [] },
  });
  assert.deepEqual(refused.summary.refused, ['net.core.rmem_max']);
  const c = podCondition(refused, { checked: 1, drift: [] });
  assert.equal(c.reason, 'TuningRefused');
  assert.match(c.message, /refused: net\.core\.rmem_max \(EPERM/);
  const many = Array.from({ length: 200 }, (_, i) => ({ key: `irq/${i}/smp_affinity_list`, want: '0-3', got: '0-63' }));
  const long = podCondition(r, { checked: 200, drift: many });
  assert.equal(long.message.length, MESSAGE_MAX);
  assert.ok(
    long.message.startsWith('drifted: irq/0/smp_affinity_list want 0-3 got 0-63') && long.message.endsWith('…'),
  );
});

test('a corrupt report is an error naming the file, not "no tuning"', () => {
  const t = tree({ '/state/tuning-report.json': '{"version": 7}' });
  assert.throws(() => readReport(t.stateDir), /tuning-report\.json: not a tuning report/);
});

test('POD_NAME/POD_NAMESPACE: both or neither, valid names', () => {
  assert.equal(podRefFromEnv({}), undefined);
  assert.deepEqual(podRefFromEnv({ POD_NAME: 'web-x7k2p', POD_NAMESPACE: 'fleet' }), {
    name: 'web-x7k2p',
    namespace: 'fleet',
  });
  assert.throws(() => podRefFromEnv({ POD_NAME: 'web-x7k2p' }), /POD_NAMESPACE is not set/);
  assert.throws(
    () => podRefFromEnv({ POD_NAME: '../nodes/n1', POD_NAMESPACE: 'fleet' }),
    /POD_NAME: "\.\.\/nodes\/n1" is not a valid object name/,
  );
});
