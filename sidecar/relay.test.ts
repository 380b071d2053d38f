// The data engine's relay, through the real sidecar process behind a minimal TPROXY rule set in a
// client ⇄ proxy ⇄ server namespace topology: how bytes move (splice or copy, and the counter that
// says which), backpressure and memory under a slow reader, half-close, resets on either side, the
// idle and connect timeouts, maxConnections, and 5,000 idle connections coming and going.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { treeRss } from '../e2e/bench/measure.ts';
import { createTopology, nsSpawn, privilegedSkipReason, waitFor, type Topology } from '../e2e/netns.ts';
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
  SCENARIO = 8080,
  HOLD = 8082,
  REFUSED = 8083,
  BLACKHOLE = 8084;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the engine relay behind TPROXY', { skip: privilegedSkipReason() }, () => {
  let t: Topology, dir: ReturnType<typeof scratch>;
  const servers: Proc[] = [];
  let px: Proc | undefined;
  const to = (port = SCENARIO) => `${t.server.v4}:${port}`;
  const metric = async (series: string) => (await scrape(t.proxy.ns, METRICS)).get(series) ?? 0;

  async function sidecar(proxy: object): Promise<Proc> {
    await px?.stop(5000);
    const file = dir.file(
      'sidecar.yaml',
      nodeConfigYaml({
        proxy: { listenPort: LISTEN, metricsPort: METRICS, workers: 2, keepClientIp: true, logLevel: 'warn', ...proxy },
      }),
    );
    px = await startSidecar(t.proxy.ns, file);
    return px;
  }

  const client = async (cmd: string, extra: string[] = [], port = SCENARIO) =>
    peerScenario(t.client.ns, ['client', '--to', to(port), '--cmd', cmd, ...extra]);

  before(async () => {
    t = await createTopology('rl');
    dir = scratch('relay');
    await installTproxy(t, LISTEN, [SCENARIO, HOLD, REFUSED, BLACKHOLE]);
    await blackhole(t, BLACKHOLE);
    servers.push(
      await startInNs(t.server.ns, [...tsNode('e2e/tools/scenario.ts'), 'serve', '--listen', to()], {
        ready: /"listening"/,
      }),
    );
    servers.push(await startPeerServer(t.server.ns, [to(HOLD)], 'hold'));
  });

  after(async () => {
    await px?.stop(2000);
    for (const s of servers) await s.stop(2000);
    await t?.destroy();
    dir?.remove();
  });

  test('bulk data takes the splice path, small exchanges the copy path; 20 MB each way arrive intact with half-close', async () => {
    await sidecar({});
    const copy0 = await metric('tpfleet_proxy_relay_bytes_total{path="copy"}');
    const small = await client('echo', ['--bytes', '300']);
    assert.equal(small.receivedSha, small.sentSha);
    assert.equal(
      await metric('tpfleet_proxy_relay_bytes_total{path="splice"}'),
      0,
      'a 300-byte exchange is copied, not spliced',
    );
    assert.ok((await metric('tpfleet_proxy_relay_bytes_total{path="copy"}')) - copy0 >= 600);
    const big = await client('echo', ['--bytes', String(20 << 20)]);
    assert.equal(big.ok, true, JSON.stringify(big));
    assert.equal(big.received, 20 << 20, 'the whole echo arrived after the client half-closed');
    assert.equal(big.receivedSha, big.sentSha);
    const spliced = await metric('tpfleet_proxy_relay_bytes_total{path="splice"}');
    assert.ok(spliced > 30 << 20, `bulk went through splice (${spliced} bytes)`);
    assert.equal(
      await metric('tpfleet_proxy_bytes_total{direction="client_to_upstream"}'),
      (20 << 20) + 300 + 2 * 'echo\n'.length,
    );
  });

  test('a slow reader (1 byte a second) pushes back on the client: sidecar RSS stays under baseline + 32 MB', async () => {
    const p = await sidecar({});
    await client('echo', ['--bytes', '100']); // warm
    const base = treeRss(p.child.pid!);
    let peak = base;
    const writer = peerScenario(t.client.ns, ['client', '--to', to(), '--cmd', 'slow', '--seconds', '8']);
    while (!(await Promise.race([writer.then(() => true), sleep(250).then(() => false)])))
      peak = Math.max(peak, treeRss(p.child.pid!));
    const { sent } = (await writer) as { sent: number };
    assert.ok(sent < 100e6, `backpressure held the client (it could send ${sent} bytes)`);
    assert.ok(peak - base < 32 << 20, `RSS grew by ${((peak - base) / 2 ** 20).toFixed(1)} MiB`);
  });

  test('a refused upstream connect resets the client and counts connect_refused', async () => {
    await sidecar({});
    const r = await peer(t.client.ns, ['probe', '--to', to(REFUSED)]);
    assert.deepEqual(r, { ok: false, error: 'ECONNRESET' });
    assert.equal(await metric('tpfleet_proxy_errors_total{reason="connect_refused"}'), 1);
    assert.equal(await metric('tpfleet_proxy_connections_closed_total{result="error"}'), 1);
  });

  test('an upstream that never answers SYN hits the connect timeout: the client is reset', async () => {
    await sidecar({ timeouts: { connect: '700ms' } });
    const t0 = Date.now();
    const r = await peer(t.client.ns, ['probe', '--to', to(BLACKHOLE), '--timeout', '8000']);
    assert.deepEqual(r, { ok: false, error: 'ECONNRESET' });
    assert.ok(Date.now() - t0 >= 650, 'not before the timeout');
    assert.equal(await metric('tpfleet_proxy_errors_total{reason="connect_timeout"}'), 1);
    assert.equal(await metric('tpfleet_proxy_connections_closed_total{result="timeout"}'), 1);
  });

  test('the idle timeout resets both sides; one-way traffic keeps a connection alive', async () => {
    await sidecar({ timeouts: { idle: '400ms' } });
    const quiet = await client('quiet');
    assert.equal(quiet.error, 'ECONNRESET');
    assert.ok((quiet.closedAfterMs as number) >= 350, `closed after ${quiet.closedAfterMs} ms`);
    const tick = await client('tick', ['--bytes', '1200']);
    assert.ok((tick.ticks as number) >= 10, `ticks arrived: ${tick.ticks}`);
    assert.ok(
      (tick.closedAfterMs as number) >= 1500,
      `closed after ${tick.closedAfterMs} ms, once the ticks had stopped for 400 ms`,
    );
    await waitFor(
      'both closes counted',
      async () => (await metric('tpfleet_proxy_errors_total{reason="idle_timeout"}')) === 2,
    );
    assert.equal(await metric('tpfleet_proxy_connections_closed_total{result="timeout"}'), 2);
    const serverSide = servers[0]!
      .output()
      .split('\n')
      .filter((l) => l.includes('"closed"'))
      .slice(-2)
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      serverSide.map((s) => s.error),
      ['ECONNRESET', 'ECONNRESET'],
      'the server side was reset too',
    );
  });

  test('a reset on either side resets the other and is counted by side', async () => {
    await sidecar({});
    const r1 = await client('reset');
    assert.equal(r1.error, 'ECONNRESET', 'the upstream RST reached the client');
    const r2 = await client('reset-self');
    assert.ok(r2.closedAfterMs !== undefined);
    await waitFor('the server to see the client reset', async () =>
      servers[0]!
        .output()
        .split('\n')
        .some((l) => l.includes('"closed"') && l.includes('"cmd":"echo"') && l.includes('ECONNRESET')),
    );
    await waitFor(
      'both counted',
      async () => (await metric('tpfleet_proxy_errors_total{reason="client_reset"}')) === 1,
    );
    assert.equal(await metric('tpfleet_proxy_errors_total{reason="upstream_reset"}'), 1);
  });

  test('connections beyond maxConnections are reset at once and counted; capacity frees up', async () => {
    await sidecar({ maxConnections: 2 });
    // Held against the echo scenario: when a client ends, its upstream ends too (a hold server would
    // keep the half-closed connection open, as it should).
    const held = [holdOne(t, SCENARIO, 'echo'), holdOne(t, SCENARIO, 'echo')];
    await waitFor('two open', async () => (await metric('tpfleet_proxy_connections_active')) === 2);
    const extra = await Promise.all(
      [1, 2].map(() => peer(t.client.ns, ['probe', '--to', to(HOLD), '--timeout', '3000'])),
    );
    assert.deepEqual(extra, [
      { ok: false, error: 'ECONNRESET' },
      { ok: false, error: 'ECONNRESET' },
    ]);
    assert.equal(await metric('tpfleet_proxy_connections_shed_total'), 2);
    assert.equal(await metric('tpfleet_proxy_connections_closed_total{result="shed"}'), 2);
    held[0]!.kill();
    await waitFor('one freed', async () => (await metric('tpfleet_proxy_connections_active')) === 1);
    const again = await client('echo', ['--bytes', '10']);
    assert.equal(again.receivedSha, again.sentSha, 'a new connection is served once capacity freed up');
    held[1]!.kill();
  });

  test('bytes of a still-open connection show up at scrape time, and are not counted twice', async () => {
    await sidecar({});
    const c = holdOne(t, SCENARIO, 'echo');
    c.stdin!.write('0123456789abcdef\n');
    await waitFor(
      'the bytes counted while open',
      async () => (await metric('tpfleet_proxy_bytes_total{direction="upstream_to_client"}')) === 17 + 0,
    );
    assert.equal(await metric('tpfleet_proxy_bytes_total{direction="client_to_upstream"}'), 'echo\n'.length + 17);
    assert.equal(await metric('tpfleet_proxy_connections_active'), 1);
    c.stdin!.end();
    await waitFor('closed', async () => (await metric('tpfleet_proxy_connections_active')) === 0);
    assert.equal(await metric('tpfleet_proxy_bytes_total{direction="client_to_upstream"}'), 'echo\n'.length + 17);
  });

  test('5,000 idle connections are closed within idle timeout + 2 s, and RSS comes back within 20 %, twice', async () => {
    const p = await sidecar({ timeouts: { idle: '4s' } });
    await client('echo', ['--bytes', '100']);
    await sleep(500);
    const base = treeRss(p.child.pid!);
    for (const round of [1, 2]) {
      const holder = await startInNs(
        t.client.ns,
        [...tsNode('e2e/tools/peer.ts'), 'hold', '--to', to(HOLD), '--count', '5000'],
        {
          ready: /"held":\d+/,
          readyTimeoutMs: 120_000,
        },
      );
      try {
        const r = JSON.parse(/\{"held".*\}/.exec(holder.output())![0]) as { held: number; failed: number };
        assert.deepEqual(r, { held: 5000, failed: 0 }, `round ${round}`);
        assert.equal(await metric('tpfleet_proxy_connections_active'), 5000);
        // Timed by the client itself (no scrape latency): from the moment all were open until the last reset.
        await waitFor(
          'every idle connection closed',
          async () => /"allClosedAfterMs"/.test(holder.output()),
          4000 + 2000 + 5000,
          100,
        );
        const { allClosedAfterMs } = JSON.parse(/\{"allClosedAfterMs".*\}/.exec(holder.output())![0]) as {
          allClosedAfterMs: number;
        };
        assert.ok(allClosedAfterMs <= 4000 + 2000, `closed ${allClosedAfterMs} ms after they were all open (idle 4 s)`);
        assert.equal(await metric('tpfleet_proxy_connections_active'), 0);
      } finally {
        await holder.stop();
      }
      await sleep(1000);
      const rss = treeRss(p.child.pid!);
      assert.ok(
        rss <= base * 1.2,
        `round ${round}: RSS ${(rss / 2 ** 20).toFixed(1)} MiB against a baseline of ${(base / 2 ** 20).toFixed(1)} MiB`,
      );
    }
  });
});

/** Runs a scenario.ts command in `ns` and returns its JSON result line. */
async function peerScenario(ns: string, args: string[]): Promise<Record<string, unknown>> {
  const p = await startInNs(ns, [...tsNode('e2e/tools/scenario.ts'), ...args]);
  const code = await new Promise((r) => p.child.on('exit', r));
  const line = p.output().trim().split('\n').pop() ?? '';
  if (code !== 0) throw new Error(`scenario ${args.join(' ')} exited ${code}: ${p.output()}`);
  return JSON.parse(line) as Record<string, unknown>;
}

/** One connection held open from the client namespace (sidecar/testdata/held-client.ts); kill() ends it. */
function holdOne(t: Topology, port = HOLD, first?: string) {
  const child = nsSpawn(t.client.ns, [...tsNode('sidecar/testdata/held-client.ts'), t.server.v4, String(port)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  if (first) child.stdin!.write(`${first}\n`);
  return child;
}
