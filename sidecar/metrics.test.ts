import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { CLOSE_RESULTS, createMetrics, ERROR_REASONS } from './metrics.ts';

test('exposition lists every series with its closed label set, zero before any traffic', async () => {
  const m = createMetrics(new Registry());
  const text = await m.registry.metrics();
  for (const r of CLOSE_RESULTS)
    assert.match(text, new RegExp(`^tpfleet_proxy_connections_closed_total\\{result="${r}"\\} 0$`, 'm'));
  for (const r of ERROR_REASONS)
    assert.match(text, new RegExp(`^tpfleet_proxy_errors_total\\{reason="${r}"\\} 0$`, 'm'));
  for (const d of ['client_to_upstream', 'upstream_to_client']) {
    assert.match(text, new RegExp(`^tpfleet_proxy_bytes_total\\{direction="${d}"\\} 0$`, 'm'));
  }
  assert.match(text, /^# TYPE tpfleet_proxy_connections_active gauge$/m);
  assert.match(text, /^tpfleet_proxy_connections_accepted_total 0$/m);
  assert.match(text, /^tpfleet_proxy_connections_shed_total 0$/m);
  assert.match(text, /^tpfleet_proxy_upstream_connect_seconds_bucket\{le="0.0005"\} 0$/m);
  assert.match(text, /^tpfleet_proxy_upstream_connect_seconds_bucket\{le="5"\} 0$/m);
});

test('only the closed label names appear: no per-connection, IP or destination labels', async () => {
  const m = createMetrics(new Registry(), { defaults: true });
  m.closed.inc({ result: 'ok' });
  m.connectSeconds.observe(0.002);
  const text = await m.registry.metrics();
  const labels = new Set<string>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('tpfleet_proxy_')) continue;
    for (const [, name] of line.matchAll(/[{,]([a-z_]+)="/g)) labels.add(name!);
  }
  assert.deepEqual([...labels].sort(), ['direction', 'le', 'reason', 'result']);
  assert.match(text, /^tpfleet_proxy_connections_closed_total\{result="ok"\} 1$/m);
  // prom-client's default process metrics are there too (unprefixed, as dashboards expect them).
  assert.match(text, /^process_resident_memory_bytes \d+/m);
});

test('collect hooks run at scrape time, before the values are read', async () => {
  const m = createMetrics(new Registry());
  let open = 0;
  m.beforeCollect.push(() => {
    m.active.set(open);
    m.bytes.inc({ direction: 'client_to_upstream' }, 100);
  });
  open = 7;
  const text = await m.registry.metrics();
  assert.match(text, /^tpfleet_proxy_connections_active 7$/m);
  assert.match(text, /^tpfleet_proxy_bytes_total\{direction="client_to_upstream"\} 100$/m);
});
