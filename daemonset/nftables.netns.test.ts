// Privileged: the nftables backend in real network namespaces.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createTopology, privilegedSkipReason } from '../e2e/netns.ts';
import { lifecycleTests } from './lifecycle.testkit.ts';
import { trafficTests } from './traffic.testkit.ts';
import { agent, snapshot, workdir } from './agent.testkit.ts';

lifecycleTests('nftables');
trafficTests('nftables');

test('switching the backend (nftables -> iptables-nft) first removes the previous install', {
  skip: privilegedSkipReason(),
}, async () => {
  const t = await createTopology('ds');
  const w = workdir();
  try {
    const ns = t.proxy.ns;
    const before = await snapshot(ns);
    const args = ['--config', w.config(''), '--state-dir', w.stateDir];
    assert.equal((await agent(ns, ['apply', '--backend', 'nftables', ...args])).code, 0);
    const r = await agent(ns, ['apply', '--backend', 'iptables-nft', ...args]);
    assert.equal(r.code, 0, r.stderr);
    const s = await snapshot(ns);
    assert.doesNotMatch(s['nft list ruleset']!, /table inet tpfleet/);
    assert.match(s['iptables-nft-save']!, /^-A PREROUTING .* -j TPFLEET-PREROUTING$/m);
    assert.equal(s['ip rule']!.match(/fwmark 0x2000/g)?.length, 1, 'one ip rule, not two');
    assert.equal((await agent(ns, ['cleanup', '--state-dir', w.stateDir])).code, 0);
    assert.deepEqual(await snapshot(ns), before);
  } finally {
    await t.destroy();
    w.remove();
  }
});
