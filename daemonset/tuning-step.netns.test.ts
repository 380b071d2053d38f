// Privileged: the agent's apply/cleanup also apply and restore `tuning` from the same NodeConfig,
// in the network namespace it runs in (net.* sysctls are per namespace).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nsExec, privilegedSkipReason, sh } from '../e2e/netns.ts';
import { agent, workdir } from './agent.testkit.ts';

const skip = privilegedSkipReason();
const KEYS = ['net/ipv4/tcp_fin_timeout', 'net/ipv4/tcp_tw_reuse', 'net/ipv4/ip_local_port_range'];

/** A fresh network namespace (lo up) and a work dir for one test, both removed afterwards. */
async function withNs(name: string, fn: (ns: string, w: ReturnType<typeof workdir>) => Promise<void>): Promise<void> {
  const ns = `${name}${process.pid}`;
  const w = workdir();
  await sh(['ip', 'netns', 'add', ns]);
  try {
    await nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    await fn(ns, w);
  } finally {
    await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    w.remove();
  }
}

const read = async (ns: string) =>
  Object.fromEntries(
    await Promise.all(KEYS.map(async (k) => [k, (await nsExec(ns, ['cat', `/proc/sys/${k}`])).trim()] as const)),
  );

test('apply tunes the namespace from the same config, cleanup restores every value exactly', { skip }, () =>
  withNs('tt', async (ns, w) => {
    const before = await read(ns);
    const cfg = w.config(`interception: {backend: nftables, ports: [{port: 80}]}
tuning:
  sysctls:
    overrides: {net.ipv4.tcp_fin_timeout: 17, net.ipv4.tcp_tw_reuse: 1, net.ipv4.ip_local_port_range: "2000 60000"}
`);
    const args = ['--config', cfg, '--state-dir', w.stateDir];
    const r = await agent(ns, ['apply', ...args]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /tuning: Applied/);
    assert.deepEqual(await read(ns), {
      'net/ipv4/tcp_fin_timeout': '17',
      'net/ipv4/tcp_tw_reuse': '1',
      'net/ipv4/ip_local_port_range': '2000\t60000',
    });
    // Re-applying keeps the original snapshot: cleanup must still restore the values from before.
    assert.equal((await agent(ns, ['apply', ...args])).code, 0);
    const c = await agent(ns, ['cleanup', '--state-dir', w.stateDir]);
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(await read(ns), before);
  }),
);

test('a disallowed sysctl key is refused with the key named, and nothing is applied', { skip }, () =>
  withNs('tu', async (ns, w) => {
    const cfg = w.config('interception: {backend: nftables}\ntuning: {sysctls: {overrides: {kernel.panic: 1}}}\n');
    const r = await agent(ns, ['apply', '--config', cfg, '--state-dir', w.stateDir]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /tuning\.sysctls\.overrides.*kernel\.panic/);
    assert.equal((await nsExec(ns, ['nft', 'list', 'ruleset'])).trim(), '', 'no rules were installed');
  }),
);

test('keepClientIp with FailOpen turns TCP early demux off while installed and restores it at cleanup', { skip }, () =>
  withNs('te', async (ns, w) => {
    const demux = async () => (await nsExec(ns, ['cat', '/proc/sys/net/ipv4/tcp_early_demux'])).trim();
    assert.equal(await demux(), '1');
    const closed = w.config(
      'interception: {backend: nftables, failurePolicy: FailClosed}\nproxy: {keepClientIp: true}\n',
      'closed.yaml',
    );
    assert.equal((await agent(ns, ['apply', '--config', closed, '--state-dir', w.stateDir])).code, 0);
    assert.equal(await demux(), '1', 'FailClosed never sends traffic direct: nothing to change');
    const open = w.config(
      'interception: {backend: nftables, failurePolicy: FailOpen}\nproxy: {keepClientIp: true}\n',
      'open.yaml',
    );
    const r = await agent(ns, ['apply', '--config', open, '--state-dir', w.stateDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await demux(), '0');
    assert.equal((await agent(ns, ['cleanup', '--state-dir', w.stateDir])).code, 0);
    assert.equal(await demux(), '1', 'restored exactly');
  }),
);
