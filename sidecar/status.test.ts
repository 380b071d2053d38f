import assert from 'node:assert/strict';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { get as httpGet } from 'node:http';
import { test } from 'node:test';
import { probeAddress } from '../api/probe-address.ts';
import { serveStatus, type Status } from './status.ts';

test("healthz, readyz and metrics answer from the supervisor's state", async () => {
  let healthy = true,
    ready = false,
    metricsFail = false;
  const status: Status = {
    healthy: () => healthy,
    ready: () => ready,
    metrics: async () => {
      if (metricsFail) throw new Error('worker 3 did not answer');
      return 'tpfleet_proxy_workers 2\n';
    },
    contentType: 'text/plain; version=0.0.4; charset=utf-8',
  };
  const server = await serveStatus(0, status, () => {});
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const get = async (path: string, method = 'GET') => {
    const r = await fetch(`${base}${path}`, { method });
    return { code: r.status, body: await r.text(), type: r.headers.get('content-type') };
  };
  try {
    assert.equal((await get('/healthz')).code, 200);
    assert.equal((await get('/readyz')).code, 503, 'not ready until every worker listens');
    ready = true;
    assert.equal((await get('/readyz?verbose')).code, 200);
    // No template given (a person, or a probe of an older operator): the plain answer.
    status.template = 'a1b2c3d4e5f60718';
    assert.equal((await get('/readyz')).code, 200);
    assert.equal((await get('/readyz?template=a1b2c3d4e5f60718')).code, 200, 'its own template: ready');
    const other = await get('/readyz?template=ffffffffffffffff');
    assert.equal(other.code, 503, "another pod's probe is never answered ready");
    assert.match(other.body, /asked for template ffffffffffffffff, this one runs a1b2c3d4e5f60718/);
    ready = false;
    assert.equal((await get('/readyz?template=a1b2c3d4e5f60718')).code, 503, 'its own template, but not ready');
    ready = true;
    healthy = false;
    assert.deepEqual(await get('/healthz'), {
      code: 503,
      body: 'no worker alive\n',
      type: 'text/plain; charset=utf-8',
    });
    const m = await get('/metrics');
    assert.equal(m.code, 200);
    assert.equal(m.body, 'tpfleet_proxy_workers 2\n');
    assert.equal(m.type, status.contentType);
    metricsFail = true;
    assert.deepEqual((await get('/metrics')).code, 500);
    assert.equal((await get('/metrics', 'POST')).code, 405);
    assert.equal((await get('/')).code, 404);
  } finally {
    server.close();
  }
});

test("two sidecars share the status port (SO_REUSEPORT); each pod's probes reach only its own sidecar; a plain listener is refused", async () => {
  const status = (template: string, ready: boolean): Status => ({
    healthy: () => true,
    ready: () => ready,
    metrics: async () => '',
    contentType: 'text/plain',
    template,
  });
  // The old pod's sidecar is ready; the new one is still starting.
  const [oldT, newT] = ['1111111111111111', '2222222222222222'];
  const first = await serveStatus(0, status(oldT, true), () => {});
  const port = (first.address() as AddressInfo).port;
  const second = await serveStatus(port, status(newT, false), () => {});
  const get = async (host: string, path: string) => {
    const r = await fetch(`http://${host}:${port}${path}`, { headers: { connection: 'close' } });
    return { code: r.status, body: await r.text() };
  };
  try {
    // On the shared address the kernel picks either sidecar.
    const shared = new Set<string>();
    for (let k = 0; k < 40 && shared.size < 2; k++) shared.add((await get('127.0.0.1', '/readyz')).body);
    assert.deepEqual([...shared].sort(), ['not ready\n', 'ready\n'], 'both sidecars answer on the shared port');
    // At each probe address, always that pod's own sidecar: the old pod stays Ready, the new one
    // is not made Ready by the old sidecar.
    for (let k = 0; k < 20; k++) {
      assert.equal((await get(probeAddress(oldT), `/readyz?template=${oldT}`)).code, 200);
      assert.equal((await get(probeAddress(newT), `/readyz?template=${newT}`)).body, 'not ready\n');
    }
    // The template check stays as a second guard (two tokens sharing an address).
    assert.match(
      (await get(probeAddress(oldT), `/readyz?template=${newT}`)).body,
      /asked for template 2222222222222222, this one runs 1111111111111111/,
    );
    first.close();
    await new Promise((r) => setTimeout(r, 50));
    for (let k = 0; k < 10; k++)
      assert.equal((await get('127.0.0.1', '/readyz')).body, 'not ready\n', 'only the second is left');
  } finally {
    first.close();
    second.close();
  }
  const { createServer } = await import('node:net');
  const plain = createServer();
  await new Promise<void>((r) => plain.listen(0, '0.0.0.0', () => r()));
  try {
    await assert.rejects(
      serveStatus((plain.address() as AddressInfo).port, status('3333333333333333', true), () => {}),
      { code: 'EADDRINUSE' },
    );
  } finally {
    plain.close();
  }
});

test('the status port caps open connections and closes clients that never finish their headers', async () => {
  const status: Status = {
    healthy: () => true,
    ready: () => true,
    metrics: async () => '',
    contentType: 'text/plain',
  };
  const limits = { maxConnections: 4, headersTimeoutMs: 500, requestTimeoutMs: 1000 };
  const server = await serveStatus(0, status, () => {}, limits);
  const port = (server.address() as AddressInfo).port;
  const open = () =>
    new Promise<Socket>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => resolve(s));
      s.on('error', reject);
    });
  const closed = (s: Socket) => new Promise<number>((r) => s.once('close', () => r(Date.now())));
  try {
    const idle = await Promise.all([open(), open(), open(), open()]);
    for (const s of idle) s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n'); // headers never finished
    const extra = await open();
    const t0 = Date.now();
    await closed(extra);
    assert.ok(Date.now() - t0 < 400, 'a connection beyond the cap is closed at once');
    const ends = await Promise.all(idle.map(closed));
    for (const end of ends) assert.ok(end - t0 < 3000, 'slow headers are cut off by the header timeout');
    // The budget is free again: a normal request answers.
    const code = await new Promise<number | undefined>((resolve, reject) =>
      httpGet({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).on('error', reject),
    );
    assert.equal(code, 200);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
