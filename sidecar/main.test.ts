// The real sidecar process (sidecar/main.ts): config errors, and, as root, two workers behind a
// minimal TPROXY rule set in a client ⇄ proxy ⇄ server namespace topology.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { createTopology, nsExec, nsSpawn, privilegedSkipReason, sh, waitFor, type Topology } from '../e2e/netns.ts';
import {
  nodeConfigYaml,
  peer,
  scrape,
  scratch,
  startInNs,
  startPeerServer,
  startSidecar,
  tsNode,
  type Proc,
} from '../e2e/proc.ts';
import { blackhole, installTproxy } from './tproxy.testkit.ts';

const LISTEN = 15101,
  METRICS = 15190,
  ECHO = 8080,
  BLACKHOLE = 8081,
  BACKLOG = 1234;

function runMain(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const [cmd, ...rest] = tsNode('sidecar/main.ts');
  const p = spawn(cmd!, [...rest, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => p.on('exit', (code) => resolve({ code, stderr })));
}

test('a bad config exits 2 with a message naming the field', async () => {
  const dir = scratch('sidecar-bad');
  try {
    const file = dir.file('bad.yaml', nodeConfigYaml({ proxy: { workers: -1, timeouts: { idle: 'forever' } } }));
    const r = await runMain(['--config', file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /proxy\.workers: /);
    assert.match(r.stderr, /proxy\.timeouts\.idle: /);
  } finally {
    dir.remove();
  }
});

test('a missing --config or an unknown flag exits 2 with the usage', async () => {
  for (const args of [[], ['--config'], ['--confg', 'x.yaml']]) {
    const r = await runMain(args);
    assert.equal(r.code, 2, `args ${args.join(' ')}`);
    assert.match(r.stderr, /usage: sidecar\/main\.ts --config FILE/);
  }
  const bad = await runMain(['--config', 'x.yaml', '--template', 'Not-A-Hash']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--template must be 8 to 64 lowercase hex digits, got "Not-A-Hash"/);
});

test('at logLevel error a start and a drain print only the one "listening" line', {
  skip: privilegedSkipReason(),
}, async () => {
  const ns = `scq${process.pid % 100000}`;
  const dir = scratch('sidecar-quiet');
  try {
    await sh(['ip', 'netns', 'add', ns]);
    await nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    const file = dir.file('quiet.yaml', nodeConfigYaml({ proxy: { workers: 1, logLevel: 'error' } }));
    const p = await startInNs(ns, [...tsNode('sidecar/main.ts'), '--config', file], { ready: /"msg":"listening"/ });
    assert.equal(await p.stop(5000), 0);
    const lines = p.output().trim().split('\n');
    assert.equal(lines.length, 1, p.output());
    assert.deepEqual(JSON.parse(lines[0]!), {
      ...JSON.parse(lines[0]!),
      msg: 'listening',
      workers: 1,
      listenPort: 15101,
      families: [4, 6],
      metricsPort: 15190,
    });
  } finally {
    await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    dir.remove();
  }
});

test('a listen port taken by another program stops the sidecar with exit 1, no restart loop', {
  skip: privilegedSkipReason(),
}, async () => {
  const ns = `scb${process.pid % 100000}`;
  const dir = scratch('sidecar-busy');
  let squatter: ReturnType<typeof nsSpawn> | undefined;
  try {
    await sh(['ip', 'netns', 'add', ns]);
    await nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    // A plain listener (no SO_REUSEPORT) on the proxy port: our bind must fail with EADDRINUSE.
    squatter = nsSpawn(ns, [
      process.execPath,
      '-e',
      `require('net').createServer().listen(${LISTEN}, '0.0.0.0', () => console.log('up'))`,
    ]);
    await new Promise((r) => squatter!.stdout!.once('data', r));
    const file = dir.file('busy.yaml', nodeConfigYaml({ proxy: { workers: 2, listenPort: LISTEN } }));
    const p = await startInNs(ns, [...tsNode('sidecar/main.ts'), '--config', file]);
    const code = await new Promise((r) => p.child.on('exit', r));
    assert.equal(code, 1);
    assert.match(p.output(), /cannot create the transparent listener: bind EADDRINUSE/);
    assert.doesNotMatch(p.output(), /restarting/);
  } finally {
    squatter?.kill();
    await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    dir.remove();
  }
});

/** GET http://127.0.0.1:METRICS{path} inside `ns`: the status code. */
async function status(ns: string, path: string): Promise<number> {
  const code = `fetch(process.argv[1]).then((r) => process.stdout.write(String(r.status)), () => process.stdout.write('0'))`;
  return Number(await nsExec(ns, [process.execPath, '-e', code, `http://127.0.0.1:${METRICS}${path}`]));
}

/** pids of the workers that logged `msg` since `from` in the sidecar's output. */
function pidsLogging(p: Proc, msg: string, from = 0): Map<number, number> {
  const count = new Map<number, number>();
  for (const line of p.output().slice(from).split('\n')) {
    if (!line.includes(`"msg":"${msg}"`)) continue;
    const pid = (JSON.parse(line) as { pid: number }).pid;
    count.set(pid, (count.get(pid) ?? 0) + 1);
  }
  return count;
}

describe('the sidecar process with two workers behind TPROXY', { skip: privilegedSkipReason() }, () => {
  let t: Topology, dir: ReturnType<typeof scratch>, server: Proc | undefined, px: Proc | undefined;
  const cleanups: (() => void)[] = [];
  const srv4 = () => `${t.server.v4}:${ECHO}`;

  const sidecarConfig = (drain: string) =>
    dir.file(
      `sidecar-${drain}.yaml`,
      nodeConfigYaml({
        proxy: {
          listenPort: LISTEN,
          metricsPort: METRICS,
          workers: 2,
          keepClientIp: true,
          backlog: BACKLOG,
          logLevel: 'debug',
          timeouts: { connect: '2s', drain },
        },
      }),
    );

  /** A client in the client namespace holding one connection to the echo server (see testdata). */
  async function holdConnection() {
    const child = nsSpawn(t.client.ns, [...tsNode('sidecar/testdata/held-client.ts'), t.server.v4, String(ECHO)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    cleanups.push(() => child.kill());
    await waitFor("the held connection to get the server's greeting", async () => out.includes('dst'));
    return { child, output: () => out };
  }

  before(async () => {
    t = await createTopology('sc');
    dir = scratch('sidecar');
    await installTproxy(t, LISTEN, [ECHO, BLACKHOLE]);
    await blackhole(t, BLACKHOLE);
    server = await startPeerServer(t.server.ns, [
      `${t.server.v4}:${ECHO}`,
      `[${t.server.v6}]:${ECHO}`,
      `${t.server.v4}:${BLACKHOLE}`,
    ]);
    px = await startSidecar(t.proxy.ns, sidecarConfig('20s'));
  });

  after(async () => {
    for (const c of cleanups) c();
    await px?.stop(2000);
    await server?.stop(2000);
    await t?.destroy();
    dir?.remove();
  });

  test('/healthz and /readyz answer 200; /metrics aggregates both workers', async () => {
    assert.equal(await status(t.proxy.ns, '/healthz'), 200);
    assert.equal(await status(t.proxy.ns, '/readyz'), 200);
    assert.equal(await status(t.proxy.ns, '/nope'), 404);
    const m = await scrape(t.proxy.ns, METRICS);
    assert.equal(m.get('tpfleet_proxy_workers'), 2);
    assert.equal(m.get('tpfleet_proxy_connections_active'), 0);
    assert.ok((m.get('process_resident_memory_bytes') ?? 0) > 0);
  });

  test('each worker listens with the configured backlog on IPv4 and IPv6', async () => {
    const ss = await nsExec(t.proxy.ns, ['ss', '-ltnH', `sport = :${LISTEN}`]);
    const lines = ss.trim().split('\n');
    assert.equal(lines.length, 4, ss); // 2 workers x 2 families, one SO_REUSEPORT group each
    for (const l of lines) assert.equal(l.trim().split(/\s+/)[2], String(BACKLOG), l);
  });

  test("connections are forwarded from the client's own address, IPv4 and IPv6", async () => {
    const v4 = await peer(t.client.ns, ['probe', '--to', srv4()]);
    assert.equal(v4.ok, true, JSON.stringify(v4));
    assert.match((v4.saw as { src: string }).src, new RegExp(`^${t.client.v4.replace(/\./g, '\\.')}:`));
    const v6 = await peer(t.client.ns, ['probe', '--to', `[${t.server.v6}]:${ECHO}`]);
    assert.equal(v6.ok, true, JSON.stringify(v6));
    assert.ok((v6.saw as { src: string }).src.startsWith(`[${t.client.v6}]:`), JSON.stringify(v6));
    const xfer = await peer(t.client.ns, ['transfer', '--to', srv4(), '--bytes', String(8 << 20)]);
    assert.equal(xfer.receivedSha, xfer.sentSha);
    assert.equal(xfer.received, 8 << 20);
  });

  test('both workers serve: 200 connections are spread across them (SO_REUSEPORT)', async () => {
    const from = px!.output().length;
    const r = await peer(t.client.ns, ['many', '--to', srv4(), '--count', '200']);
    assert.deepEqual(r, { ok: 200, failed: 0, errors: {} });
    const perWorker = pidsLogging(px!, 'accepted', from);
    assert.equal(perWorker.size, 2, `accepted by ${JSON.stringify([...perWorker])}`);
    assert.equal(
      [...perWorker.values()].reduce((a, b) => a + b, 0),
      200,
    );
    for (const n of perWorker.values()) assert.ok(n >= 20, `uneven spread ${JSON.stringify([...perWorker])}`);
  });

  test('an upstream that never answers closes the client after the connect timeout', async () => {
    const t0 = Date.now();
    const r = await peer(t.client.ns, ['probe', '--to', `${t.server.v4}:${BLACKHOLE}`, '--timeout', '8000']);
    const took = Date.now() - t0;
    assert.equal(r.ok, false);
    assert.equal(r.error, 'ECONNRESET', "reset by the proxy, not the client's own 8 s timeout");
    // `took` includes the probe tool's start-up, so only the lower bound is tight; the upper bound
    // is the ECONNRESET above (the probe would report its own ETIMEDOUT after 8 s).
    assert.ok(took >= 1900, `took ${took} ms with a 2 s connect timeout`);
    const m = await scrape(t.proxy.ns, METRICS);
    assert.equal(m.get('tpfleet_proxy_errors_total{reason="connect_timeout"}'), 1);
    assert.equal(m.get('tpfleet_proxy_connections_closed_total{result="timeout"}'), 1);
  });

  test('a direct connection to the proxy port is refused as a loop', async () => {
    const r = await peer(t.client.ns, ['probe', '--to', `${t.proxy.clientSide.v4}:${LISTEN}`]);
    assert.equal(r.ok, false);
    const m = await scrape(t.proxy.ns, METRICS);
    assert.equal(m.get('tpfleet_proxy_connections_closed_total{result="loop"}'), 1);
  });

  test('a crashed worker is restarted and the proxy becomes ready again', async () => {
    const pids = [...pidsLogging(px!, 'worker listening').keys()];
    assert.equal(pids.length, 2);
    process.kill(pids[0]!, 'SIGKILL');
    await waitFor(
      'the restart to be counted',
      async () => (await scrape(t.proxy.ns, METRICS)).get('tpfleet_proxy_worker_restarts_total') === 1,
    );
    assert.equal(await status(t.proxy.ns, '/healthz'), 200, 'one worker alive is healthy');
    await waitFor('readyz 200 with a new worker', async () => (await status(t.proxy.ns, '/readyz')) === 200);
    assert.equal(pidsLogging(px!, 'worker listening').size, 3);
    const r = await peer(t.client.ns, ['many', '--to', srv4(), '--count', '20']);
    assert.equal(r.ok, 20);
  });

  test('SIGTERM drains: not ready, no new connections, open ones keep working, then exit 0', async () => {
    const held = await holdConnection();
    const exited = new Promise<number | null>((r) => px!.child.on('exit', (code) => r(code)));
    const t0 = Date.now();
    px!.child.kill('SIGTERM');
    await waitFor('readyz 503', async () => (await status(t.proxy.ns, '/readyz')) === 503);
    const probe = await peer(t.client.ns, ['probe', '--to', srv4(), '--timeout', '2000']);
    assert.deepEqual(probe, { ok: false, error: 'ECONNREFUSED' }, 'a new connection is not accepted');
    held.child.stdin!.write('still-there\n');
    await waitFor('the echo on the held connection', async () => held.output().includes('still-there'));
    assert.equal(px!.child.exitCode, null, 'still running while a connection is open');
    held.child.stdin!.end();
    assert.equal(await exited, 0);
    assert.ok(Date.now() - t0 < 20_000, 'exited before the drain timeout');
    assert.match(held.output(), /"closed":true}/, 'the held connection closed cleanly');
    assert.equal(pidsLogging(px!, 'drained').size, 2);
  });

  test('when the drain timeout expires, remaining connections are reset and the process exits 0', async () => {
    px = await startSidecar(t.proxy.ns, sidecarConfig('1500ms'));
    const held = await holdConnection();
    const t0 = Date.now();
    assert.equal(await px.stop(10_000), 0);
    const took = Date.now() - t0;
    assert.ok(took >= 1400 && took < 8000, `exited after ${took} ms with a 1.5 s drain timeout`);
    await waitFor('the held connection to be closed', async () => held.output().includes('"closed"'));
    assert.match(held.output(), /"closed":true,"error":"ECONNRESET"/);
  });

  test('a second SIGTERM exits at once', async () => {
    px = await startSidecar(t.proxy.ns, sidecarConfig('20s'));
    await holdConnection();
    const exited = new Promise<number | null>((r) => px!.child.on('exit', (code) => r(code)));
    px.child.kill('SIGTERM');
    await waitFor('readyz 503', async () => (await status(t.proxy.ns, '/readyz')) === 503);
    const t0 = Date.now();
    px.child.kill('SIGTERM');
    assert.equal(await exited, 1);
    assert.ok(Date.now() - t0 < 3000, 'no drain wait');
    await waitFor(
      'the workers to be gone',
      async () => !(await nsExec(t.proxy.ns, ['ss', '-ltnH', `sport = :${LISTEN}`])).trim(),
    );
  });
});
