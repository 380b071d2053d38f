// Privileged: a node leaving the active set (`tpfleet-agent cleanup --wait-port`, as the leave
// DaemonSet runs it). While the old proxy still runs, new connections already go direct (drain
// gate) and nothing is removed; once the proxy has exited the node is restored exactly. The
// "proxy" is testdata/tcptool.py (a transparent listener plus /healthz on the metrics port).
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import { createTopology, privilegedSkipReason, waitFor } from '../e2e/netns.ts';
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

for (const backend of ['nftables', 'iptables-nft'] as Backend[]) {
  test(`${backend}: cleanup --wait-port sends new connections direct at once, waits for the proxy to exit, then restores the node exactly`, {
    skip,
  }, async () => {
    const t = await createTopology('lv');
    const w = workdir();
    const procs: ChildProcess[] = [];
    try {
      procs.push(await startTool(t.server.ns, ['serve', '8080,8081', 'SERVER']));
      procs.push(await startTool(t.server.ns, ['udpserve', '5353', 'SERVER']));
      await warmUp(t.client.ns, [t.server.v4, t.server.v6], 8081);
      const before = await snapshot(t.proxy.ns);
      const proxy = await startTool(t.proxy.ns, ['tproxy', '15101', '15190']);
      procs.push(proxy);
      // TCP 8080 and UDP 5353: the drain gate sends new flows of both direct.
      const args = ['--config', w.config(UDP_CONFIG('FailClosed')), '--state-dir', w.stateDir];
      const r = await agent(t.proxy.ns, ['apply', '--backend', backend, ...args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        await connect(t.client.ns, t.server.v4, 8080),
        `PROXY ${t.server.v4} 8080`,
        'intercepted while active',
      );
      assert.equal(await ask(t.client.ns, t.server.v4, 5353), `PROXY ${t.server.v4} 5353 from ${t.server.v4} 5353`);

      const leave = spawnAgent(t.proxy.ns, ['cleanup', ...args, '--wait-port', '15190', '--wait-timeout', '30']);
      procs.push(leave);
      const logs = logLines(leave);
      const exited = new Promise<number | null>((res) => leave.once('exit', (code) => res(code)));
      await waitFor('the drain gate', async () => logs.some((l) => l.msg === 'leaving: new connections now go direct'));
      // The proxy still listens (it is draining): FailClosed would drop, the drain gate lets them pass.
      assert.equal(
        await connect(t.client.ns, t.server.v4, 8080),
        `SERVER ${t.server.v4} 8080`,
        'IPv4: a new connection goes direct while the proxy drains',
      );
      assert.equal(
        await connect(t.client.ns, t.server.v6, 8080),
        `SERVER ${t.server.v6} 8080`,
        'IPv6: a new connection goes direct while the proxy drains',
      );
      for (const h of [t.server.v4, t.server.v6])
        assert.equal(await ask(t.client.ns, h, 5353), `SERVER 5353 from ${h} 5353`, 'a new UDP flow goes direct');
      assert.equal(leave.exitCode, null, 'cleanup waits while the proxy still listens');
      assert.notDeepEqual(await snapshot(t.proxy.ns), before, 'nothing is removed before the proxy has exited');

      await stop(proxy);
      assert.equal(await exited, 0);
      assert.ok(logs.some((l) => l.msg === 'leaving: the proxy has stopped'));
      assert.deepEqual(await snapshot(t.proxy.ns), before, 'rules, ip rules and routes are exactly as before apply');
      assert.equal(await connect(t.client.ns, t.server.v4, 8080), `SERVER ${t.server.v4} 8080`);
      // Idempotent: a restarted leave pod finds nothing to do and does not wait.
      const again = await agent(t.proxy.ns, ['cleanup', ...args, '--wait-port', '15190', '--wait-timeout', '30']);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /nothing installed/);
    } finally {
      for (const p of procs.reverse()) await stop(p);
      await t.destroy();
      w.remove();
    }
  });
}

test('cleanup --wait-port gives up after --wait-timeout and still restores the node', { skip }, async () => {
  const t = await createTopology('lw');
  const w = workdir();
  let proxy: ChildProcess | undefined;
  try {
    const before = await snapshot(t.proxy.ns);
    proxy = await startTool(t.proxy.ns, ['tproxy', '15101', '15190']);
    const args = ['--config', w.config(PORTS_CONFIG('FailClosed')), '--state-dir', w.stateDir];
    assert.equal((await agent(t.proxy.ns, ['apply', '--backend', 'nftables', ...args])).code, 0);
    const started = Date.now();
    const r = await agent(t.proxy.ns, ['cleanup', ...args, '--wait-port', '15190', '--wait-timeout', '1']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Date.now() - started >= 1000, 'it waited for the timeout');
    assert.match(r.stderr, /still listens after the wait; cleaning up anyway/);
    assert.deepEqual(await snapshot(t.proxy.ns), before);
  } finally {
    await stop(proxy);
    await t.destroy();
    w.remove();
  }
});
