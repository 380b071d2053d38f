// Privileged traffic tests, shared by the three backends: the rules really steer the configured
// port to a transparent listener (which sees the original destination as its local address),
// leave other ports alone, apply the fail policy when no listener exists, and cleanup restores
// the host.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import { createTopology, privilegedSkipReason } from '../e2e/netns.ts';
import { agent, ask, connect, snapshot, startTool, stop, warmUp, workdir } from './agent.testkit.ts';
import type { Backend } from './types.ts';

export const PORTS_CONFIG = (policy: string) =>
  `interception: {ports: [{port: 8080}], interfaces: ["to-c*"], failurePolicy: ${policy}}\n`;

/**
 * Known kernel limit: an iptables-legacy table, once initialized in a netns, cannot be removed
 * again. For the legacy saves ONLY, a mangle table with nothing but empty builtin chains with
 * ACCEPT policies is therefore treated as absent.
 */
export function normalizeLegacy(s: Record<string, string>): Record<string, string> {
  const out = { ...s };
  for (const k of ['iptables-legacy-save', 'ip6tables-legacy-save']) {
    out[k] = (s[k] ?? '').replace(
      /\*mangle\n(?::(?:PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT \[0:0\]\n)+COMMIT\n?/,
      '',
    );
  }
  return out;
}

export const UDP_CONFIG = (policy: string) =>
  `interception: {protocols: [TCP, UDP], ports: [{port: 8080}], udpPorts: [{port: 5353}], interfaces: ["to-c*"], failurePolicy: ${policy}}\n`;

export function trafficTests(backend: Backend): void {
  test(`${backend}: UDP 5353 is steered to the transparent UDP listener and answered from the original destination, 5354 is not; FailClosed drops without a listener`, {
    skip: privilegedSkipReason(),
  }, async () => {
    const t = await createTopology('du');
    const w = workdir();
    const procs: ChildProcess[] = [];
    try {
      const { client, server } = t;
      const before = await snapshot(t.proxy.ns);
      procs.push(await startTool(server.ns, ['udpserve', '5353,5354', 'SERVER']));
      for (const h of [server.v4, server.v6]) assert.match(await ask(client.ns, h, 5354, 5), /^SERVER /, 'warm-up');
      const proxy = await startTool(t.proxy.ns, ['tproxy', '15101', '15190']);
      procs.push(proxy);
      const r = await agent(t.proxy.ns, [
        'apply',
        '--backend',
        backend,
        '--config',
        w.config(UDP_CONFIG('FailClosed')),
        '--state-dir',
        w.stateDir,
      ]);
      assert.equal(r.code, 0, r.stderr);
      for (const h of [server.v4, server.v6]) {
        // The reply comes from the address the client asked: it cannot tell a proxy answered.
        assert.equal(await ask(client.ns, h, 5353), `PROXY ${h} 5353 from ${h} 5353`);
        assert.equal(await ask(client.ns, h, 5354), `SERVER 5354 from ${h} 5354`, 'other UDP ports go direct');
        assert.equal(await connect(client.ns, h, 8080), `PROXY ${h} 8080`, 'TCP is still intercepted');
      }
      // Issue 14: a transparent socket bound to the original destination and not connected (the
      // engine's reply socket between bind() and connect()) must not take a client's datagram; the
      // UDP divert's tproxy lookup skips it and the listener answers. A bare socket match did not.
      const hold = await startTool(t.proxy.ns, ['udphold', `${server.v4},${server.v6}`, '5353']);
      procs.push(hold);
      let held = '';
      hold.stdout?.on('data', (d: Buffer) => (held += d.toString()));
      for (const h of [server.v4, server.v6])
        assert.equal(await ask(client.ns, h, 5353), `PROXY ${h} 5353 from ${h} 5353`, 'an unconnected socket met');
      assert.equal(held, '', 'no datagram was steered into the unconnected socket');
      await stop(hold);
      await stop(proxy);
      for (const h of [server.v4, server.v6])
        assert.match(await ask(client.ns, h, 5353, 0.8), /^ERR .*timed out/, 'FailClosed: no listener, dropped');

      const c = await agent(t.proxy.ns, ['cleanup', '--state-dir', w.stateDir]);
      assert.equal(c.code, 0, c.stderr);
      assert.equal(await ask(client.ns, server.v4, 5353), `SERVER 5353 from ${server.v4} 5353`);
      const after = await snapshot(t.proxy.ns);
      if (backend === 'iptables-legacy') assert.deepEqual(normalizeLegacy(after), normalizeLegacy(before));
      else assert.deepEqual(after, before);
    } finally {
      for (const p of procs) await stop(p);
      await t.destroy();
      w.remove();
    }
  });

  test(`${backend}: port 8080 is steered to the transparent listener, 8081 is not; FailClosed drops without a listener`, {
    skip: privilegedSkipReason(),
  }, async () => {
    const t = await createTopology('dt');
    const w = workdir();
    const procs: ChildProcess[] = [];
    try {
      const { client, server } = t;
      const before = await snapshot(t.proxy.ns);
      procs.push(await startTool(server.ns, ['serve', '8080,8081', 'SERVER']));
      await warmUp(client.ns, [server.v4, server.v6], 8081);
      const proxy = await startTool(t.proxy.ns, ['tproxy', '15101', '15190']);
      procs.push(proxy);
      const r = await agent(t.proxy.ns, [
        'apply',
        '--backend',
        backend,
        '--config',
        w.config(PORTS_CONFIG('FailClosed')),
        '--state-dir',
        w.stateDir,
      ]);
      assert.equal(r.code, 0, r.stderr);

      assert.equal(await connect(client.ns, server.v4, 8080), `PROXY ${server.v4} 8080`);
      assert.equal(await connect(client.ns, server.v6, 8080), `PROXY ${server.v6} 8080`);
      assert.equal(
        await connect(client.ns, server.v4, 8081),
        `SERVER ${server.v4} 8081`,
        'ports not configured go direct',
      );
      assert.equal(await connect(client.ns, server.v6, 8081), `SERVER ${server.v6} 8081`);

      await stop(proxy);
      const started = Date.now();
      assert.match(
        await connect(client.ns, server.v4, 8080, 0.8),
        /^ERR connect .*timed out/,
        'FailClosed: no listener, dropped',
      );
      assert.match(await connect(client.ns, server.v6, 8080, 0.8), /^ERR connect .*timed out/);
      assert.ok(Date.now() - started < 5000, 'the client fails within a bounded time');

      const c = await agent(t.proxy.ns, ['cleanup', '--state-dir', w.stateDir]);
      assert.equal(c.code, 0, c.stderr);
      assert.equal(
        await connect(client.ns, server.v4, 8080),
        `SERVER ${server.v4} 8080`,
        'after cleanup nothing is intercepted',
      );
      const after = await snapshot(t.proxy.ns);
      if (backend === 'iptables-legacy') assert.deepEqual(normalizeLegacy(after), normalizeLegacy(before));
      else assert.deepEqual(after, before);
    } finally {
      for (const p of procs) await stop(p);
      await t.destroy();
      w.remove();
    }
  });
}
