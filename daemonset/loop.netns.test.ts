// Privileged: the loop guard of localDestinations (issue 20). With local destinations intercepted,
// a connection the node makes to one of its own addresses (the proxy's upstream connection to a
// node-local server is one) arrives on lo; without the guard it was diverted back into the
// transparent listener, and one client connection multiplied until maxConnections.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { test } from 'node:test';
import { createTopology, privilegedSkipReason } from '../e2e/netns.ts';
import { agent, connect, startTool, workdir } from './agent.testkit.ts';
import type { Backend } from './types.ts';

const stop = async (p: ChildProcess) => {
  if (p.exitCode === null) {
    p.kill('SIGKILL');
    await new Promise((r) => p.once('exit', r));
  }
};

for (const backend of ['nftables', 'iptables-nft', 'iptables-legacy'] as Backend[]) {
  test(`${backend}: localDestinations intercepts clients of a node-local server, never the node's own connections`, {
    skip: privilegedSkipReason(),
  }, async () => {
    const t = await createTopology('lp');
    const w = workdir();
    const procs: ChildProcess[] = [];
    try {
      const ns = t.proxy.ns;
      const local = t.proxy.clientSide.v4; // an address of the node itself
      procs.push(await startTool(ns, ['serve', '8080', 'NODE']));
      procs.push(await startTool(ns, ['tproxy', '15101', '15190']));
      const config = 'interception: {ports: [{port: 8080}], ipFamilies: [IPv4], localDestinations: true}\n';
      const r = await agent(ns, [
        'apply',
        '--backend',
        backend,
        '--config',
        w.config(config),
        '--state-dir',
        w.stateDir,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        await connect(t.client.ns, local, 8080),
        `PROXY ${local} 8080`,
        'a client of the node is intercepted',
      );
      assert.equal(
        await connect(ns, local, 8080),
        `NODE ${local} 8080`,
        "the node's own connection (what the proxy's upstream connect is) goes direct: no loop",
      );
      assert.equal((await agent(ns, ['cleanup', '--state-dir', w.stateDir])).code, 0);
    } finally {
      for (const p of procs) await stop(p);
      await t.destroy();
      w.remove();
    }
  });
}
