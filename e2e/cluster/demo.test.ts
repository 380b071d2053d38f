// The README's run command on a fresh state directory: `npm run demo` brings the local-real
// cluster up through the detached supervisor, shows interception on a real node and scaling, and
// leaves the cluster running; `cluster:status` finds it, `cluster:down` removes every trace.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { localRealProvider } from './local-real.ts';
import { readUp } from './supervisor.ts';

const REPO = join(import.meta.dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'tpfleet-demo-state-'));
const env = { ...process.env, TPFLEET_CLUSTER_DIR: dir };
const reason = process.getuid?.() !== 0 ? 'not root' : await localRealProvider.unavailable();

function npm(script: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn('bash', [join(REPO, 'scripts', 'tpfleet.sh'), ...script.split(' ')], {
      cwd: REPO,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', (code) => resolve({ code, out }));
  });
}
const netns = () =>
  new Promise<string>((r) =>
    execFile('ip', ['netns', 'list'], (_e, o) =>
      r(
        String(o)
          .split('\n')
          .map((l) => l.split(' ')[0])
          .sort()
          .join(' '),
      ),
    ),
  );
const before = await netns();

after(async () => {
  if (readUp(dir)) await npm('cluster down');
  rmSync(dir, { recursive: true, force: true });
});

test('npm run demo: the cluster comes up, traffic is intercepted on a real node, scaling moves nodes; cluster:down removes everything', {
  skip: reason ?? undefined,
}, async () => {
  const demo = await npm('demo');
  assert.equal(demo.code, 0, demo.out.slice(-4000));
  const row = (what: string) =>
    demo.out
      .split('\n')
      .find((l) => l.startsWith(`| ${what}`))
      ?.split('|')
      .map((x) => x.trim());
  const hit = row('intercepted (8080)'),
    miss = row('not intercepted (9090)');
  assert.ok(hit && miss, demo.out.slice(-4000));
  // | connection | client pod | client asked for | server saw destination | server saw source | carried by |
  assert.equal(hit[4], hit[3]!.replace(/^\[|\]/g, ''), 'the server saw the original destination');
  assert.equal(
    hit[5]!.slice(0, hit[5]!.lastIndexOf(':')),
    hit[2],
    'keepClientIp: the server saw the client pod address',
  );
  assert.equal(hit[6], 'sidecar');
  assert.equal(miss[6], 'direct');
  assert.match(demo.out, /drained, its rules, routes and tuning were restored, and it lost its label/);
  assert.match(demo.out, /npm run cluster:down/);

  const s = readUp(dir);
  assert.ok(s, 'the cluster keeps running after the demo');
  const status = await npm('cluster status');
  assert.match(status.out, new RegExp(`kubeconfig: ${s.kubeconfig}`));
  const again = await npm('cluster up');
  assert.equal(again.code, 0);
  assert.match(again.out, /tpfleet cluster is up/, 'up again reuses the running cluster');

  const down = await npm('cluster down');
  assert.equal(down.code, 0, down.out);
  assert.equal(readUp(dir), undefined);
  assert.throws(() => process.kill(s.pid, 0), 'the supervisor is gone');
  assert.equal(await netns(), before, 'no network namespace is left behind');
});
