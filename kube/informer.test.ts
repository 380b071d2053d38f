// The informer's failure handling, driven by a scripted HTTP server: a real kube-apiserver cannot
// be made to hold a watch open silently (the half-open connection case) on demand.
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import { test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { KubeClient } from './client.ts';
import { Informer } from './informer.ts';

const cm = (name: string, rv: string) => ({
  apiVersion: 'v1',
  kind: 'ConfigMap',
  metadata: { name, namespace: 'ns', resourceVersion: rv },
});

test('a silent watch is restarted by the watchdog, a 410 relists, and events after that are applied', async () => {
  let lists = 0,
    watches = 0;
  const open: ServerResponse[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    res.writeHead(200, { 'Content-Type': 'application/json' });
    if (url.searchParams.get('watch') !== '1') {
      lists++;
      res.end(
        JSON.stringify({
          kind: 'ConfigMapList',
          metadata: { resourceVersion: String(10 * lists) },
          items: [cm('a', '1')],
        }),
      );
      return;
    }
    watches++;
    open.push(res);
    if (watches === 1) return; // stalled: headers sent, then silence forever
    if (watches === 2) {
      res.end(
        `${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, message: 'too old resource version' } })}\n`,
      );
      return;
    }
    res.write(`${JSON.stringify({ type: 'ADDED', object: cm('b', '31') })}\n`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'f', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'c', cluster: 'f', user: 'u' }],
    currentContext: 'c',
  });
  const restarts: string[] = [];
  const seen: string[] = [];
  const inf = new Informer({
    client: new KubeClient(kc, 'test'),
    path: '/api/v1/configmaps',
    resource: 'configmaps',
    log: pino({ level: 'silent' }),
    onChange: (o) => seen.push(o.metadata.name),
    onRestart: (r) => restarts.push(r),
    watchTimeoutSec: 1,
    stallGraceMs: 300,
  });
  try {
    const start = Date.now();
    inf.start();
    const deadline = Date.now() + 10_000;
    while (!inf.get('ns', 'b') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(inf.get('ns', 'b'), 'event after the restarts applied');
    assert.ok(Date.now() - start >= 1300, 'the stalled watch was given timeout + grace before the restart');
    assert.deepEqual(restarts, ['configmaps', 'configmaps'], 'one restart for the stall, one for 410 Gone');
    assert.equal(lists, 3, 'each restart relisted');
    assert.deepEqual(seen, ['a', 'b'], 'relisting an unchanged object fires no handler');
  } finally {
    await inf.stop();
    for (const r of open) r.destroy();
    server.close();
  }
});

test('transform: every listed page and watch event is shaped before it is stored or handed to onChange', async () => {
  const big = (name: string, rv: string) => ({ ...cm(name, rv), data: { blob: 'x'.repeat(10_000) } });
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    res.writeHead(200, { 'Content-Type': 'application/json' });
    if (url.searchParams.get('watch') === '1') {
      res.write(`${JSON.stringify({ type: 'ADDED', object: big('c', '12') })}\n`);
      return;
    }
    const second = url.searchParams.get('continue') === 'p2';
    res.end(
      JSON.stringify({
        metadata: { resourceVersion: '10', ...(second ? {} : { continue: 'p2' }) },
        items: [second ? big('b', '2') : big('a', '1')],
      }),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const handed: unknown[] = [];
  const inf = new Informer({
    client: new KubeClient({ server: `http://127.0.0.1:${port}`, applyToHTTPSOptions: async () => {} }, 'test'),
    path: '/api/v1/configmaps',
    resource: 'configmaps',
    log: pino({ level: 'silent' }),
    pageSize: 1,
    transform: (o) => ({ metadata: o.metadata }),
    onChange: (o) => handed.push(o),
  });
  try {
    inf.start();
    const deadline = Date.now() + 10_000;
    while (!inf.get('ns', 'c') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(
      inf.list().map((o) => [o.metadata.name, Object.keys(o)]),
      [
        ['a', ['metadata']],
        ['b', ['metadata']],
        ['c', ['metadata']],
      ],
      'two list pages and one watch event, each stored without its data',
    );
    assert.deepEqual(handed, inf.list(), 'the handler got the shaped objects');
  } finally {
    await inf.stop();
    server.closeAllConnections();
    server.close();
  }
});
