// Privileged: the datapath self-test (ADR 0021) on each backend, with the real sidecar. The probe
// passes with the rules in force and fails when the tproxy rule or the fwmark ip rule is removed and
// when the sidecar is not listening; cleanup leaves the node (rules, links, routes, neighbours)
// byte-identical; the watch loop reports a removed rule within its retry bound; a self-test racing a
// cleanup never leaves a link behind.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PROBE_OUT } from '../api/selftest.ts';
import { createTopology, nsExec, privilegedSkipReason, waitFor, type Topology } from '../e2e/netns.ts';
import { startSidecar, type Proc } from '../e2e/proc.ts';
import { agent, logLines, snapshot, spawnAgent, stop, workdir, type Workdir } from './agent.testkit.ts';
import { normalizeLegacy, PORTS_CONFIG } from './traffic.testkit.ts';
import type { Backend } from './types.ts';

const skip = privilegedSkipReason();

/** Everything the probe link adds beside the rules: links, main-table routes, neighbours. */
async function linkSnapshot(ns: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const argv of [
    ['ip', '-o', 'link'],
    ['ip', '-4', 'route', 'show', 'table', 'main'],
    ['ip', '-6', 'route', 'show', 'table', 'main'],
    ['ip', 'neigh', 'show', 'nud', 'permanent'],
    ['ip', '-o', 'addr'],
  ])
    out[argv.join(' ')] = (await nsExec(ns, argv)).replace(/\\\s+altname.*$/gm, '');
  return out;
}

async function nodeSnapshot(ns: string): Promise<Record<string, string>> {
  // normalizeLegacy: an iptables-legacy table, once initialized, cannot be removed (traffic.testkit.ts).
  return normalizeLegacy({ ...(await snapshot(ns)), ...(await linkSnapshot(ns)) });
}

interface Env {
  t: Topology;
  w: Workdir;
  args: string[];
  selftest(): Promise<{ code: number; status?: string; reason?: string; message?: string }>;
}

async function withNode(backend: Backend, policy: string, fn: (e: Env, sidecar: Proc) => Promise<void>) {
  const t = await createTopology('st');
  const w = workdir();
  let sidecar: Proc | undefined;
  try {
    const before = await nodeSnapshot(t.proxy.ns);
    const live = join(w.dir, 'live');
    mkdirSync(live);
    const args = ['--config', w.config(PORTS_CONFIG(policy)), '--state-dir', w.stateDir, '--backend', backend];
    const r = await agent(t.proxy.ns, ['apply', ...args, '--live-dir', live]);
    assert.equal(r.code, 0, r.stderr);
    sidecar = await startSidecar(t.proxy.ns, join(live, 'nodeconfig.yaml'));
    const env: Env = {
      t,
      w,
      args,
      async selftest() {
        const s = await agent(t.proxy.ns, ['selftest', ...args]);
        const c = s.stdout.trim() ? (JSON.parse(s.stdout.trim().split('\n').at(-1)!) as Record<string, string>) : {};
        return { code: s.code, ...c };
      },
    };
    await fn(env, sidecar);
    await sidecar.stop();
    const c = await agent(t.proxy.ns, ['cleanup', '--state-dir', w.stateDir]);
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(await nodeSnapshot(t.proxy.ns), before, 'cleanup leaves the node as it was');
  } finally {
    await sidecar?.stop(500);
    await t.destroy();
    w.remove();
  }
}

/** Removes the tproxy rule (every family) as a broken or tampered node would lack it. */
async function dropTproxyRule(ns: string, backend: Backend): Promise<void> {
  if (backend === 'nftables') {
    const text = await nsExec(ns, ['nft', '-a', 'list', 'chain', 'inet', 'tpfleet', 'listen']);
    const handle = /tproxy to :15101 .* # handle (\d+)/.exec(text)?.[1];
    assert.ok(handle, `tproxy rule in:\n${text}`);
    await nsExec(ns, ['nft', 'delete', 'rule', 'inet', 'tpfleet', 'listen', 'handle', handle]);
    return;
  }
  const v = backend === 'iptables-nft' ? 'nft' : 'legacy';
  for (const bin of [`iptables-${v}`, `ip6tables-${v}`]) {
    const rules = await nsExec(ns, [bin, '-t', 'mangle', '-S', 'TPFLEET-TPROXY']);
    const n = rules
      .split('\n')
      .filter((l) => l.startsWith('-A '))
      .findIndex((l) => l.includes('-j TPROXY'));
    assert.ok(n >= 0, rules);
    await nsExec(ns, [bin, '-t', 'mangle', '-D', 'TPFLEET-TPROXY', String(n + 1)]);
  }
}

async function selftestCount(ns: string): Promise<number> {
  const text = await nsExec(ns, ['curl', '-s', 'http://127.0.0.1:15190/metrics']);
  return Number(/tpfleet_proxy_connections_closed_total\{result="selftest"\} (\d+)/.exec(text)?.[1] ?? -1);
}

for (const [backend, policy] of [
  ['nftables', 'FailClosed'],
  ['iptables-nft', 'FailOpen'],
  ['iptables-legacy', 'FailClosed'],
] as const) {
  test(
    `${backend} ${policy}: the self-test passes with the rules in force and fails without the tproxy rule, the fwmark rule or a listener`,
    { skip },
    () =>
      withNode(backend, policy, async (e, sidecar) => {
        const ns = e.t.proxy.ns;
        const ok = await e.selftest();
        assert.equal(ok.code, 0, JSON.stringify(ok));
        assert.equal(ok.status, 'True');
        assert.equal(ok.reason, 'Passed');
        // Both families, each answered by the sidecar itself (not dialled upstream).
        assert.equal(await selftestCount(ns), 2);

        await dropTproxyRule(ns, backend);
        const noTproxy = await e.selftest();
        assert.equal(noTproxy.code, 1, JSON.stringify(noTproxy));
        assert.equal(noTproxy.reason, 'ProbeFailed');
        assert.match(noTproxy.message ?? '', /IPv4: .*; IPv6: /);
        assert.equal(await selftestCount(ns), 2, 'nothing reached the sidecar');

        const re = await agent(ns, ['apply', ...e.args]);
        assert.equal(re.code, 0, re.stderr);
        assert.equal((await e.selftest()).code, 0, 're-apply restores the datapath');

        await nsExec(ns, ['ip', '-4', 'rule', 'del', 'priority', '32000']);
        const noRule = await e.selftest();
        assert.equal(noRule.code, 1, JSON.stringify(noRule));
        assert.match(noRule.message ?? '', /IPv4: /);
        assert.doesNotMatch(noRule.message ?? '', /IPv6: /, 'IPv6 still has its fwmark rule');
        const re2 = await agent(ns, ['apply', ...e.args]);
        assert.equal(re2.code, 0, re2.stderr);
        assert.equal((await e.selftest()).code, 0);

        await sidecar.stop();
        const noListener = await e.selftest();
        assert.equal(noListener.code, 1, JSON.stringify(noListener));
        assert.equal(noListener.reason, 'ProbeFailed');
      }),
  );
}

test(
  'a netns where new interfaces get no IPv6 (conf/default, as in many containers) and strict rp_filter: the probe passes',
  {
    skip,
  },
  () =>
    withNode('iptables-nft', 'FailClosed', async (e) => {
      const ns = e.t.proxy.ns;
      await nsExec(ns, ['sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv4.conf.all.rp_filter=1']);
      try {
        const ok = await e.selftest();
        assert.equal(ok.code, 0, JSON.stringify(ok));
        assert.equal(await selftestCount(ns), 2);
      } finally {
        await nsExec(ns, ['sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=0', 'net.ipv4.conf.all.rp_filter=0']);
      }
    }),
);

test(
  'watch: the self-test loop reports a removed rule within its retry bound, recovers, and reports a dead sidecar',
  {
    skip,
  },
  () =>
    withNode('nftables', 'FailOpen', async (e, sidecar) => {
      const ns = e.t.proxy.ns;
      let watch: ChildProcess | undefined;
      try {
        watch = spawnAgent(ns, ['watch', ...e.args, '--selftest-interval', '1']);
        const logs = logLines(watch);
        const seen = (reason: string, after: number) =>
          logs.some((l) => l.msg === 'datapath self-test' && l.reason === reason && Number(l.time) >= after);
        await waitFor('a passing self-test', async () => seen('Passed', 0), 15_000);
        const link = await nsExec(ns, ['ip', '-d', 'link', 'show', 'dev', PROBE_OUT]);
        assert.match(link, /veth/);
        const cut = Date.now();
        await dropTproxyRule(ns, 'nftables');
        await waitFor('the failure reported', async () => seen('ProbeFailed', cut), 6000);
        const failedAt = Number(logs.find((l) => l.reason === 'ProbeFailed')?.time);
        // interval 1 s + one probe and its retry (2 s each at most) = the bound.
        assert.ok(failedAt - cut < 5500, `reported after ${failedAt - cut} ms`);
        const fix = Date.now();
        assert.equal((await agent(ns, ['apply', ...e.args])).code, 0);
        await waitFor('the pass reported again', async () => seen('Passed', fix), 6000);
        // The sidecar dies: the watchdog's FailOpen bypass is in force and the loop says so (no probing).
        const killed = Date.now();
        await sidecar.stop();
        await waitFor('the dead sidecar reported', async () => seen('ProxyDown', killed), 8000);
      } finally {
        await stop(watch, 'SIGTERM');
      }
    }),
);

test(
  'a self-test racing a cleanup never creates the probe link after it: the creation waits for the state lock and re-reads the state',
  { skip },
  () =>
    withNode('nftables', 'FailClosed', async (e) => {
      const ns = e.t.proxy.ns;
      // A cleanup in progress: it holds the state directory's lock (lock.ts's protocol), and the
      // link is already gone (apply never creates it; the first self-test does).
      const holder = spawn('flock', ['--exclusive', e.w.stateDir, 'sh', '-c', 'echo locked && exec cat'], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      await once(holder.stdout!, 'data');
      const test = e.selftest();
      // The self-test started while the state still recorded the link; the cleanup then removes the
      // state and lets go of the lock.
      await sleep(1500);
      const state = join(e.w.stateDir, 'state.json');
      const kept = readFileSync(state);
      rmSync(state);
      holder.stdin!.end();
      const r = await test;
      writeFileSync(state, kept); // for withNode's own cleanup and its before/after comparison
      assert.equal(r.code, 1, JSON.stringify(r));
      assert.equal(r.reason, 'ProbeSetupFailed');
      assert.match(r.message ?? '', /no state records the probe link/);
      const link = await nsExec(ns, ['ip', 'link', 'show', 'dev', PROBE_OUT]).catch(() => 'absent');
      assert.equal(link, 'absent', 'no probe link without a state recording it');
    }),
);
