// Test topology in real network namespaces: client ⇄ proxy ⇄ server, joined by veth pairs.
//
//   <p>-cli  10.X.1.2/24 fd00:X:1::2/64 ──veth── 10.X.1.1 fd00:X:1::1  <p>-px  10.X.2.1 fd00:X:2::1 ──veth── 10.X.2.2 fd00:X:2::2  <p>-srv
//
// The proxy namespace routes between the two (it is the "node"); the client's default route points
// at it, so client → server traffic crosses it and can be intercepted in its PREROUTING hook.
// Every command is an argv array (never a shell string). Namespaces are removed by destroy().
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Host {
  ns: string;
  v4: string;
  v6: string;
}

export interface Topology {
  prefix: string;
  client: Host;
  proxy: { ns: string; clientSide: Host; serverSide: Host; clientIf: string; serverIf: string };
  server: Host;
  destroy(): Promise<void>;
}

export const isRoot = (): boolean => process.getuid?.() === 0;

/** One-line reason for skipping a privileged test locally, or undefined when it can run. */
export function privilegedSkipReason(): string | undefined {
  if (process.env.CI && !isRoot()) throw new Error('privileged tests must run as root in CI');
  return isRoot() ? undefined : 'needs root (network namespaces); run `sudo npm test`';
}

export async function sh(argv: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<string> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('empty argv');
  if (opts.input !== undefined) return runWithInput(cmd, args, opts.input);
  try {
    const { stdout } = await run(cmd, args, { maxBuffer: 64 << 20 });
    return stdout;
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${argv.join(' ')} failed: ${err.stderr?.trim() || err.message}`, { cause: e });
  }
}

function runWithInput(cmd: string, args: string[], input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '',
      err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')}: ${err.trim()}`))));
    p.stdin.end(input);
  });
}

/** argv that runs `argv` inside namespace `ns`. */
export const inNs = (ns: string, argv: string[]): string[] => ['ip', 'netns', 'exec', ns, ...argv];

export const nsExec = (ns: string, argv: string[], opts?: { input?: string; allowFail?: boolean }) =>
  sh(inNs(ns, argv), opts);

export function nsSpawn(ns: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
  const full = inNs(ns, argv);
  return spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

let counter = 0;

/**
 * Builds the three-namespace topology. `octet` (1-250) keeps parallel topologies apart; the
 * namespace names carry the pid so a crashed run never collides with the next one.
 */
export async function createTopology(name = 'tp', octet = 1 + ((process.pid + counter++) % 200)): Promise<Topology> {
  const prefix = `${name}${process.pid % 10000}${counter}`;
  const cli = `${prefix}-cli`,
    px = `${prefix}-px`,
    srv = `${prefix}-srv`;
  const hx = octet.toString(16);
  const t: Topology = {
    prefix,
    client: { ns: cli, v4: `10.${octet}.1.2`, v6: `fd00:${hx}:1::2` },
    proxy: {
      ns: px,
      clientSide: { ns: px, v4: `10.${octet}.1.1`, v6: `fd00:${hx}:1::1` },
      serverSide: { ns: px, v4: `10.${octet}.2.1`, v6: `fd00:${hx}:2::1` },
      clientIf: 'to-cli',
      serverIf: 'to-srv',
    },
    server: { ns: srv, v4: `10.${octet}.2.2`, v6: `fd00:${hx}:2::2` },
    destroy: async () => {
      for (const ns of [cli, px, srv]) await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    },
  };
  try {
    for (const ns of [cli, px, srv]) {
      await sh(['ip', 'netns', 'add', ns]);
      await nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
      // No duplicate address detection: link-local addresses are usable as soon as they exist.
      await nsExec(ns, ['sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
    }
    await link(t, cli, 'eth0', px, 'to-cli', t.client, t.proxy.clientSide);
    await link(t, srv, 'eth0', px, 'to-srv', t.server, t.proxy.serverSide);
    // The kernel adds IPv6 link-local addresses and routes when it sees carrier, up to a second
    // after `link set up` (linkwatch). Wait for them so the topology is settled: tests compare
    // snapshots of the routing tables taken before and after their changes.
    for (const [ns, ifn] of [
      [cli, 'eth0'],
      [px, 'to-cli'],
      [px, 'to-srv'],
      [srv, 'eth0'],
    ] as const) {
      await waitFor(
        `link-local address on ${ns}/${ifn}`,
        async () =>
          (await nsExec(ns, ['ip', '-6', 'route', 'show', 'table', 'local', 'dev', ifn])).includes('local fe80::'),
        5000,
      );
    }
    await nsExec(px, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    // The proxy's ephemeral ports apart from the client's. With keepClientIp the proxy dials from the
    // client's address; after the proxy stops, its TIME_WAIT sockets (60 s) still hold those
    // 4-tuples, and a direct client connection that happens to reuse one (same port) gets its
    // SYN-ACK swallowed at the node: a real effect (docs/operator.md, "Known limits"), but a random
    // ~1 % failure of any test that probes right after a proxy stopped. Disjoint ranges (the client
    // keeps the default 32768-60999; the proxy gets as many ports, below it) remove it.
    await nsExec(px, ['sysctl', '-qw', 'net.ipv4.ip_local_port_range=1024 32767']);
    for (const [ns, gw] of [
      [cli, t.proxy.clientSide],
      [srv, t.proxy.serverSide],
    ] as const) {
      await nsExec(ns, ['ip', 'route', 'add', 'default', 'via', gw.v4]);
      await nsExec(ns, ['ip', '-6', 'route', 'add', 'default', 'via', gw.v6]);
    }
    return t;
  } catch (e) {
    await t.destroy();
    throw e;
  }
}

async function link(t: Topology, nsA: string, ifA: string, nsB: string, ifB: string, a: Host, b: Host): Promise<void> {
  const tmp = `${t.prefix.slice(0, 8)}${ifB}`.slice(0, 15);
  await sh(['ip', 'link', 'add', tmp, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
  await nsExec(nsA, ['ip', 'link', 'set', tmp, 'name', ifA]);
  for (const [ns, ifn, h] of [
    [nsA, ifA, a],
    [nsB, ifB, b],
  ] as const) {
    // nodad: addresses are usable at once instead of after IPv6 duplicate address detection.
    await nsExec(ns, ['ip', 'addr', 'add', `${h.v4}/24`, 'dev', ifn]);
    await nsExec(ns, ['ip', 'addr', 'add', `${h.v6}/64`, 'dev', ifn, 'nodad']);
    await nsExec(ns, ['ip', 'link', 'set', ifn, 'up']);
  }
}

/** Waits until `probe` resolves true, polling every `everyMs`, or throws after `timeoutMs`. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs = 10_000,
  everyMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
