// Privileged lifecycle tests, shared by the three backends: apply, read back, idempotency,
// foreign rules, exact cleanup, bad config, the rp_filter refusal and rollback of a failed apply.
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createTopology, nsExec, privilegedSkipReason, type Topology } from '../e2e/netns.ts';
import { agent, snapshot, workdir, type Workdir } from './agent.testkit.ts';
import type { Backend } from './types.ts';

const FULL = `interception:
  ports: [{port: 80}, {port: 8000, endPort: 8100}]
  destinations: {include: [10.0.0.0/8, "fd00::/8"], exclude: [10.9.0.0/16]}
  sources: {exclude: ["fd00:1::/64"]}
  interfaces: [to-cli, "veth*"]
`;

/** Foreign rules in the place each backend lives; they also steer `auto` detection to it. */
async function addForeign(ns: string, backend: Backend): Promise<void> {
  if (backend === 'nftables') {
    await nsExec(ns, ['nft', '-f', '-'], {
      input:
        'table inet foreign {\n chain pre { type filter hook prerouting priority -150; policy accept;\n' +
        '  ip saddr 192.0.2.1 counter accept comment "foreign"\n }\n}\n',
    });
  } else {
    const bin = backend === 'iptables-nft' ? 'iptables-nft' : 'iptables-legacy';
    await nsExec(ns, [
      bin,
      '-t',
      'mangle',
      '-A',
      'PREROUTING',
      '-s',
      '192.0.2.1',
      '-m',
      'comment',
      '--comment',
      'foreign',
      '-j',
      'ACCEPT',
    ]);
    await nsExec(ns, [
      bin.replace('ip', 'ip6'),
      '-t',
      'mangle',
      '-A',
      'PREROUTING',
      '-s',
      '2001:db8::1',
      '-m',
      'comment',
      '--comment',
      'foreign6',
      '-j',
      'ACCEPT',
    ]);
    // A chain with our prefix that we did not create, and a jump into it: never ours to delete.
    for (const b of [bin, bin.replace('ip', 'ip6')]) {
      await nsExec(ns, [b, '-t', 'mangle', '-N', 'TPFLEET-FOREIGN']);
      await nsExec(ns, [
        b,
        '-t',
        'mangle',
        '-A',
        'TPFLEET-FOREIGN',
        '-m',
        'comment',
        '--comment',
        'foreign',
        '-j',
        'RETURN',
      ]);
      await nsExec(ns, [b, '-t', 'mangle', '-A', 'PREROUTING', '-p', 'udp', '-j', 'TPFLEET-FOREIGN']);
    }
  }
  await nsExec(ns, ['ip', 'rule', 'add', 'from', '192.0.2.7', 'lookup', 'main', 'priority', '500']);
}

function ours(backend: Backend, s: Record<string, string>): string {
  if (backend === 'nftables') return s['nft list ruleset']!;
  return backend === 'iptables-nft'
    ? s['iptables-nft-save']! + s['ip6tables-nft-save']!
    : s['iptables-legacy-save']! + s['ip6tables-legacy-save']!;
}

async function withTopo(fn: (t: Topology, w: Workdir) => Promise<void>): Promise<void> {
  const t = await createTopology('ds');
  const w = workdir();
  try {
    await fn(t, w);
  } finally {
    await t.destroy();
    w.remove();
  }
}

export function lifecycleTests(backend: Backend): void {
  const skip = privilegedSkipReason();
  test(
    `${backend}: apply installs and verifies, is idempotent, keeps foreign rules; cleanup restores the host exactly`,
    { skip },
    () =>
      withTopo(async (t, w) => {
        const ns = t.proxy.ns;
        await addForeign(ns, backend);
        const before = await snapshot(ns);
        const args = ['--config', w.config(FULL), '--state-dir', w.stateDir];
        const first = await agent(ns, ['apply', ...args]);
        assert.equal(first.code, 0, first.stderr);
        assert.match(
          first.stdout,
          new RegExp(`applied \\(${backend}\\) and verified`),
          'auto picks the backend the host uses',
        );
        const s1 = await snapshot(ns);
        const rules = ours(backend, s1);
        if (backend === 'nftables') {
          assert.match(rules, /table inet tpfleet \{/);
          assert.match(rules, /socket transparent 1 .*accept comment "divert/);
          assert.match(rules, /tproxy to :15101/);
          assert.match(rules, /elements = \{ "to-cli",\s+"veth\*" \}/);
        } else {
          assert.match(rules, /^-A PREROUTING .* -j TPFLEET-PREROUTING$/m);
          assert.match(rules, /-A TPFLEET-TPROXY .* -j TPROXY --on-port 15101/);
          assert.match(rules, /-A TPFLEET-EXCLUDE -d 10\.9\.0\.0\/16/);
          assert.match(rules, /-A TPFLEET-EXCLUDE -s fd00:1::\/64/);
        }
        assert.match(rules, /foreign/, 'foreign rules survive apply');
        assert.match(s1['ip rule']!, /32000:\s+from all fwmark 0x2000\/0x2000 lookup 2000/);
        assert.match(s1['ip -6 rule']!, /32000:\s+from all fwmark 0x2000\/0x2000 lookup 2000/);
        assert.match(s1['ip route show table 2000']!, /local default dev lo/);
        assert.match(s1['ip rule']!, /500:\s+from 192\.0\.2\.7 lookup main/);

        const second = await agent(ns, ['apply', ...args]);
        assert.equal(second.code, 0, second.stderr);
        assert.deepEqual(await snapshot(ns), s1, 'a second apply changes nothing');

        const clean = await agent(ns, ['cleanup', '--state-dir', w.stateDir]);
        assert.equal(clean.code, 0, clean.stderr);
        assert.deepEqual(await snapshot(ns), before, 'cleanup restores the pre-install snapshot');
        assert.equal(existsSync(join(w.stateDir, 'state.json')), false);
        const again = await agent(ns, ['cleanup', '--state-dir', w.stateDir]);
        assert.equal(again.code, 0, again.stderr);
        assert.deepEqual(await snapshot(ns), before, 'cleanup is idempotent');
      }),
  );

  test(
    `${backend}: state.json lost (issue 20 path 5): cleanup restores the host exactly from the state copy`,
    { skip },
    () =>
      withTopo(async (t, w) => {
        const ns = t.proxy.ns;
        await addForeign(ns, backend);
        const before = await snapshot(ns);
        const copy = ['--state-copy-dir', join(w.stateDir, 'copy')];
        const r = await agent(ns, ['apply', '--config', w.config(FULL), '--state-dir', w.stateDir, ...copy]);
        assert.equal(r.code, 0, r.stderr);
        rmSync(join(w.stateDir, 'state.json'));
        const clean = await agent(ns, ['cleanup', '--state-dir', w.stateDir, ...copy]);
        assert.equal(clean.code, 0, clean.stderr);
        assert.deepEqual(await snapshot(ns), before, 'every rule, route and chain we made is gone; foreign ones stay');
        assert.equal(existsSync(join(w.stateDir, 'copy', 'state.json')), false, 'the copy goes with it');
      }),
  );

  test(`${backend}: apply --dry-run prints the exact documents and argv and changes nothing`, { skip }, () =>
    withTopo(async (t, w) => {
      const before = await snapshot(t.proxy.ns);
      const r = await agent(t.proxy.ns, [
        'apply',
        '--dry-run',
        '--backend',
        backend,
        '--config',
        w.config(FULL),
        '--state-dir',
        w.stateDir,
      ]);
      assert.equal(r.code, 0, r.stderr);
      if (backend === 'nftables')
        assert.match(r.stdout, /^\$ nft -f - <<EOF\n[\s\S]*table inet tpfleet \{\}\ndelete table inet tpfleet\n/m);
      else {
        const v = backend === 'iptables-nft' ? 'nft' : 'legacy';
        assert.match(
          r.stdout,
          new RegExp(`^\\$ iptables-${v}-restore --noflush <<EOF\n[^]*-I PREROUTING 1 -m comment`, 'm'),
        );
        assert.match(r.stdout, new RegExp(`^\\$ ip6tables-${v}-restore --noflush <<EOF`, 'm'));
      }
      assert.match(r.stdout, /^\$ ip -4 rule add fwmark 0x2000\/0x2000 lookup 2000 priority 32000$/m);
      assert.match(r.stdout, /^\$ ip -6 route add local ::\/0 dev lo table 2000$/m);
      assert.deepEqual(await snapshot(t.proxy.ns), before);
      assert.equal(existsSync(join(w.stateDir, 'state.json')), false);
    }),
  );

  test(`${backend}: re-applying a changed config replaces our rules without stale leftovers`, { skip }, () =>
    withTopo(async (t, w) => {
      const ns = t.proxy.ns;
      await addForeign(ns, backend);
      const before = await snapshot(ns);
      const st = ['--state-dir', w.stateDir];
      assert.equal((await agent(ns, ['apply', '--config', w.config(FULL), ...st])).code, 0);
      const r = await agent(ns, [
        'apply',
        '--config',
        w.config('interception: {ports: [{port: 443}], rulePriority: 31000}\n', 'b.yaml'),
        ...st,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const s = await snapshot(ns);
      const rules = ours(backend, s);
      assert.match(rules, /443/);
      assert.doesNotMatch(rules, /8000|to-cli|10\.9\.0\.0|TPFLEET-IFACE|TPFLEET-EXCLUDE|TPFLEET-DST/);
      assert.match(s['ip rule']!, /31000:\s+from all fwmark/);
      assert.doesNotMatch(s['ip rule']!, /32000:/, 'the old ip rule went away with the old install');
      assert.equal((await agent(ns, ['cleanup', ...st])).code, 0);
      assert.deepEqual(await snapshot(ns), before);
    }),
  );

  test(`${backend}: a bad config exits 2 naming the field and changes nothing`, { skip }, () =>
    withTopo(async (t, w) => {
      const before = await snapshot(t.proxy.ns);
      const r = await agent(t.proxy.ns, [
        'apply',
        '--backend',
        backend,
        '--config',
        w.config('interception: {ports: [{port: 9000, endPort: 8000}]}'),
        '--state-dir',
        w.stateDir,
      ]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /interception\.ports\[0\]\.endPort: must be >= port/);
      assert.deepEqual(await snapshot(t.proxy.ns), before);
      assert.equal(existsSync(join(w.stateDir, 'state.json')), false);
    }),
  );

  test(`${backend}: rp_filter with src_valid_mark=1 is refused, naming the sysctls; nothing is applied`, { skip }, () =>
    withTopo(async (t, w) => {
      const ns = t.proxy.ns;
      await nsExec(ns, ['sysctl', '-qw', 'net.ipv4.conf.to-cli.rp_filter=1', 'net.ipv4.conf.all.src_valid_mark=1']);
      const before = await snapshot(ns);
      const r = await agent(ns, ['apply', '--backend', backend, '--config', w.config(''), '--state-dir', w.stateDir]);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /net\.ipv4\.conf\.all\.src_valid_mark=1/);
      assert.match(r.stderr, /net\.ipv4\.conf\.to-cli\.rp_filter=1/);
      assert.match(r.stderr, /nothing was changed/);
      assert.deepEqual(await snapshot(ns), before);
    }),
  );

  test(
    `${backend}: an ip rule of someone else at our priority is refused, named, and nothing is applied`,
    { skip },
    () =>
      withTopo(async (t, w) => {
        const ns = t.proxy.ns;
        await nsExec(ns, ['ip', 'rule', 'add', 'from', '192.0.2.0/24', 'lookup', 'main', 'priority', '32000']);
        const before = await snapshot(ns);
        const r = await agent(ns, ['apply', '--backend', backend, '--config', w.config(''), '--state-dir', w.stateDir]);
        assert.equal(r.code, 3, r.stderr);
        assert.match(r.stderr, /ip -4 rule priority 32000 is already used by another rule: .*192\.0\.2\.0/);
        assert.deepEqual(await snapshot(ns), before);
      }),
  );

  test(`${backend}: a failure half-way through apply rolls back everything this run changed`, { skip }, () =>
    withTopo(async (t, w) => {
      const ns = t.proxy.ns;
      await addForeign(ns, backend);
      // IPv6 off on lo makes the last step (ip -6 route add local ::/0 dev lo) fail after the
      // filter rules, both ip rules and the IPv4 route are in; preflight cannot foresee it.
      await nsExec(ns, ['sysctl', '-qw', 'net.ipv6.conf.lo.disable_ipv6=1']);
      const before = await snapshot(ns);
      const r = await agent(ns, ['apply', '--backend', backend, '--config', w.config(FULL), '--state-dir', w.stateDir]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /ip -6 route add local ::\/0 dev lo table 2000/);
      assert.match(r.stderr, /rolled back: nothing of this run remains/);
      assert.deepEqual(await snapshot(ns), before);
      assert.equal(existsSync(join(w.stateDir, 'state.json')), false);
    }),
  );
}
