// The forwarding path on loopback with real sockets. The destination is handed to the Forwarder
// explicitly (the test seam): a plain listener cannot produce TPROXY's "local address = original
// destination". As root the production (IP_TRANSPARENT) dialer is used, else a plain one.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, test } from 'node:test';
import { Registry } from 'prom-client';
import { isRoot } from '../e2e/netns.ts';
import type { Endpoint } from './address.ts';
import { transparentDialer, type Dialer } from './dial.ts';
import { Forwarder, type ForwarderOptions } from './forward.ts';
import { createLogger } from './log.ts';
import { createMetrics } from './metrics.ts';

const plainDialer: Dialer = (dst, source) =>
  net.connect({ host: dst.address, port: dst.port, allowHalfOpen: true, ...(source ? { localAddress: source } : {}) });
const dialer = isRoot() ? transparentDialer() : plainDialer;
const log = createLogger('fatal');
const cleanups: (() => void)[] = [];
after(() => cleanups.forEach((c) => c()));

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

/** An upstream server on loopback; `onConn` gets each accepted socket. */
async function upstream(onConn: (s: net.Socket) => void): Promise<Endpoint> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    onConn(s);
  });
  return { address: '127.0.0.1', port: await listen(server), family: 4 };
}

async function proxy(dst: Endpoint, opts: Partial<ForwarderOptions> = {}) {
  const metrics = createMetrics(new Registry());
  const fwd = new Forwarder(
    {
      listenPort: 1,
      keepClientIp: false,
      connectTimeoutMs: 2000,
      idleTimeoutMs: 60_000,
      maxConnections: 100,
      ...opts,
    },
    dialer,
    metrics,
    log,
  );
  const accepted: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    accepted.push(s);
    fwd.handle(s, dst);
  });
  const port = await listen(server);
  const sample = async (series: string): Promise<number> => {
    const line = (await metrics.registry.metrics()).split('\n').find((l) => l.startsWith(`${series} `));
    return Number(line?.split(' ')[1]);
  };
  const connect = (localAddress?: string) => {
    const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, ...(localAddress ? { localAddress } : {}) });
    c.on('error', () => {});
    cleanups.push(() => c.destroy());
    return c;
  };
  return { fwd, port, accepted, sample, connect };
}

const closed = (s: net.Socket, ms = 3000): Promise<{ error?: string }> =>
  new Promise((resolve, reject) => {
    let error: string | undefined;
    const t = setTimeout(() => reject(new Error(`socket not closed within ${ms} ms`)), ms);
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code));
    s.once('close', () => {
      clearTimeout(t);
      resolve(error ? { error } : {});
    });
  });

const readAll = (s: net.Socket): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('20 MB each way arrive intact; the client half-closes and still gets the reply', async () => {
  const up = randomBytes(20 << 20),
    down = randomBytes(20 << 20);
  // The server answers only after the client's FIN: sha256 of what it got, then 20 MB.
  const dst = await upstream((s) => {
    const h = createHash('sha256');
    s.on('data', (d) => h.update(d));
    s.on('end', () => {
      s.write(h.digest('hex'));
      s.end(down);
    });
  });
  const p = await proxy(dst);
  const c = p.connect();
  const reply = readAll(c);
  c.end(up);
  const got = await reply;
  assert.equal(got.subarray(0, 64).toString(), sha(up), 'server received exactly what the client sent');
  assert.equal(sha(got.subarray(64)), sha(down), 'client received exactly what the server sent');
  await closed(c);
  await p.fwd.idle();
  assert.equal(await p.sample('tpfleet_proxy_bytes_total{direction="client_to_upstream"}'), up.length);
  assert.equal(await p.sample('tpfleet_proxy_bytes_total{direction="upstream_to_client"}'), down.length + 64);
  assert.equal(await p.sample('tpfleet_proxy_connections_closed_total{result="ok"}'), 1);
});

test('a slow upstream reader pushes back on the client instead of filling the proxy', async () => {
  let server: net.Socket | undefined;
  let received = 0;
  const dst = await upstream((s) => {
    server = s;
    s.pause(); // reads nothing until resumed below
    s.on('data', (d) => (received += d.length));
    s.on('end', () => s.end());
  });
  const p = await proxy(dst);
  const c = p.connect();
  const chunk = Buffer.alloc(64 << 10, 7);
  const limit = 256 << 20;
  let offered = 0,
    stalled = false;
  while (offered < limit && !stalled) {
    while (offered < limit && c.write(chunk)) offered += chunk.length;
    offered += chunk.length; // the write that returned false was queued too
    stalled = await Promise.race([
      new Promise<boolean>((r) => c.once('drain', () => r(false))),
      sleep(1000).then(() => true),
    ]);
  }
  assert.ok(stalled, `the client was never pushed back (offered ${offered} bytes)`);
  const proxied = p.accepted[0]!;
  const before = proxied.bytesRead;
  await sleep(300);
  // Bounded by kernel socket buffers plus Node's 16 KiB high-water marks, not by what was offered.
  assert.equal(proxied.bytesRead, before, 'the proxy stopped reading while the upstream was full');
  assert.ok(before < 32 << 20, `proxy read ${before} bytes of a paused stream`);
  server!.resume();
  c.end();
  await closed(c, 10_000);
  assert.equal(received, offered, 'everything arrives once the reader catches up');
});

test('a refused upstream connect closes the client and counts connect_refused', async () => {
  const gone = net.createServer();
  const port = await listen(gone);
  gone.close();
  const p = await proxy({ address: '127.0.0.1', port, family: 4 });
  const c = p.connect();
  const r = await closed(c);
  assert.equal(r.error, 'ECONNRESET', 'the client sees the refusal as a reset, not a clean empty reply');
  await p.fwd.idle();
  assert.equal(await p.sample('tpfleet_proxy_errors_total{reason="connect_refused"}'), 1);
  assert.equal(await p.sample('tpfleet_proxy_connections_closed_total{result="error"}'), 1);
  assert.equal(await p.sample('tpfleet_proxy_connections_active'), 0);
});

test('the idle timeout closes both sides; traffic in one direction keeps a connection alive', async () => {
  const servers: net.Socket[] = [];
  const dst = await upstream((s) => {
    servers.push(s);
    s.on('data', (d) => {
      if (d.toString() === 'tick') {
        const iv = setInterval(() => s.write('.'), 100); // server to client only
        setTimeout(() => clearInterval(iv), 900);
      } else s.write(d);
    });
  });
  const p = await proxy(dst, { idleTimeoutMs: 300 });

  const quiet = p.connect();
  quiet.write('x');
  await new Promise((r) => quiet.once('data', r));
  const t0 = Date.now();
  await Promise.all([closed(quiet), closed(servers[0]!)]);
  assert.ok(Date.now() - t0 >= 250, 'closed only after the idle time');

  const busy = p.connect();
  let closedAt = 0;
  busy.on('close', () => (closedAt = Date.now()));
  const t1 = Date.now();
  busy.write('tick');
  await sleep(800);
  assert.equal(closedAt, 0, 'one-way traffic every 100 ms is not idle');
  await closed(busy);
  assert.ok(closedAt - t1 >= 1100, 'closed once the ticks stopped for the idle time');
  await p.fwd.idle();
  assert.equal(await p.sample('tpfleet_proxy_errors_total{reason="idle_timeout"}'), 2);
  assert.equal(await p.sample('tpfleet_proxy_connections_closed_total{result="timeout"}'), 2);
});

test('connections beyond maxConnections are shed at once and counted; capacity frees up', async () => {
  const dst = await upstream((s) => s.pipe(s));
  const p = await proxy(dst, { maxConnections: 2 });
  const echo = async (c: net.Socket) => {
    c.write('ping');
    await new Promise((r) => c.once('data', r));
  };
  const [a, b] = [p.connect(), p.connect()];
  await echo(a);
  await echo(b);
  const extra = [p.connect(), p.connect()];
  for (const r of await Promise.all(extra.map((c) => closed(c)))) assert.equal(r.error, 'ECONNRESET');
  assert.equal(await p.sample('tpfleet_proxy_connections_shed_total'), 2);
  assert.equal(await p.sample('tpfleet_proxy_connections_closed_total{result="shed"}'), 2);
  a.end();
  await closed(a);
  const c = p.connect();
  await echo(c);
  assert.equal(await p.sample('tpfleet_proxy_connections_active'), 2);
  b.destroy();
  c.destroy();
});

test("a connection to the proxy's own port is refused, not forwarded to itself", async () => {
  const p0 = await proxy({ address: '127.0.0.1', port: 1, family: 4 });
  // A second forwarder whose listen port is p0's port and whose destination is itself.
  const p = await proxy({ address: '127.0.0.1', port: p0.port, family: 4 }, { listenPort: p0.port });
  const r = await closed(p.connect());
  assert.equal(r.error, 'ECONNRESET');
  assert.equal(await p.sample('tpfleet_proxy_connections_closed_total{result="loop"}'), 1);
  assert.equal(p0.accepted.length, 0, 'no connection was made to the listen port');
});

test('a reset on either side resets the other and is counted by side', async () => {
  const seen: Promise<{ error?: string }>[] = [];
  const dst = await upstream((s) => {
    seen.push(closed(s));
    s.once('data', (d) => (d.toString() === 'reset-me' ? s.resetAndDestroy() : s.write('ok')));
  });
  const p = await proxy(dst);
  const c1 = p.connect();
  c1.write('reset-me');
  assert.equal((await closed(c1)).error, 'ECONNRESET', 'upstream RST reaches the client');

  const c2 = p.connect();
  c2.write('hello');
  await new Promise((r) => c2.once('data', r));
  c2.resetAndDestroy();
  assert.equal((await seen[1]!).error, 'ECONNRESET', 'client RST reaches the upstream');
  await p.fwd.idle();
  assert.equal(await p.sample('tpfleet_proxy_errors_total{reason="upstream_reset"}'), 1);
  assert.equal(await p.sample('tpfleet_proxy_errors_total{reason="client_reset"}'), 1);
});

test('bytes of a still-open connection show up at scrape time, and are not counted twice', async () => {
  const dst = await upstream((s) => s.pipe(s));
  const p = await proxy(dst);
  const c = p.connect();
  c.write(Buffer.alloc(1000));
  let echoed = 0;
  await new Promise<void>((r) => c.on('data', (d) => (echoed += d.length) === 1000 && r()));
  assert.equal(await p.sample('tpfleet_proxy_bytes_total{direction="client_to_upstream"}'), 1000);
  assert.equal(await p.sample('tpfleet_proxy_bytes_total{direction="upstream_to_client"}'), 1000);
  assert.equal(await p.sample('tpfleet_proxy_connections_active'), 1);
  c.end();
  await closed(c);
  await p.fwd.idle();
  assert.equal(await p.sample('tpfleet_proxy_bytes_total{direction="client_to_upstream"}'), 1000);
  assert.equal(await p.sample('tpfleet_proxy_connections_active'), 0);
});

test("keepClientIp: the upstream connection comes from the client's address", async () => {
  const sources: string[] = [];
  const dst = await upstream((s) => {
    sources.push(s.remoteAddress!);
    s.end();
  });
  for (const keepClientIp of [true, false]) {
    const c = (await proxy(dst, { keepClientIp })).connect('127.0.0.7');
    c.on('end', () => c.end());
    await closed(c);
  }
  assert.deepEqual(sources, ['127.0.0.7', '127.0.0.1']);
});
