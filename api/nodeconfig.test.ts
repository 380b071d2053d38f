import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseNodeConfigText } from './load.ts';
import { parseCidr, parseDuration } from './net.ts';

const head = 'apiVersion: tpfleet.io/v1alpha1\nkind: NodeConfig\n';

test('an empty NodeConfig gets documented defaults', () => {
  const c = parseNodeConfigText(head);
  assert.equal(c.interception.failurePolicy, 'FailClosed');
  assert.deepEqual(c.interception.ipFamilies, ['IPv4', 'IPv6']);
  assert.equal(c.interception.mark, 0x2000);
  assert.equal(c.proxy.listenPort, 15101);
  assert.equal(c.proxy.timeouts.connect, 5000);
  assert.equal(c.proxy.timeouts.drain, 30000);
});

test('fields are parsed into typed values', () => {
  const c = parseNodeConfigText(`${head}interception:
  ports: [{port: 80}, {port: 8000, endPort: 8100}]
  destinations: {include: [10.0.0.0/8, "fd00::/64"], exclude: [10.9.0.5]}
  mark: "0x10"
  mask: "0xf0"
proxy: {timeouts: {idle: 1m30s}}
`);
  assert.deepEqual(c.interception.ports, [{ port: 80 }, { port: 8000, endPort: 8100 }]);
  assert.deepEqual(c.interception.destinations.exclude, [{ family: 'IPv4', address: '10.9.0.5', prefix: 32 }]);
  assert.equal(c.interception.destinations.include[1]?.address, 'fd00::');
  assert.equal(c.interception.mark, 16);
  assert.equal(c.proxy.timeouts.idle, 90_000);
  assert.equal(c.proxy.timeouts.connect, 5000);
});

const bad: Array<[string, string, RegExp]> = [
  [
    'reversed port range',
    'interception: {ports: [{port: 90, endPort: 80}]}',
    /interception\.ports\[0\]\.endPort: must be >= port/,
  ],
  ['port 0', 'interception: {ports: [{port: 0}]}', /interception\.ports\[0\]\.port/],
  [
    'host bits',
    'interception: {destinations: {include: [10.0.0.1/8]}}',
    /interception\.destinations\.include\[0\]: .*did you mean 10\.0\.0\.0\/8/,
  ],
  [
    'same include/exclude',
    'interception: {sources: {include: [10.0.0.0/8], exclude: [10.0.0.0/8]}}',
    /interception\.sources\.exclude\[0\]: .*both included and excluded/,
  ],
  [
    'family not enabled',
    'interception: {ipFamilies: [IPv4], destinations: {include: ["fd00::/8"]}}',
    /interception\.destinations\.include\[0\]: .*IPv6/,
  ],
  ['mark outside mask', 'interception: {mark: 0x3, mask: 0x1}', /interception\.mark: must lie within mask/],
  ['unknown field', 'interception: {prots: []}', /interception: .*prots/],
  ['bad duration', 'proxy: {timeouts: {connect: 5 seconds}}', /proxy\.timeouts\.connect: .*not a duration/],
  ['ports collide', 'proxy: {listenPort: 9000, metricsPort: 9000}', /proxy\.metricsPort: must differ/],
  ['bad interface', 'interception: {interfaces: ["eth0; rm -rf /"]}', /interception\.interfaces\[0\]/],
  ['reserved table', 'interception: {routingTable: 254}', /interception\.routingTable: .*reserved/],
];
for (const [name, body, re] of bad) {
  test(`rejects ${name}, naming the field`, () => {
    assert.throws(
      () => parseNodeConfigText(head + body, 'x.yaml'),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.match(e.message, re);
        return true;
      },
    );
  });
}

test('rejects a document of another kind', () => {
  assert.throws(() => parseNodeConfigText('apiVersion: v1\nkind: Pod\n'), /apiVersion/);
});

test('CIDR and duration parsing edge cases', () => {
  assert.deepEqual(parseCidr('::ffff:10.0.0.0/104'), { family: 'IPv6', address: '::ffff:a00:0', prefix: 104 });
  assert.deepEqual(parseCidr('2001:db8:0:0:1:0:0:1'), { family: 'IPv6', address: '2001:db8::1:0:0:1', prefix: 128 });
  assert.deepEqual(parseCidr('0.0.0.0/0'), { family: 'IPv4', address: '0.0.0.0', prefix: 0 });
  assert.match(String(parseCidr('10.0.0.0/33')), /prefix length over 32/);
  assert.match(String(parseCidr('10.0.0/8')), /not an IPv4 or IPv6/);
  assert.equal(parseDuration('1h2m3s4ms'), 3_723_004);
  assert.match(String(parseDuration('10')), /not a duration/);
});

test('protocols: default [TCP]; the deprecated protocol folds into it; UDP options have bounded defaults', () => {
  assert.deepEqual(parseNodeConfigText(head).interception.protocols, ['TCP']);
  assert.deepEqual(parseNodeConfigText(`${head}interception: {protocol: TCP}`).interception.protocols, ['TCP']);
  const both = parseNodeConfigText(`${head}interception: {protocols: [UDP, TCP], udpPorts: [{port: 53}]}`);
  assert.deepEqual(both.interception.protocols, ['TCP', 'UDP']);
  assert.deepEqual(both.interception.udpPorts, [{ port: 53 }]);
  assert.deepEqual(both.proxy.udp, { idleTimeout: 60_000, maxFlows: 65_536 });
  const bad: [string, RegExp][] = [
    ['interception: {protocol: TCP, protocols: [UDP]}', /interception\.protocols: must list protocol/],
    ['proxy: {udp: {maxFlows: 0}}', /proxy\.udp\.maxFlows/],
    ['proxy: {udp: {idleTimeout: 2h}}', /proxy\.udp\.idleTimeout: must be between 1s and 1h/],
    ['interception: {udpPorts: [{port: 15000, endPort: 15101}]}', /interception\.udpPorts: must not cover/],
    ['interception: {udpPorts: [{port: 9090}]}\nproxy: {metricsPort: 9090}', /interception\.udpPorts: must not cover/],
  ];
  for (const [body, want] of bad) assert.throws(() => parseNodeConfigText(head + body), want, body);
});
