// The images' entrypoints really start, each with the user, capabilities and root filesystem the
// operator's DaemonSet and Deployment give it (operator/render/daemonset.ts, ADR 0005): processes run
// chrooted in the mounted image, in their own PID namespace and a fresh network namespace.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { privilegedSkipReason, sh, waitFor } from '../e2e/netns.ts';
import { httpStatus, nodeConfigYaml } from '../e2e/proc.ts';
import { buildImages } from './images.ts';
import { inImage, mountImage, run, type Rootfs, type RunAs } from './rootfs.ts';

const CONFIG = '/etc/tpfleet/nodeconfig.yaml';
const METRICS = 15190;
/** As the DaemonSet's containers run (operator/render/daemonset.ts). */
const SIDECAR: RunAs = { uid: 65532, caps: ['NET_ADMIN'] };
/** The sidecar's capability launcher (images/launcher/netadmin-exec.c). */
const LAUNCHER = '/usr/local/libexec/tpfleet/netadmin-exec';
const WATCH: RunAs = { uid: 0, caps: ['NET_ADMIN', 'NET_RAW'] };
const INIT: RunAs = { privileged: true };
/** The operator and cleanup-done: no capability, allowPrivilegeEscalation false (no_new_privs). */
const NOBODY: RunAs = { uid: 65532, caps: [], noNewPrivs: true };

const skip = privilegedSkipReason(); // network namespaces, mounts and setpriv need root

describe('image entrypoints', { skip, timeout: 30 * 60_000 }, () => {
  const mounted: Rootfs[] = [];
  const namespaces: string[] = [];
  let operator: Rootfs, node: Rootfs;
  /** A fresh network namespace (loopback up), deleted by after(); its name carries the pid. */
  const freshNs = async () => {
    const ns = `tpfimg${process.pid % 100000}-${namespaces.length}`;
    await sh(['ip', 'netns', 'add', ns]);
    namespaces.push(ns);
    await sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  };

  before(async () => {
    const [op, nd] = await buildImages(['operator', 'node']);
    operator = await mountImage(op!.ref);
    mounted.push(operator);
    node = await mountImage(nd!.ref);
    mounted.push(node);
    // The ConfigMap mount: written into the node image's (writable, throwaway) container copy.
    mkdirSync(path.join(node.root, 'etc/tpfleet'), { recursive: true });
    writeFileSync(path.join(node.root, CONFIG.slice(1)), nodeConfigYaml({ proxy: { workers: 1 } }));
  });
  after(async () => {
    for (const ns of namespaces) await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    for (const r of mounted) await r.remove();
  });

  const inNode = (ns: string, as: RunAs, argv: string[], root = node.root) => inImage(root, node.env, ns, as, argv);

  test('tpfleet-operator --help: usage, exit 0, as the chart runs it (uid 65532, no capabilities, read-only root)', async () => {
    const r = await run(
      inImage(await operator.readOnly(), operator.env, await freshNs(), NOBODY, ['tpfleet-operator', '--help']),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^usage: tpfleet-operator \[--kubeconfig PATH\]/);
  });

  test("tpfleet-agent plan with agent-watch's rights detects iptables-nft rules with the image's tools", async () => {
    // Someone else's iptables-nft rule on the "node": detection (iptables-nft-save from the image)
    // must see it and choose the iptables-nft backend; with the tools missing it would say nftables.
    const ns = await freshNs();
    await sh([
      'ip',
      'netns',
      'exec',
      ns,
      'iptables-nft',
      '-t',
      'mangle',
      '-A',
      'PREROUTING',
      '-s',
      '192.0.2.9',
      '-j',
      'ACCEPT',
    ]);
    const r = await run(inNode(ns, WATCH, ['tpfleet-agent', 'plan', '--config', CONFIG]));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^# backend: iptables-nft; families: IPv4, IPv6; failurePolicy: FailClosed$/m);
    assert.match(r.stdout, /^# iptables-nft-restore --noflush$/m);
    assert.match(r.stdout, /^ip -4 rule add fwmark 0x2000\/0x2000 lookup 2000 priority 32000$/m);
  });

  test('tpfleet-agent apply (privileged, as the init container) installs rules and routes; cleanup removes them', async () => {
    const ns = await freshNs();
    const applied = await run(
      inNode(ns, INIT, ['tpfleet-agent', 'apply', '--config', CONFIG, '--state-dir', '/run/tpfleet']),
    );
    try {
      assert.equal(applied.code, 0, applied.stderr);
      assert.match(applied.stdout, /applied \(nftables\) and verified/);
      // seen from the host side of the namespace, not through the agent
      assert.match(
        await sh(['ip', 'netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'tpfleet']),
        /tproxy to :15101/,
      );
      assert.match(await sh(['ip', '-n', ns, '-4', 'rule', 'show']), /fwmark 0x2000\/0x2000 lookup 2000/);
    } finally {
      const cleaned = await run(inNode(ns, INIT, ['tpfleet-agent', 'cleanup', '--state-dir', '/run/tpfleet']));
      assert.equal(cleaned.code, 0, cleaned.stderr);
    }
    assert.doesNotMatch(await sh(['ip', 'netns', 'exec', ns, 'nft', 'list', 'ruleset']), /tpfleet/);
    assert.doesNotMatch(await sh(['ip', '-n', ns, '-4', 'rule', 'show']), /lookup 2000/);
  });

  test('tpfleet-sidecar as uid 65532 with only NET_ADMIN on a read-only root becomes ready (file capability)', async () => {
    const ns = await freshNs();
    const p = startProc(inNode(ns, SIDECAR, ['tpfleet-sidecar', '--config', CONFIG], await node.readOnly()));
    try {
      await waitFor(
        "the sidecar's /readyz to answer 200",
        async () => {
          if (p.child.exitCode !== null) throw new Error('exited');
          return (await httpStatus(ns, METRICS, '/readyz')) === 200;
        },
        30_000,
        200,
      ).catch((e: Error) => assert.fail(`${e.message}; output:\n${p.output().slice(-2000)}`));
      // the transparent listener exists, owned by the non-root user
      const listeners = await sh(['ip', 'netns', 'exec', ns, 'ss', '-Hltne', 'sport', '=', ':15101']);
      assert.match(listeners, /uid:65532/);
    } finally {
      await p.stop();
    }
  });

  test('tpfleet-sidecar without NET_ADMIN, or with no_new_privs, exits 1 naming the missing pod setting', async () => {
    const ns = await freshNs();
    const noCap = await run(inNode(ns, { uid: 65532, caps: [] }, ['tpfleet-sidecar', '--config', CONFIG]));
    assert.equal(noCap.code, 1);
    assert.match(
      noCap.stderr,
      /CAP_NET_ADMIN is not in the capability bounding set; .*capabilities\.add: \[NET_ADMIN\]/,
    );
    const nnp = await run(inNode(ns, { ...SIDECAR, noNewPrivs: true }, ['tpfleet-sidecar', '--config', CONFIG]));
    assert.equal(nnp.code, 1);
    assert.match(nnp.stderr, /no_new_privs is set.*allowPrivilegeEscalation: true/);
  });

  test('the general node binary gives uid 65532 no capability; through netadmin-exec node runs with exactly NET_ADMIN', async () => {
    const probe =
      'const s=require("node:fs").readFileSync("/proc/self/status", "utf8");console.log(["CapEff","CapAmb"].map((k)=>new RegExp("^"+k+":\\\\s*(\\\\S+)","m").exec(s)[1]).join(" "))';
    const ns = await freshNs();
    const plain = await run(inNode(ns, SIDECAR, ['node', '-e', probe]));
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout.trim(), '0000000000000000 0000000000000000');
    const launched = await run(inNode(ns, SIDECAR, [LAUNCHER, '-e', probe]));
    assert.equal(launched.code, 0, launched.stderr);
    assert.equal(
      launched.stdout.trim(),
      '0000000000001000 0000000000001000',
      'CAP_NET_ADMIN (bit 12) effective, and ambient so cluster workers keep it',
    );
    // A worker forked the way cluster.fork does (exec of the same node) keeps exactly NET_ADMIN.
    const fork = `require("node:child_process").execFileSync(process.execPath, ["-e", ${JSON.stringify(probe)}], { stdio: "inherit" })`;
    const child = await run(inNode(ns, SIDECAR, [LAUNCHER, '-e', fork]));
    assert.equal(child.code, 0, child.stderr);
    assert.equal(child.stdout.trim(), '0000000000001000 0000000000001000');
    // Without NET_ADMIN in the bounding set, or under no_new_privs, it runs nothing and says why.
    // Started through sh, as tpfleet-sidecar starts it: in a container the launcher's parent has no
    // permitted capabilities (uid 65532), and no_new_privs grants no more than the parent had;
    // setpriv itself still holds them, so exec'ing the launcher straight from it would not show that.
    for (const as of [
      { uid: 65532, caps: [] },
      { ...SIDECAR, noNewPrivs: true },
    ] as RunAs[]) {
      const refused = await run(
        inNode(ns, as, ['/bin/sh', '-c', 'exec "$0" "$@"', LAUNCHER, '-e', 'console.log("ran")']),
      );
      assert.equal(refused.code, 1, `${JSON.stringify(as)}: ${refused.stdout} ${refused.stderr}`);
      assert.equal(refused.stdout, '');
      assert.match(refused.stderr, /netadmin-exec: CAP_NET_ADMIN is not permitted/);
    }
  });

  test("the cleanup-done container's `sleep infinity` resolves in the image for uid 65532", async () => {
    const r = await run(inNode(await freshNs(), NOBODY, ['sleep', '0']));
    assert.equal(r.code, 0, r.stderr);
  });
});

interface Proc {
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/**
 * A long-running process (argv from inImage) in its own process group. stop() signals the whole
 * group: unshare ignores SIGTERM while it waits for its child, so signalling it alone would hang.
 * SIGTERM lets the sidecar drain (it has no connections); SIGKILL follows after 10 s.
 */
function startProc(argv: string[]): Proc {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => (buf += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (buf += d.toString()));
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      /* already gone */
    }
  };
  return {
    child,
    output: () => buf,
    stop: async () => {
      signal('SIGTERM');
      const t = setTimeout(() => signal('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}
