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
