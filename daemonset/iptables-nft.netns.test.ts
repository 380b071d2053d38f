// Privileged: the iptables-nft backend in real network namespaces.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createTopology, nsExec, privilegedSkipReason } from '../e2e/netns.ts';
import { lifecycleTests } from './lifecycle.testkit.ts';
import { PORTS_CONFIG, trafficTests } from './traffic.testkit.ts';
import { agent, workdir } from './agent.testkit.ts';

lifecycleTests('iptables-nft');
trafficTests('iptables-nft');

// A kubelet node: kubelet keeps its own chains in `table ip mangle` (KUBE-KUBELET-CANARY,
// KUBE-IPTABLES-HINT) but no PREROUTING base chain. Our hook rule creates that chain; cleanup must
// remove it again, or `nft list ruleset` shows an empty chain that was not there (found on local-real).

test("iptables-nft on a kubelet-like node: cleanup removes the PREROUTING base chain it created, keeps the kubelet's chains", {
  skip: privilegedSkipReason(),
}, async () => {
  const t = await createTopology('dk');
  const w = workdir();
  try {
    const ns = t.proxy.ns;
    for (const bin of ['iptables-nft', 'ip6tables-nft'])
      await nsExec(ns, [bin, '-t', 'mangle', '-N', 'KUBE-KUBELET-CANARY']);
    const before = await nsExec(ns, ['nft', 'list', 'ruleset']);
    assert.doesNotMatch(before, /chain PREROUTING/);
    const args = ['--config', w.config(PORTS_CONFIG('FailClosed')), '--state-dir', w.stateDir];
    const r = await agent(ns, ['apply', '--backend', 'iptables-nft', ...args]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(await nsExec(ns, ['nft', 'list', 'ruleset']), /chain PREROUTING/);
    const c = await agent(ns, ['cleanup', '--state-dir', w.stateDir]);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(
      await nsExec(ns, ['nft', 'list', 'ruleset']),
      before,
      'the ruleset is exactly as before, kubelet chains included',
    );
  } finally {
    await t.destroy();
    w.remove();
  }
});
