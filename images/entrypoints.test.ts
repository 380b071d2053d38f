// The images' entrypoints really start, each with the user, capabilities and root filesystem the
// operator's DaemonSet and Deployment give it (operator/render/daemonset.ts, ADR 0005): processes run
// chrooted in the mounted image, in their own PID namespace and a fresh network namespace.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, privilegedSkipReason, sh, waitFor, type Topology } from '../e2e/netns.ts';
import { httpStatus, nodeConfigYaml, peer, startPeerServer, type Proc as PeerProc } from '../e2e/proc.ts';
import { installTproxy } from '../e2e/tproxy.ts';
import { buildImages } from './images.ts';
import { inImage, mountImage, run, type Rootfs, type RunAs } from './rootfs.ts';

const CONFIG = '/etc/tpfleet/nodeconfig.yaml';
const METRICS = 15190;
/** As the DaemonSet's containers run (operator/render/daemonset.ts). */
const SIDECAR: RunAs = { uid: 65532, caps: ['NET_RAW'] };
/** The sidecar's capability launcher (images/launcher/sidecar-exec.c). */
const LAUNCHER = '/usr/local/libexec/tpfleet/sidecar-exec';
/** CAP_NET_RAW (bit 13) as /proc/<pid>/status prints a capability set. */
const NET_RAW_ONLY = '0000000000002000';
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

  /** Capability sets of every thread of process `pid` (host PID), as /proc shows them. */
  const threadCaps = (pid: number) =>
    readdirSync(`/proc/${pid}/task`).map((tid) => {
      const st = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      return ['CapEff', 'CapAmb', 'CapPrm'].map((k) => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(st)![1]).join(' ');
    });
  /** The host PID of the process listening on `port` in `ns` (ss -p). */
  const listenerPid = async (ns: string, port: number) => {
    const out = await sh(['ip', 'netns', 'exec', ns, 'ss', '-Hltnp', 'sport', '=', `:${port}`]);
    return Number(/pid=(\d+)/.exec(out)?.[1] ?? assert.fail(`no listener on ${port}: ${out}`));
  };
  const startSidecarIn = async (ns: string, config: string) => {
    const p = startProc(inNode(ns, SIDECAR, ['tpfleet-sidecar', '--config', config], await node.readOnly()));
    await waitFor(
      "the sidecar's /readyz to answer 200",
      async () => {
        if (p.child.exitCode !== null) throw new Error('exited');
        return (await httpStatus(ns, METRICS, '/readyz')) === 200;
      },
      30_000,
      200,
    ).catch(async (e: Error) => {
      await p.stop();
      assert.fail(`${e.message}; output:\n${p.output().slice(-2000)}`);
    });
    return p;
  };

  test('tpfleet-sidecar as uid 65532 with only NET_RAW on a read-only root becomes ready (file capability)', async () => {
    const ns = await freshNs();
    const p = await startSidecarIn(ns, CONFIG);
    try {
      // the transparent listener exists, owned by the non-root user
      const listeners = await sh(['ip', 'netns', 'exec', ns, 'ss', '-Hltne', 'sport', '=', ':15101']);
      assert.match(listeners, /uid:65532/);
      // node and every engine thread hold exactly NET_RAW: effective, ambient, permitted
      const caps = threadCaps(await listenerPid(ns, 15101));
      assert.ok(caps.length > 1, `threads: ${caps.length}`);
      for (const c of caps) assert.equal(c, `${NET_RAW_ONLY} ${NET_RAW_ONLY} ${NET_RAW_ONLY}`);
    } finally {
      await p.stop();
    }
  });

  test('tpfleet-sidecar without NET_RAW, or with no_new_privs, exits 1 naming the missing pod setting', async () => {
    const ns = await freshNs();
    // NET_ADMIN alone is not what the pod asks for any more: the entrypoint names NET_RAW.
    const noCap = await run(inNode(ns, { uid: 65532, caps: ['NET_ADMIN'] }, ['tpfleet-sidecar', '--config', CONFIG]));
    assert.equal(noCap.code, 1);
    assert.match(noCap.stderr, /CAP_NET_RAW is not in the capability bounding set; .*capabilities\.add: \[NET_RAW\]/);
    const nnp = await run(inNode(ns, { ...SIDECAR, noNewPrivs: true }, ['tpfleet-sidecar', '--config', CONFIG]));
    assert.equal(nnp.code, 1);
    assert.match(nnp.stderr, /no_new_privs is set.*allowPrivilegeEscalation: true/);
  });

  describe('with only NET_RAW the sidecar forwards intercepted connections (TPROXY)', () => {
    let t: Topology, server: PeerProc | undefined;
    const ECHO = 8080;
    before(async () => {
      t = await createTopology('img');
      await installTproxy(t, 15101, [ECHO]);
      server = await startPeerServer(t.server.ns, [`${t.server.v4}:${ECHO}`]);
    });
    after(async () => {
      await server?.stop(2000);
      await t?.destroy();
    });
    for (const keepClientIp of [true, false]) {
      test(`keepClientIp ${keepClientIp}: the server sees ${keepClientIp ? "the client's" : "the proxy's"} address`, async () => {
        const config = `/etc/tpfleet/keep-${keepClientIp}.yaml`;
        writeFileSync(
          path.join(node.root, config.slice(1)),
          nodeConfigYaml({ proxy: { workers: 1, keepClientIp, timeouts: { connect: '2s' } } }),
        );
        const p = await startSidecarIn(t.proxy.ns, config);
        try {
          const r = await peer(t.client.ns, ['probe', '--to', `${t.server.v4}:${ECHO}`]);
          assert.equal(r.ok, true, `${JSON.stringify(r)}\n${p.output().slice(-2000)}`);
          const src = (r.saw as { src: string }).src;
          const want = keepClientIp ? t.client.v4 : t.proxy.serverSide.v4;
          assert.ok(src.startsWith(`${want}:`), `server saw ${src}, want ${want}`);
          const xfer = await peer(t.client.ns, [
            'transfer',
            '--to',
            `${t.server.v4}:${ECHO}`,
            '--bytes',
            String(1 << 20),
          ]);
          assert.equal(xfer.receivedSha, xfer.sentSha);
          for (const c of threadCaps(await listenerPid(t.proxy.ns, 15101)))
            assert.equal(c, `${NET_RAW_ONLY} ${NET_RAW_ONLY} ${NET_RAW_ONLY}`);
        } finally {
          await p.stop();
        }
      });
    }
  });

  test('the general node binary gives uid 65532 no capability; sidecar-exec runs only the sidecar', async () => {
    const ns = await freshNs();
    const plain = await run(
      inNode(ns, SIDECAR, [
        'node',
        '-e',
        'console.log(/^CapEff:\\s*(\\S+)/m.exec(require("fs").readFileSync("/proc/self/status","utf8"))[1])',
      ]),
    );
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout.trim(), '0000000000000000');
    // Anything in the container can exec the launcher: it must not run other JavaScript with NET_RAW.
    const marker = 'console.log("ran with the capability")';
    for (const [why, argv, env] of [
      ['-e', ['-e', marker], []],
      ['--eval=', [`--eval=${marker}`], []],
      ['--require', ['--require', '/proc/self/cwd/x.js', '--config', CONFIG], []],
      ['--import', [`--import=data:text/javascript,${marker}`, '--config', CONFIG], []],
      ['a script', ['/opt/tpfleet/dist/tpfleet-agent.mjs'], []],
      ['a flag after the sidecar flags', ['--config', CONFIG, '-e', marker], []],
      ['NODE_OPTIONS', ['--config', CONFIG], [`NODE_OPTIONS=--import=data:text/javascript,${marker}`]],
      ['NODE_PATH', ['--config', CONFIG], ['NODE_PATH=/dev/shm']],
      ['NODE_REPL_EXTERNAL_MODULE', ['--config', CONFIG], ['NODE_REPL_EXTERNAL_MODULE=/dev/shm/x.js']],
    ] as [string, string[], string[]][]) {
      const r = await run(inNode(ns, SIDECAR, ['/usr/bin/env', ...env, LAUNCHER, ...argv]));
      assert.equal(r.code, 2, `${why}: ${r.stdout} ${r.stderr}`);
      assert.equal(r.stdout, '', why);
      assert.match(
        r.stderr,
        /^sidecar-exec: refusing (argument|environment variable) ".+": it runs only the tpfleet sidecar/,
        why,
      );
    }
    // Environment the loader or OpenSSL would act on is not passed on (a plain exec, no secure mode).
    const dropped = await run(
      inNode(ns, SIDECAR, [
        '/usr/bin/env',
        'LD_PRELOAD=/nonexistent/x.so',
        'OPENSSL_CONF=/nonexistent',
        LAUNCHER,
        '--config',
        '/nonexistent.yaml',
      ]),
    );
    assert.equal(dropped.code, 2, dropped.stderr);
    assert.doesNotMatch(dropped.stderr, /LD_PRELOAD|x\.so|cannot be preloaded/);
    assert.match(dropped.stderr, /tpfleet-sidecar: .*nonexistent\.yaml/, 'the sidecar itself ran and named its config');
    // Without NET_RAW in the bounding set, or under no_new_privs, it runs nothing and says why.
    // Started through sh, as tpfleet-sidecar starts it: in a container the launcher's parent has no
    // permitted capabilities (uid 65532), and no_new_privs grants no more than the parent had;
    // setpriv itself still holds them, so exec'ing the launcher straight from it would not show that.
    for (const as of [
      { uid: 65532, caps: ['NET_ADMIN'] },
      { ...SIDECAR, noNewPrivs: true },
    ] as RunAs[]) {
      const refused = await run(inNode(ns, as, ['/bin/sh', '-c', 'exec "$0" "$@"', LAUNCHER, '--config', CONFIG]));
      assert.equal(refused.code, 1, `${JSON.stringify(as)}: ${refused.stdout} ${refused.stderr}`);
      assert.equal(refused.stdout, '');
      assert.match(refused.stderr, /sidecar-exec: CAP_NET_RAW is not permitted/);
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
