// The owned-value engine on a scratch file tree (root = a temp dir standing in for /): snapshot
// before write, at-least raising, re-apply keeping originals, release of values no longer planned,
// refused writes, drift, and exact restore. The real kernel is exercised by sysctl-netns.test.ts.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { applyWrites, checkOwnedDrift, restoreAll, type Write } from './owned.ts';

const base = mkdtempSync(join(tmpdir(), 'tpfleet-owned-'));
after(() => rmSync(base, { recursive: true, force: true }));
let n = 0;

function tree(files: Record<string, string>): { root: string; stateDir: string; read: (p: string) => string } {
  const root = join(base, `t${n++}`);
  for (const [p, v] of Object.entries(files)) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), v);
  }
  return { root, stateDir: join(root, 'state'), read: (p) => readFileSync(join(root, p), 'utf8') };
}
const sysctl = (key: string, value: string, atLeast = false): Write => ({
  key,
  path: `/proc/sys/${key.replace(/\./g, '/')}`,
  value,
  compare: 'words',
  atLeast,
  group: 'sysctl',
});

test('apply snapshots originals, verifies, restores exactly; re-apply keeps the originals', () => {
  const t = tree({
    'proc/sys/net/core/somaxconn': '4096\n',
    'proc/sys/net/ipv4/tcp_rmem': '4096\t131072\t6291456\n',
    'proc/sys/fs/file-max': '9223372036854775807\n',
  });
  const o = { root: t.root, stateDir: t.stateDir };
  const writes = [
    sysctl('net.core.somaxconn', '65535', true),
    sysctl('net.ipv4.tcp_rmem', '4096 87380 33554432', true),
    sysctl('fs.file-max', '1048576', true),
  ];
  const r = applyWrites(writes, o);
  assert.deepEqual(
    r.changed,
    [
      { key: 'net.core.somaxconn', from: '4096', to: '65535' },
      { key: 'net.ipv4.tcp_rmem', from: '4096\t131072\t6291456', to: '4096 131072 33554432' },
    ],
    'atLeast raises component-wise and never lowers',
  );
  assert.deepEqual(r.unchanged, ['fs.file-max'], 'a larger value than asked stays (64-bit values compared exactly)');
  assert.equal(t.read('proc/sys/net/core/somaxconn'), '65535\n');
  const state = JSON.parse(readFileSync(join(t.stateDir, 'tuning.json'), 'utf8'));
  assert.equal(state.entries['net.ipv4.tcp_rmem'].original, '4096 131072 6291456');

  const again = applyWrites([sysctl('net.core.somaxconn', '8192'), ...writes.slice(1)], o);
  assert.deepEqual(again.changed, [{ key: 'net.core.somaxconn', from: '65535', to: '8192' }]);
  assert.equal(
    JSON.parse(readFileSync(join(t.stateDir, 'tuning.json'), 'utf8')).entries['net.core.somaxconn'].original,
    '4096',
    'original kept, not the value we wrote',
  );

  const back = restoreAll(o);
  assert.deepEqual(back.restored.map((x) => x.key).sort(), ['fs.file-max', 'net.core.somaxconn', 'net.ipv4.tcp_rmem']);
  assert.equal(t.read('proc/sys/net/core/somaxconn'), '4096\n');
  assert.equal(t.read('proc/sys/net/ipv4/tcp_rmem'), '4096 131072 6291456\n');
  assert.ok(!existsSync(join(t.stateDir, 'tuning.json')), 'state removed once nothing is owned');
});

test('a value no longer planned is released (restored) by the next apply', () => {
  const t = tree({ 'proc/sys/net/core/busy_poll': '1\n', 'proc/sys/net/core/busy_read': '2\n' });
  const o = { root: t.root, stateDir: t.stateDir };
  applyWrites([sysctl('net.core.busy_poll', '10'), sysctl('net.core.busy_read', '20')], o);
  const r = applyWrites([sysctl('net.core.busy_read', '20')], o);
  assert.deepEqual(r.released.restored, [{ key: 'net.core.busy_poll', from: '10', to: '1' }]);
  assert.equal(t.read('proc/sys/net/core/busy_poll'), '1\n');
  assert.deepEqual(r.unchanged, ['net.core.busy_read']);
});

test('missing keys and refused writes are reported, not owned, and change nothing', () => {
  const t = tree({ 'proc/sys/net/core/busy_poll': '1\n' });
  mkdirSync(join(t.root, 'proc/sys/a/dir'), { recursive: true }); // writing a directory fails like a refused sysctl
  const o = { root: t.root, stateDir: t.stateDir };
  const r = applyWrites([sysctl('a.missing', '5'), sysctl('a.dir', '5'), sysctl('net.core.busy_poll', '3')], o);
  assert.deepEqual(r.missing, ['a.missing']);
  assert.equal(r.failed.length, 1);
  assert.equal(r.failed[0]!.key, 'a.dir');
  assert.match(r.failed[0]!.error, /EISDIR/);
  assert.deepEqual(Object.keys(JSON.parse(readFileSync(join(t.stateDir, 'tuning.json'), 'utf8')).entries), [
    'net.core.busy_poll',
  ]);
});

test('dry run reports the writes and touches nothing', () => {
  const t = tree({ 'proc/sys/net/core/busy_poll': '1\n', 'proc/irq/38/smp_affinity_list': '0-1\n' });
  const o = { root: t.root, stateDir: t.stateDir, dryRun: true };
  const r = applyWrites(
    [
      sysctl('net.core.busy_poll', '2'),
      {
        key: 'irq/38/smp_affinity_list',
        path: '/proc/irq/38/smp_affinity_list',
        value: '1',
        compare: 'cpulist',
        group: 'affinity',
      },
    ],
    o,
  );
  assert.deepEqual(r.changed, [
    { key: 'net.core.busy_poll', from: '1', to: '2' },
    { key: 'irq/38/smp_affinity_list', from: '0-1', to: '1' },
  ]);
  assert.equal(t.read('proc/sys/net/core/busy_poll'), '1\n');
  assert.ok(!existsSync(t.stateDir));
});

test("drift is reported with the key, not fought; restore leaves the other writer's value", () => {
  const t = tree({
    'proc/sys/net/core/busy_poll': '1\n',
    'proc/sys/net/core/busy_read': '2\n',
    'sys/class/net/eth0/queues/rx-0/rps_cpus': '0\n',
  });
  const o = { root: t.root, stateDir: t.stateDir };
  const mask: Write = {
    key: 'eth0/rx-0/rps_cpus',
    path: '/sys/class/net/eth0/queues/rx-0/rps_cpus',
    value: '2',
    compare: 'cpumask',
    group: 'affinity',
  };
  applyWrites([sysctl('net.core.busy_poll', '10'), sysctl('net.core.busy_read', '20'), mask], o);
  writeFileSync(join(t.root, 'sys/class/net/eth0/queues/rx-0/rps_cpus'), '00000002\n'); // same mask, other spelling
  assert.deepEqual(checkOwnedDrift(o), { checked: 3, drift: [] });
  writeFileSync(join(t.root, 'proc/sys/net/core/busy_poll'), '11\n');
  assert.deepEqual(checkOwnedDrift(o).drift, [{ key: 'net.core.busy_poll', want: '10', got: '11' }]);
  const re = applyWrites([sysctl('net.core.busy_poll', '10'), sysctl('net.core.busy_read', '20'), mask], o);
  assert.deepEqual(re.drift, [{ key: 'net.core.busy_poll', want: '10', got: '11' }]);
  assert.equal(t.read('proc/sys/net/core/busy_poll'), '11\n', 'not overwritten without overwriteDrift');
  const back = restoreAll(o);
  assert.deepEqual(back.skippedDrift, [{ key: 'net.core.busy_poll', want: '1', got: '11' }]);
  assert.equal(t.read('proc/sys/net/core/busy_poll'), '11\n');
  assert.equal(t.read('proc/sys/net/core/busy_read'), '2\n');
  assert.equal(t.read('sys/class/net/eth0/queues/rx-0/rps_cpus'), '0\n');
});

test('an IRQ whose handler changed (driver reload) is never restored onto the new owner', () => {
  const t = tree({ 'proc/irq/38/smp_affinity_list': '0-1\n', 'proc/irq/38/virtio2-input.0/.keep': '' });
  const o = { root: t.root, stateDir: t.stateDir };
  const irq: Write = {
    key: 'irq/38/smp_affinity_list',
    path: '/proc/irq/38/smp_affinity_list',
    value: '1',
    compare: 'cpulist',
    group: 'affinity',
    guard: '/proc/irq/38/virtio2-input.0',
  };
  assert.deepEqual(applyWrites([irq], o).changed, [{ key: 'irq/38/smp_affinity_list', from: '0-1', to: '1' }]);
  rmSync(join(t.root, 'proc/irq/38/virtio2-input.0'), { recursive: true });
  mkdirSync(join(t.root, 'proc/irq/38/nvme0q3'));
  assert.deepEqual(
    checkOwnedDrift(o).drift,
    [{ key: 'irq/38/smp_affinity_list', want: '1', got: null }],
    'reported as gone',
  );
  const back = restoreAll(o);
  assert.deepEqual(back.missing, ['irq/38/smp_affinity_list']);
  assert.equal(t.read('proc/irq/38/smp_affinity_list'), '1\n', "the other device's IRQ is left alone");
  assert.ok(!existsSync(join(t.stateDir, 'tuning.json')));
});

test('a tampered tuning record: cleanup refuses and reports the foreign entries, restores only ours', () => {
  const t = tree({
    'proc/sys/net/core/somaxconn': '4096\n',
    'proc/irq/38/smp_affinity_list': '0-3\n',
    'sys/class/net/eth0/queues/rx-0/rps_cpus': '0\n',
    'etc/shadow': 'root:x:1::\n',
    'proc/sys/kernel/core_pattern': 'core\n',
  });
  applyWrites([sysctl('net.core.somaxconn', '8192')], t);
  assert.equal(t.read('proc/sys/net/core/somaxconn'), '8192\n');
  // Someone with write access to the state directory adds entries for the next privileged cleanup.
  const file = join(t.stateDir, 'tuning.json');
  const s = JSON.parse(readFileSync(file, 'utf8'));
  const entry = (path: string, original: string, compare = 'words') => ({
    path,
    compare,
    group: 'sysctl',
    original,
    applied: null,
  });
  s.entries['evil'] = entry('/etc/shadow', 'root::0::');
  s.entries['kernel.core_pattern'] = entry('/proc/sys/kernel/core_pattern', 'dump');
  s.entries['net.core.rmem_max'] = entry('/proc/sys/net/core/../../kernel/core_pattern', '1');
  s.entries['irq/99/smp_affinity_list'] = {
    ...entry('/proc/irq/99/smp_affinity_list', '0', 'cpulist'),
    group: 'affinity',
  };
  s.entries['eth0/rx-0/rps_cpus'] = {
    ...entry('/sys/class/net/eth0/queues/rx-0/rps_cpus', '$(reboot)', 'cpumask'),
    group: 'affinity',
  };
  s.entries['eth1/rx-0/rps_cpus'] = {
    ...entry('/sys/class/net/eth1/queues/rx-0/rps_cpus', '0', 'cpumask'),
    group: 'affinity',
  };
  writeFileSync(file, JSON.stringify(s));
  const r = restoreAll(t);
  assert.deepEqual(
    r.restored.map((x) => x.key),
    ['net.core.somaxconn'],
  );
  assert.deepEqual(
    r.refused.map((x) => `${x.key}: ${x.reason}`),
    [
      'evil: /etc/shadow is not a path tpfleet writes',
      'kernel.core_pattern: /proc/sys/kernel/core_pattern is not a sysctl tpfleet sets',
      'net.core.rmem_max: /proc/sys/net/core/../../kernel/core_pattern is not a sysctl tpfleet sets',
      'irq/99/smp_affinity_list: IRQ 99 does not exist on this host',
      'eth0/rx-0/rps_cpus: the value is not a kernel value (numbers, words, CPU lists or masks on one line)',
      'eth1/rx-0/rps_cpus: queue rx-0 of eth1 does not exist on this host',
    ],
  );
  assert.equal(t.read('etc/shadow'), 'root:x:1::\n', 'nothing foreign written');
  assert.equal(t.read('proc/sys/kernel/core_pattern'), 'core\n');
  assert.equal(t.read('sys/class/net/eth0/queues/rx-0/rps_cpus'), '0\n');
  assert.equal(t.read('proc/sys/net/core/somaxconn'), '4096\n', 'ours restored');
  assert.ok(!existsSync(file), 'the record is gone: nothing is owned any more');
});

test('a scoped apply (agent-watch: /proc/sys/net only) neither writes nor releases anything outside the scope', () => {
  const t = tree({
    'proc/sys/net/core/somaxconn': '4096\n',
    'proc/sys/net/core/busy_read': '0\n',
    'proc/sys/fs/file-max': '1000\n',
  });
  const o = { root: t.root, stateDir: t.stateDir };
  applyWrites([sysctl('net.core.busy_read', '50'), sysctl('fs.file-max', '2000')], o);
  const scoped = { ...o, scope: '/proc/sys/net/' };
  const r = applyWrites([sysctl('net.core.somaxconn', '8192'), sysctl('fs.file-max', '3000')], scoped);
  assert.deepEqual(r.changed, [{ key: 'net.core.somaxconn', from: '4096', to: '8192' }]);
  assert.deepEqual(
    r.released.restored.map((x) => x.key),
    ['net.core.busy_read'],
    'a net key that left: restored',
  );
  assert.equal(t.read('proc/sys/fs/file-max'), '2000\n', 'out of scope: untouched, still owned');
  const owned = JSON.parse(readFileSync(join(t.stateDir, 'tuning.json'), 'utf8')).entries;
  assert.deepEqual(Object.keys(owned).sort(), ['fs.file-max', 'net.core.somaxconn']);
  restoreAll(o);
  assert.equal(t.read('proc/sys/fs/file-max'), '1000\n');
  assert.equal(t.read('proc/sys/net/core/somaxconn'), '4096\n');
});
