// The sidecar's config reloader against a fake process (the netns tier, e2e/reload.test.ts, runs
// the real sidecar): what reaches the engine, the logger and the egress policy, and what does not.
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { parseNodeConfigText } from '../api/load.ts';
import { ConfigReloader, renderReloadMetrics } from './reload.ts';

const HEAD = 'apiVersion: tpfleet.io/v1alpha1\nkind: NodeConfig\n';

function setup(first: string) {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-sreload-'));
  const file = join(dir, 'nodeconfig.yaml');
  const put = (text: string) => {
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file);
  };
  put(first);
  const calls: string[] = [];
  const r = new ConfigReloader(
    file,
    parseNodeConfigText(first),
    {
      setOptions: (o) => void calls.push(`options idle=${o.idleTimeoutMs} max=${o.maxConnections} hook=${o.hook}`),
      setLogLevel: (l) => void calls.push(`level ${l}`),
      setPolicy: async (p) => void calls.push(`policy ${p.rules.length} ${p.defaultAction}`),
    },
    pino({ level: 'silent' }),
    { hook: true },
  );
  return { r, put, calls, done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('timeouts, limits, log level and the policy reload in place; forced options stay', async () => {
  const s = setup(`${HEAD}proxy: {timeouts: {idle: 10s}}\n`);
  try {
    assert.equal(await s.r.check(), 'unchanged');
    s.put(
      `${HEAD}proxy: {timeouts: {idle: 20s}, maxConnections: 99, logLevel: debug}\npolicy: {defaultAction: Deny}\n`,
    );
    assert.equal(await s.r.check(), 'applied');
    assert.deepEqual(s.calls, ['options idle=20000 max=99 hook=true', 'level debug', 'policy 0 Deny']);
    assert.match(renderReloadMetrics('p_', s.r), /p_config_reloads_total\{result="applied"\} 1/);
  } finally {
    s.done();
  }
});

test('a restart field or a document that does not parse is refused once; the config in force stays', async () => {
  const s = setup(`${HEAD}proxy: {timeouts: {idle: 10s}}\n`);
  try {
    s.put(`${HEAD}proxy: {listenPort: 15999}\n`);
    assert.equal(await s.r.check(), 'refused');
    s.put(`${HEAD}proxy: {timeouts: {idle: nope}}\n`);
    assert.equal(await s.r.check(), 'refused');
    assert.equal(await s.r.check(), 'unchanged', 'logged once, not on every poll');
    assert.deepEqual(s.calls, []);
    assert.match(renderReloadMetrics('p_', s.r), /p_config_reloads_total\{result="refused"\} 2/);
  } finally {
    s.done();
  }
});

test('the file watch picks a renamed file up without a poll', async () => {
  const s = setup(`${HEAD}proxy: {timeouts: {idle: 10s}}\n`);
  try {
    s.r.start(60_000);
    s.put(`${HEAD}proxy: {timeouts: {idle: 30s}}\n`);
    const deadline = Date.now() + 3000;
    while (s.calls.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(s.calls.slice(0, 1), ['options idle=30000 max=20000 hook=true']);
  } finally {
    s.r.stop();
    s.done();
  }
});
