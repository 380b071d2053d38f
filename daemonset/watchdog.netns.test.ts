// Privileged: fail policies with a dead or hung proxy, and the watchdog switching the gate chain
// within 2 s. The "proxy" is testdata/tcptool.py: a transparent listener plus GET /healthz.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import { createTopology, privilegedSkipReason, waitFor, type Topology } from '../e2e/netns.ts';
import { PORTS_CONFIG, UDP_CONFIG } from './traffic.testkit.ts';
import {
  agent,
  ask,
  connect,
  logLines,
  snapshot,
  spawnAgent,
  startTool,
  stop,
  warmUp,
  workdir,
} from './agent.testkit.ts';
import type { Backend } from './types.ts';

const skip = privilegedSkipReason();
const BOUND_MS = 2000;

interface Env {
  t: Topology;
  proxy: ChildProcess;
  watch?: ChildProcess;
  logs: Array<Record<string, unknown>>;
  restartProxy(): Promise<void>;
  /** Waits for the watchdog's transition log line and returns its time (ms since epoch). */
  transition(health: 'healthy' | 'failed', after: number): Promise<number>;
}

async function withProxy(
  backend: Backend,
  policy: string,
  watchdog: boolean,
  fn: (e: Env) => Promise<void>,
  config = PORTS_CONFIG,
): Promise<void> {
  const t = await createTopology('dw');
  const w = workdir();
  const procs: ChildProcess[] = [];
  try {
    procs.push(await startTool(t.server.ns, ['serve', '8080,8081', 'SERVER']));
    procs.push(await startTool(t.server.ns, ['udpserve', '5353', 'SERVER']));
    await warmUp(t.client.ns, [t.server.v4, t.server.v6], 8081);
    const env: Env = {
      t,
      logs: [],
      proxy: await startTool(t.proxy.ns, ['tproxy', '15101', '15190']),
      async restartProxy() {
        env.proxy = await startTool(t.proxy.ns, ['tproxy', '15101', '15190']);
        procs.push(env.proxy);
      },
      async transition(health, after) {
        let at = 0;
        await waitFor(
          `watchdog: ${health}`,
          async () => {
            const l = env.logs.find(
              (x) => x.msg === 'proxy health changed' && x.health === health && Number(x.time) >= after,
            );
            at = Number(l?.time ?? 0);
            return l !== undefined;
          },
          // Waiting only: the bound is asserted on the logged time. The agent's start-up (Node and tsx)
          // alone took over 5 s on 2 cores shared with other runs.
          15_000,
        );
        return at;
      },
    };
    procs.push(env.proxy);
    const args = ['--config', w.config(config(policy)), '--state-dir', w.stateDir];
    const r = await agent(t.proxy.ns, ['apply', '--backend', backend, ...args]);
    assert.equal(r.code, 0, r.stderr);
    if (watchdog) {
      const watch = spawnAgent(t.proxy.ns, ['watch', ...args]);
      procs.push(watch);
      env.watch = watch;
      env.logs = logLines(watch);
      await env.transition('healthy', 0);
    }
    assert.equal(
      await connect(t.client.ns, t.server.v4, 8080),
      `PROXY ${t.server.v4} 8080`,
      'intercepted while healthy',
    );
    await fn(env);
    const c = await agent(t.proxy.ns, ['cleanup', '--state-dir', w.stateDir]);
    assert.equal(c.code, 0, c.stderr);
  } finally {
    // SIGCONT first: a stopped process cannot act on SIGKILL until it is resumed.
    for (const p of procs.reverse()) {
      p.kill('SIGCONT');
      await stop(p);
    }
    await t.destroy();
    w.remove();
  }
}

test('nftables FailOpen without a listener: connections go directly to the server', { skip }, () =>
  withProxy('nftables', 'FailOpen', false, async ({ t, proxy }) => {
    await stop(proxy);
    assert.equal(await connect(t.client.ns, t.server.v4, 8080), `SERVER ${t.server.v4} 8080`);
    assert.equal(await connect(t.client.ns, t.server.v6, 8080), `SERVER ${t.server.v6} 8080`);
  }),
);

test(
  'iptables-nft FailOpen: within 2 s of the listener dying the watchdog bypasses the proxy, then restores it',
  { skip },
  (ctx) =>
    withProxy('iptables-nft', 'FailOpen', true, async (e) => {
      const { t } = e;
      const before = await snapshot(t.proxy.ns);
      const t0 = Date.now();
      await stop(e.proxy);
      const at = await e.transition('failed', t0);
      assert.ok(at - t0 < BOUND_MS, `gate switched after ${at - t0} ms`);
      ctx.diagnostic(`gate switched ${at - t0} ms after the proxy failed`);
      assert.equal(await connect(t.client.ns, t.server.v4, 8080), `SERVER ${t.server.v4} 8080`);
      assert.equal(await connect(t.client.ns, t.server.v6, 8080), `SERVER ${t.server.v6} 8080`);
      // The watchdog touched nothing but its own chains (the bypass is the one FailOpen fills).
      const during = await snapshot(t.proxy.ns);
      for (const k of ['iptables-nft-save', 'ip6tables-nft-save']) {
        assert.match(during[k]!, /^-A TPFLEET-BYPASS .*-j ACCEPT$/m);
        assert.equal(during[k]!.replace(/^-A TPFLEET-BYPASS .*\n/gm, ''), before[k]);
      }
      assert.equal(during['ip rule'], before['ip rule']);

      const t1 = Date.now();
      await e.restartProxy();
      await e.transition('healthy', t1);
      assert.equal(await connect(t.client.ns, t.server.v4, 8080), `PROXY ${t.server.v4} 8080`);
      assert.deepEqual(await snapshot(t.proxy.ns), before, 'the gate is empty again');
      const exited = new Promise<number | null>((r) => e.watch!.once('exit', (code) => r(code)));
      e.watch!.kill('SIGTERM');
      assert.equal(await exited, 0, 'the watchdog stops cleanly on SIGTERM');
      assert.ok(e.logs.some((l) => l.msg === 'watchdog stopped'));
    }),
);

test(
  'nftables FailOpen with a hung proxy (SIGSTOP): bypassed within 2 s, intercepted again after SIGCONT',
  { skip },
  (ctx) =>
    withProxy('nftables', 'FailOpen', true, async (e) => {
      const { t } = e;
      const t0 = Date.now();
      e.proxy.kill('SIGSTOP'); // the socket keeps listening; /healthz stops answering
      const at = await e.transition('failed', t0);
      assert.ok(at - t0 < BOUND_MS, `gate switched after ${at - t0} ms`);
      ctx.diagnostic(`gate switched ${at - t0} ms after the proxy failed`);
      assert.equal(await connect(t.client.ns, t.server.v4, 8080), `SERVER ${t.server.v4} 8080`);
      const t1 = Date.now();
      e.proxy.kill('SIGCONT');
      await e.transition('healthy', t1);
      assert.equal(await connect(t.client.ns, t.server.v4, 8080), `PROXY ${t.server.v4} 8080`);
    }),
);

test(
  'iptables-legacy FailClosed with a hung proxy: dropped within 2 s instead of hanging in the backlog',
  { skip },
  (ctx) =>
    withProxy('iptables-legacy', 'FailClosed', true, async (e) => {
      const { t } = e;
      const t0 = Date.now();
      e.proxy.kill('SIGSTOP');
      const at = await e.transition('failed', t0);
      assert.ok(at - t0 < BOUND_MS, `gate switched after ${at - t0} ms`);
      ctx.diagnostic(`gate switched ${at - t0} ms after the proxy failed`);
      // Without the gate the kernel would still complete the handshake ("ERR read"); the drop
      // makes the connect itself fail.
      assert.match(await connect(t.client.ns, t.server.v4, 8080, 0.8), /^ERR connect .*timed out/);
      assert.match(await connect(t.client.ns, t.server.v6, 8080, 0.8), /^ERR connect .*timed out/);
      const t1 = Date.now();
      e.proxy.kill('SIGCONT');
      await e.transition('healthy', t1);
      assert.equal(await connect(t.client.ns, t.server.v4, 8080), `PROXY ${t.server.v4} 8080`);
    }),
);

test(
  'UDP, iptables-legacy FailOpen: within 2 s of the proxy dying datagrams go directly to the server, then to the proxy again',
  { skip },
  (ctx) =>
    withProxy(
      'iptables-legacy',
      'FailOpen',
      true,
      async (e) => {
        const { t } = e;
        for (const h of [t.server.v4, t.server.v6])
          assert.equal(await ask(t.client.ns, h, 5353), `PROXY ${h} 5353 from ${h} 5353`);
        const t0 = Date.now();
        await stop(e.proxy); // iptables TPROXY alone would drop: the bypass is what lets them through
        const at = await e.transition('failed', t0);
        assert.ok(at - t0 < BOUND_MS, `gate switched after ${at - t0} ms`);
        ctx.diagnostic(`gate switched ${at - t0} ms after the proxy died`);
        for (const h of [t.server.v4, t.server.v6])
          assert.equal(await ask(t.client.ns, h, 5353), `SERVER 5353 from ${h} 5353`);
        const t1 = Date.now();
        await e.restartProxy();
        await e.transition('healthy', t1);
        assert.equal(await ask(t.client.ns, t.server.v4, 5353), `PROXY ${t.server.v4} 5353 from ${t.server.v4} 5353`);
      },
      UDP_CONFIG,
    ),
);

test(
  'UDP, nftables FailClosed: within 2 s of the proxy dying datagrams are dropped (nft tproxy alone would let them pass)',
  { skip },
  (ctx) =>
    withProxy(
      'nftables',
      'FailClosed',
      true,
      async (e) => {
        const { t } = e;
        const t0 = Date.now();
        await stop(e.proxy);
        const at = await e.transition('failed', t0);
        assert.ok(at - t0 < BOUND_MS, `gate switched after ${at - t0} ms`);
        ctx.diagnostic(`gate switched ${at - t0} ms after the proxy died`);
        assert.match((await snapshot(t.proxy.ns))['nft list ruleset']!, /watchdog: proxy down, FailClosed drop/);
        for (const h of [t.server.v4, t.server.v6])
          assert.match(await ask(t.client.ns, h, 5353, 0.8), /^ERR .*timed out/);
        const t1 = Date.now();
        await e.restartProxy();
        await e.transition('healthy', t1);
        assert.equal(await ask(t.client.ns, t.server.v6, 5353), `PROXY ${t.server.v6} 5353 from ${t.server.v6} 5353`);
      },
      UDP_CONFIG,
    ),
);
