import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNodeConfig } from '../api/load.ts';
import { explain, parseTarget, type FleetFacts, type PodFacts } from './why.ts';

const pod: PodFacts = { namespace: 'apps', name: 'client', nodeName: 'n1', podIPs: ['10.244.1.3'] };
const fleet = (interception: Record<string, unknown>): FleetFacts => {
  const c = parseNodeConfig({ apiVersion: 'tpfleet.io/v1alpha1', kind: 'NodeConfig', interception });
  return { name: 'tpfleet-fleet/web', interception: c.interception, listenPort: c.proxy.listenPort };
};
const last = (v: { lines: string[] }) => v.lines.at(-1)!;
const web = fleet({
  ports: [{ port: 80 }, { port: 8000, endPort: 8100 }],
  destinations: { include: ['10.0.0.0/8'], exclude: ['10.96.0.0/12'] },
  sources: { exclude: ['10.244.9.0/24'] },
});

test('a pod on an active node: which connections are intercepted, by which fleet and rule', () => {
  const v = explain(pod, web);
  assert.equal(v.intercepted, undefined, 'depends on the connection');
  assert.match(v.lines.join('\n'), /fleet tpfleet-fleet\/web is active on n1/);
  assert.match(
    last(v),
    /^INTERCEPTED: its TCP connections in \[10\.0\.0\.0\/8\] except \[10\.96\.0\.0\/12\], not to the node's own addresses, on 80, 8000-8100, go to the proxy \(rule "tproxy" to :\d+\)/,
  );
});

test('--to decides one connection, naming the rule that lets it pass', () => {
  assert.equal(explain(pod, web, { ip: '10.1.2.3', port: 8050 }).intercepted, true);
  const svc = explain(pod, web, { ip: '10.96.0.10', port: 80 });
  assert.equal(svc.intercepted, false);
  assert.match(
    last(svc),
    /rule "destinations": destination 10\.96\.0\.10 is in destinations\.exclude 10\.96\.0\.0\/12/,
  );
  assert.match(last(explain(pod, web, { ip: '10.1.2.3', port: 443 })), /rule "ports": 443 is not in \[80, 8000-8100\]/);
  assert.match(
    last(explain(pod, web, { ip: '192.168.1.1', port: 80 })),
    /not in destinations\.include \[10\.0\.0\.0\/8\]/,
  );
  const excluded = { ...pod, podIPs: ['10.244.9.7'] };
  assert.match(last(explain(excluded, web)), /rule "sources": source 10\.244\.9\.7 is in sources\.exclude/);
});

test('not intercepted: no fleet on the node, host network, unscheduled, another family', () => {
  assert.match(last(explain(pod, undefined)), /no TransparentProxy is active on node n1/);
  assert.match(last(explain({ ...pod, hostNetwork: true }, web)), /uses the host network/);
  assert.match(last(explain({ ...pod, nodeName: undefined }, web)), /not scheduled/);
  const v4only = fleet({ ipFamilies: ['IPv4'] });
  assert.match(last(explain({ ...pod, podIPs: ['fd00::5'] }, v4only)), /not of ipFamilies \[IPv4\]/);
  assert.equal(
    explain({ ...pod, podIPs: ['10.244.1.3', 'fd00::5'] }, v4only, { ip: 'fd00::1', port: 80 }).intercepted,
    false,
  );
});

test('--to parsing', () => {
  assert.deepEqual(parseTarget('10.0.0.1:80'), { ip: '10.0.0.1', port: 80 });
  assert.deepEqual(parseTarget('[fd00::1]:443'), { ip: 'fd00::1', port: 443 });
  for (const bad of ['10.0.0.1', '10.0.0.1:0', 'host:80', '10.0.0.1:70000', 'fd00::1:80'])
    assert.equal(typeof parseTarget(bad), 'string', bad);
});
