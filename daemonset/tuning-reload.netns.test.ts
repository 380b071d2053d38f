// Privileged: tuning in place (ADR 0020) as agent-watch does it. The agent's `reload` runs in a
// mount namespace shaped like agent-watch's container: /proc/sys read-only (as the container runtime
// mounts it), and the namespace's /proc/sys/net bound writable under --sysctl-root (the pod's
// hostPath mount). Asserted: net.* sysctls change in place and a key that leaves the spec gets its
// original back; without the mount the change is refused; a change the kernel refuses half-way is
// rolled back whole (the last good tuning stays) and names the key; cleanup restores everything.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { nsExec, privilegedSkipReason, sh } from '../e2e/netns.ts';
import { agent, MAIN, workdir } from './agent.testkit.ts';
import { run } from './run.ts';

const skip = privilegedSkipReason();
const KEYS = ['net/ipv4/tcp_fin_timeout', 'net/ipv4/tcp_tw_reuse', 'net/ipv4/ip_local_port_range'];
const read = async (ns: string) =>
  Object.fromEntries(
    await Promise.all(KEYS.map(async (k) => [k, (await nsExec(ns, ['cat', `/proc/sys/${k}`])).trim()] as const)),
  );

// $1 root, $2 a key file made read-only under the root ('' = none); then the agent's argv. Paths are
// the test's own temp dirs, passed as arguments (never spliced into the script).
const SHAPE = [
  'set -e',
  'mount --bind /proc/sys/net "$1/proc/sys/net"',
  'if [ -n "$2" ]; then mount --bind "$1/proc/sys/net/$2" "$1/proc/sys/net/$2"; mount -o remount,bind,ro "$1/proc/sys/net/$2"; fi',
  'mount --bind /proc/sys /proc/sys',
  'mount -o remount,bind,ro /proc/sys',
  'shift 2',
  'exec "$@"',
].join('\n');

test('agent-watch retunes net.* sysctls in place through its /proc/sys/net mount; nothing is left half-way', {
  skip,
  timeout: 60_000,
}, async () => {
  const ns = `trl${process.pid}`;
  const w = workdir();
  const root = join(w.dir, 'host'),
    live = join(w.dir, 'live');
  mkdirSync(join(root, 'proc/sys/net'), { recursive: true });
  const cfg = (name: string, overrides: string) =>
    w.config(
      `interception: {backend: nftables, ports: [{port: 80}]}\ntuning: {sysctls: {overrides: ${overrides}}}\n`,
      name,
    );
  /** `reload` as agent-watch runs it; `sysctlRoot` false = a pod without the mount. */
  const reload = (file: string, sysctlRoot: boolean, roKey = '') =>
    run([
      'ip',
      'netns',
      'exec',
      ns,
      'unshare',
      '-m',
      'sh',
      '-c',
      SHAPE,
      'sh',
      root,
      roKey,
      process.execPath,
      '--import',
      'tsx',
      MAIN,
      'reload',
      '--config',
      file,
      '--state-dir',
      w.stateDir,
      '--live-dir',
      live,
      ...(sysctlRoot ? ['--sysctl-root', root] : []),
    ]);
  await sh(['ip', 'netns', 'add', ns]);
  try {
    await nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    const before = await read(ns);
    const first = cfg('first.yaml', '{net.ipv4.tcp_fin_timeout: 17, net.ipv4.tcp_tw_reuse: 1}');
    const a = await agent(ns, ['apply', '--config', first, '--state-dir', w.stateDir, '--live-dir', live]);
    assert.equal(a.code, 0, a.stderr);
    const applied = { ...before, 'net/ipv4/tcp_fin_timeout': '17', 'net/ipv4/tcp_tw_reuse': '1' };
    assert.deepEqual(await read(ns), applied);

    const second = cfg('second.yaml', '{net.ipv4.tcp_fin_timeout: 23, net.ipv4.ip_local_port_range: "2000 60000"}');
    // Without the mount, /proc/sys is read-only: refused, the kernel's answer named, nothing changed.
    const noMount = await reload(second, false);
    assert.equal(noMount.code, 1, noMount.stdout + noMount.stderr);
    assert.match(
      noMount.stderr,
      /refused: changing tuning\.sysctls\.overrides\..*: tuning\.sysctls: the kernel refused net\.ipv4\.tcp_fin_timeout=23 \(.*read-only/i,
    );
    assert.deepEqual(await read(ns), applied);

    const ok = await reload(second, true);
    assert.equal(ok.code, 0, ok.stderr);
    const report = JSON.parse(ok.stdout.trim().split('\n').pop()!) as { before: string; hash: string; ms: number };
    assert.notEqual(report.hash, report.before, 'the hash it enforces now covers the new tuning');
    process.stdout.write(`# tuning reload in place: ${report.ms} ms (agent: rules + sysctls)\n`);
    const retuned = {
      'net/ipv4/tcp_fin_timeout': '23',
      'net/ipv4/tcp_tw_reuse': before['net/ipv4/tcp_tw_reuse'], // left the spec: the original is back
      'net/ipv4/ip_local_port_range': '2000\t60000',
    };
    assert.deepEqual(await read(ns), retuned);

    // The kernel refuses the last of three writes (that file is read-only): the two before it are undone.
    const third = cfg(
      'third.yaml',
      '{net.ipv4.ip_local_port_range: "3000 60000", net.ipv4.tcp_tw_reuse: 1, net.ipv4.tcp_fin_timeout: 29}',
    );
    const half = await reload(third, true, 'ipv4/tcp_fin_timeout');
    assert.equal(half.code, 1, half.stdout + half.stderr);
    assert.match(half.stderr, /net\.ipv4\.tcp_fin_timeout=29/);
    assert.match(half.stdout, new RegExp(`"hash":"${report.hash}","refused":`), 'the last good hash stays enforced');
    assert.deepEqual(await read(ns), retuned, 'the last good tuning, whole');

    const c = await agent(ns, ['cleanup', '--state-dir', w.stateDir]);
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(await read(ns), before, 'cleanup restores what the in-place retune owned too');
  } finally {
    await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    w.remove();
  }
});
