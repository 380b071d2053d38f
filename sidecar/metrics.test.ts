import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLOSE_RESULTS, ERROR_REASONS, processRegistry, renderEngineMetrics, UDP_DROP_REASONS } from './metrics.ts';

test('exposition lists every series with its closed label set, zero before any traffic', () => {
  const text = renderEngineMetrics({ active: 0 }, 2);
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
  assert.match(text, /^tpfleet_proxy_workers 2$/m);
});

test('engine counters map to their series; the histogram is cumulative with +Inf, sum in seconds', () => {
  const text = renderEngineMetrics(
    {
      active: 3,
      accepted: 10,
      closed_ok: 6,
      closed_shed: 1,
      err_client_reset: 2,
      bytes_up: 100,
      bytes_down: 200,
      relay_copy_bytes: 250,
      relay_splice_bytes: 50,
      connect_b0: 4,
      connect_b2: 1,
      connect_binf: 1,
      connect_count: 6,
      connect_sum_us: 7_500_000,
    },
    1,
  );
  assert.match(text, /^tpfleet_proxy_connections_active 3$/m);
  assert.match(text, /^tpfleet_proxy_connections_closed_total\{result="ok"\} 6$/m);
  assert.match(text, /^tpfleet_proxy_connections_closed_total\{result="shed"\} 1$/m);
  assert.match(text, /^tpfleet_proxy_errors_total\{reason="client_reset"\} 2$/m);
  assert.match(text, /^tpfleet_proxy_bytes_total\{direction="upstream_to_client"\} 200$/m);
  assert.match(text, /^tpfleet_proxy_relay_bytes_total\{path="splice"\} 50$/m);
  assert.match(text, /^tpfleet_proxy_upstream_connect_seconds_bucket\{le="0.0005"\} 4$/m);
  assert.match(text, /^tpfleet_proxy_upstream_connect_seconds_bucket\{le="0.001"\} 4$/m);
  assert.match(text, /^tpfleet_proxy_upstream_connect_seconds_bucket\{le="0.0025"\} 5$/m);
  assert.match(text, /^tpfleet_proxy_upstream_connect_seconds_bucket\{le="5"\} 5$/m);
  assert.match(text, /^tpfleet_proxy_upstream_connect_seconds_bucket\{le="\+Inf"\} 6$/m);
  assert.match(text, /^tpfleet_proxy_upstream_connect_seconds_sum 7.5$/m);
  assert.match(text, /^tpfleet_proxy_upstream_connect_seconds_count 6$/m);
});

test('only the closed label names appear: no per-connection, IP or destination labels', async () => {
  const text = renderEngineMetrics({ active: 1, closed_ok: 1 }, 1) + (await processRegistry().metrics());
  const labels = new Set<string>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('tpfleet_proxy_')) continue;
    for (const [, name] of line.matchAll(/[{,]([a-z_]+)="/g)) labels.add(name!);
  }
  assert.deepEqual([...labels].sort(), ['direction', 'le', 'path', 'reason', 'result']);
  // prom-client's default process metrics are there too (unprefixed, as dashboards expect them).
  assert.match(text, /^process_resident_memory_bytes \d+/m);
});

test('UDP series: flows, datagrams and bytes per direction, drops by a closed set of reasons', () => {
  const text = renderEngineMetrics(
    { active: 0, udpActive: 7, udp_flows_created: 9, udp_dgrams_up: 5, udp_bytes_down: 640, udp_drop_flow_cap: 2 },
    1,
  );
  assert.match(text, /^tpfleet_proxy_udp_flows_active 7$/m);
  assert.match(text, /^tpfleet_proxy_udp_flows_created_total 9$/m);
  assert.match(text, /^tpfleet_proxy_udp_datagrams_total\{direction="client_to_upstream"\} 5$/m);
  assert.match(text, /^tpfleet_proxy_udp_bytes_total\{direction="upstream_to_client"\} 640$/m);
  for (const r of UDP_DROP_REASONS)
    assert.match(text, new RegExp(`^tpfleet_proxy_udp_drops_total\\{reason="${r}"\\} \\d+$`, 'm'));
  assert.match(text, /^tpfleet_proxy_udp_drops_total\{reason="flow_cap"\} 2$/m);
});
