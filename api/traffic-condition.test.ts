import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  countsFromMetrics,
  NodeTraffic,
  parseTrafficMessage,
  significantChange,
  trafficMessage,
} from './traffic-condition.ts';

const METRICS = `# TYPE tpfleet_proxy_connections_active gauge
tpfleet_proxy_connections_active 42
# TYPE tpfleet_proxy_errors_total counter
tpfleet_proxy_errors_total{reason="connect_timeout"} 3
tpfleet_proxy_errors_total{reason="connect_refused"} 4
tpfleet_proxy_errors_total_other 99
`;

test('counts from the sidecar /metrics: open connections, errors summed over reasons', () => {
  assert.deepEqual(countsFromMetrics(METRICS), { connections: 42, errors: 7 });
  assert.equal(countsFromMetrics('# no sidecar metrics\n'), undefined);
});

test('the message round-trips and a forged one is ignored', () => {
  const t = { backend: 'iptables-nft', verified: true, connections: 12, errors: 0 } as const;
  assert.equal(trafficMessage(t), 'backend=iptables-nft verified=true connections=12 errors=0');
  assert.deepEqual(parseTrafficMessage(trafficMessage(t)), t);
  assert.ok(NodeTraffic.safeParse(parseTrafficMessage(trafficMessage(t))).success);
  for (const bad of ['backend=pf verified=true connections=1 errors=0', 'connections=lots', undefined])
    assert.equal(parseTrafficMessage(bad), undefined, String(bad));
});

test('only a significant change is published: steady state writes nothing', () => {
  const at = (connections: number, errors = 0) => ({
    backend: 'nftables' as const,
    verified: true,
    connections,
    errors,
  });
  assert.ok(significantChange(undefined, at(0)), 'the first report');
  assert.ok(!significantChange(at(100), at(100)), 'unchanged');
  assert.ok(!significantChange(at(100), at(109)), 'below the absolute threshold');
  assert.ok(!significantChange(at(1000), at(1050)), 'below 10 %');
  assert.ok(significantChange(at(1000), at(1100)), '10 % and at least 10');
  assert.ok(significantChange(at(5), at(0)), 'idle again');
  assert.ok(significantChange(at(5), at(5, 1)), 'a new error');
  assert.ok(significantChange(at(5), { ...at(5), backend: 'iptables-nft' }), 'another backend');
});
