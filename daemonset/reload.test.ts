// The Reloader's decisions without a node (the netns tier, e2e/reload.test.ts, applies for real):
// what is applied, skipped or refused, the last good config kept, and what is reported.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { POD_HASH_ANNOTATION, shortHash, type NodeConfigReport } from '../api/reload.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { Reloader, writeLive } from './reload.ts';

const HEAD = 'apiVersion: tpfleet.io/v1alpha1\nkind: NodeConfig\n';
const A = `${HEAD}interception: {ports: [{port: 80}]}\n`,
  B = `${HEAD}interception: {ports: [{port: 81}]}\n`,
  C = `${HEAD}interception: {ports: [{port: 82}]}\n`;
const cm = (text: string, podHash?: string) => ({
  data: { 'nodeconfig.yaml': text },
  metadata: { annotations: podHash ? { [POD_HASH_ANNOTATION]: podHash } : ({} as Record<string, string>) },
});

function setup(fail?: (c: NodeConfig) => boolean, initial = A) {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-reload-'));
  writeLive(dir, initial);
  const applied: number[] = [],
    changes: string[][] = [],
    reports: NodeConfigReport[] = [];
  let gates = 0;
  const r = new Reloader({
    liveDir: dir,
    podHash: 'p1',
    log: pino({ level: 'silent' }),
    node: {
      apply: async (c, changed) => {
        applied.push(c.interception.ports[0]!.port);
        changes.push([...changed]);
        if (fail?.(c)) throw new Error('preflight refused to apply (nothing was changed): table 3333 in use');
      },
      reassertGate: async () => void gates++,
    },
    publish: async (x) => void reports.push(x),
  });
  return {
    r,
    dir,
    applied,
    changes,
    reports,
    gates: () => gates,
    done: () => rmSync(dir, { recursive: true, force: true }),
  };
}

test('a new document is applied, written for the sidecar and reported; the same one again only reports', async () => {
  const s = setup();
  try {
    await s.r.offer(cm(B, 'p1'));
    assert.deepEqual(s.applied, [81]);
    assert.equal(readFileSync(join(s.dir, 'nodeconfig.yaml'), 'utf8'), B);
    assert.deepEqual(s.reports, [{ hash: shortHash(B) }]);
    assert.equal(s.gates(), 1, 'the gate is re-asserted after the rule document recreated it');
    await s.r.offer(cm(B, 'p1'));
    assert.deepEqual(s.applied, [81], 'nothing applied twice');
    assert.equal(s.reports.length, 2);
  } finally {
    s.done();
  }
});

test('another pod hash is not applied here: the rollout replaces this pod', async () => {
  const s = setup();
  try {
    await s.r.offer(cm(B, 'p2'));
    assert.deepEqual(s.applied, []);
    assert.equal(readFileSync(join(s.dir, 'nodeconfig.yaml'), 'utf8'), A);
    assert.deepEqual(s.reports, []);
  } finally {
    s.done();
  }
});

test('a refused change restores the last good config, keeps the live file, and names the changed field', async () => {
  const s = setup((c) => c.interception.ports[0]!.port === 81);
  try {
    await s.r.offer(cm(B, 'p1'));
    assert.deepEqual(s.applied, [81, 80], 'the failed attempt, then the last good config again');
    assert.equal(readFileSync(join(s.dir, 'nodeconfig.yaml'), 'utf8'), A);
    const last = s.reports.at(-1)!;
    assert.equal(last.hash, shortHash(A));
    assert.equal(last.refused?.hash, shortHash(B));
    assert.match(last.refused!.message, /^changing interception\.ports: preflight refused .*table 3333 in use$/);
    await s.r.offer(cm(C, 'p1'));
    assert.deepEqual(s.reports.at(-1), { hash: shortHash(C) }, 'a later good change clears the refusal');
  } finally {
    s.done();
  }
});

test('a restart field or a bad document is refused without touching the node', async () => {
  const s = setup();
  try {
    await s.r.offer(cm(`${HEAD}proxy: {listenPort: 15999}\ninterception: {ports: [{port: 80}]}\n`, 'p1'));
    assert.match(s.reports.at(-1)!.refused!.message, /^proxy\.listenPort: cannot change without a new pod$/);
    await s.r.offer(cm(`${HEAD}interception: {ports: [{port: 0}]}\n`, 'p1'));
    assert.match(s.reports.at(-1)!.refused!.message, /interception\.ports\[0\]\.port/);
    assert.deepEqual(s.applied, []);
  } finally {
    s.done();
  }
});

test('documents arriving during a reload: only the newest is applied next', async () => {
  const s = setup();
  try {
    const first = s.r.offer(cm(B, 'p1'));
    void s.r.offer(cm(`${HEAD}interception: {ports: [{port: 90}]}\n`, 'p1'));
    await s.r.offer(cm(C, 'p1'));
    await first;
    assert.deepEqual(s.applied, [81, 82]);
    assert.equal(s.r.hash, shortHash(C));
  } finally {
    s.done();
  }
});

test('a net.* sysctl change applies in place (the node is told what changed); a host-wide one is left to the rollout', async () => {
  const T = (sysctls: string) => `${HEAD}interception: {ports: [{port: 80}]}\ntuning: {sysctls: ${sysctls}}\n`;
  // Starts on throughput: latency resolves fs.file-max alike, so only net.* keys change.
  const s = setup((c) => c.tuning.sysctls.overrides['net.ipv4.tcp_fin_timeout'] === '7', T('{profile: throughput}'));
  try {
    await s.r.offer(cm(T('{profile: latency, overrides: {net.core.somaxconn: 4096}}'), 'p1'));
    assert.deepEqual(s.changes.at(-1), ['tuning.sysctls.overrides.net.core.somaxconn', 'tuning.sysctls.profile']);
    assert.deepEqual(s.reports.at(-1), { hash: s.r.hash }, 'applied: the hash enforced covers tuning');
    const good = s.r.hash;
    await s.r.offer(cm(T('{profile: latency, overrides: {net.ipv4.tcp_fin_timeout: 7}}'), 'p1'));
    const refused = s.reports.at(-1)!;
    assert.equal(refused.hash, good, 'the last good config stays in force');
    assert.match(refused.refused!.message, /tuning\.sysctls\.overrides\.net\.ipv4\.tcp_fin_timeout/);
    assert.deepEqual(s.changes.at(-1), s.changes.at(-2), 'the restore is told the same fields (it retunes back)');
    const before = s.applied.length;
    await s.r.offer(cm(T('{profile: conntrack-heavy}'), 'p1'));
    assert.equal(s.applied.length, before, 'nothing applied');
    assert.match(
      s.reports.at(-1)!.refused!.message,
      /tuning\.sysctls \(host-wide keys\): cannot change without a new pod/,
    );
  } finally {
    s.done();
  }
});
