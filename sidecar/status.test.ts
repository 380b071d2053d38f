import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { serveStatus, type Status } from './status.ts';

test('healthz, readyz and metrics answer from the supervisor\'s state', async () => {
  let healthy = true, ready = false, metricsFail = false;
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
    assert.equal(other.code, 503, 'another pod\'s probe is never answered ready');
    assert.match(other.body, /asked for template ffffffffffffffff, this one runs a1b2c3d4e5f60718/);
    ready = false;
    assert.equal((await get('/readyz?template=a1b2c3d4e5f60718')).code, 503, 'its own template, but not ready');
    ready = true;
    healthy = false;
    assert.deepEqual(await get('/healthz'), { code: 503, body: 'no worker alive\n', type: 'text/plain; charset=utf-8' });
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

test('a second sidecar binds the status port while the first serves (SO_REUSEPORT); a plain listener is refused', async () => {
  const status = (template: string): Status => ({ healthy: () => true, ready: () => true, metrics: async () => '', contentType: 'text/plain', template });
  const first = await serveStatus(0, status('1111111111111111'), () => {});
  const port = (first.address() as AddressInfo).port;
  const second = await serveStatus(port, status('2222222222222222'), () => {});
  try {
    // Each probe asks for the second's template: whichever process the kernel picks, only the
    // second says ready, so the answers are 200 or 503 and never a ready from the wrong one.
    const seen = new Set<number>();
    for (let k = 0; k < 40 && seen.size < 2; k++) {
      const r = await fetch(`http://127.0.0.1:${port}/readyz?template=2222222222222222`, { headers: { connection: 'close' } });
      const body = await r.text();
      seen.add(r.status);
      if (r.status === 503) assert.match(body, /this one runs 1111111111111111/);
    }
    assert.deepEqual([...seen].sort(), [200, 503], 'both sidecars answered on the shared port');
    first.close();
    await new Promise((r) => setTimeout(r, 50));
    for (let k = 0; k < 10; k++) assert.equal((await fetch(`http://127.0.0.1:${port}/readyz?template=2222222222222222`, { headers: { connection: 'close' } })).status, 200);
  } finally {
    first.close();
    second.close();
  }
  const { createServer } = await import('node:net');
  const plain = createServer();
  await new Promise<void>((r) => plain.listen(0, '0.0.0.0', () => r()));
  try {
    await assert.rejects(serveStatus((plain.address() as AddressInfo).port, status('3333333333333333'), () => {}), { code: 'EADDRINUSE' });
  } finally {
    plain.close();
  }
});
