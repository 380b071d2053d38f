import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { formatIssues } from './load.ts';
import { SYSCTLS, Tuning, TuningSpec } from './tuning.ts';
import { canonicalSysctl } from './tuning-sysctls.ts';

const problems = (doc: unknown): string[] => {
  const r = Tuning.safeParse(doc);
  return r.success ? [] : formatIssues(r.error);
};

test('omitted tuning resolves to "change nothing"', () => {
  const t = Tuning.parse(undefined);
  assert.equal(t.sysctls.profile, 'none');
  assert.deepEqual(t.sysctls.overrides, {});
  assert.equal(t.affinity.mode, 'off');
  assert.equal(t.affinity.rpsSockFlowEntries, 32768);
  assert.equal(t.affinity.irqbalance, 'coexist');
});

test('overrides are canonicalised: numbers, strings, multi-value keys', () => {
  const t = Tuning.parse({
    sysctls: {
      profile: 'throughput',
      overrides: {
        'net.core.somaxconn': 8192,
        'net.ipv4.tcp_fin_timeout': '15',
        'net.ipv4.ip_local_port_range': ' 1024\t65000 ',
        'net.ipv4.tcp_congestion_control': 'bbr',
      },
    },
  });
  assert.deepEqual(t.sysctls.overrides, {
    'net.core.somaxconn': '8192',
    'net.ipv4.tcp_fin_timeout': '15',
    'net.ipv4.ip_local_port_range': '1024 65000',
    'net.ipv4.tcp_congestion_control': 'bbr',
  });
});

test('unknown, disallowed and out-of-range sysctls are rejected with the key named', () => {
  const p = problems({
    sysctls: {
      overrides: {
        'kernel.panic': 1,
        'net.core.somaxconn': 10,
        'net.ipv4.ip_local_port_range': '60000 1024',
        'net.ipv4.tcp_rmem': '4096 87380',
        'net.core.rps_sock_flow_entries': 4096,
        'net.ipv4.tcp_congestion_control': 'foo',
        'fs.nr_open': '-1',
      },
    },
  });
  assert.deepEqual(p, [
    'sysctls.overrides.kernel.panic: kernel.panic is not an allowed sysctl (see docs/tuning.md for the allowlist)',
    'sysctls.overrides.net.core.somaxconn: net.core.somaxconn: 10 is out of range 128..1048576',
    'sysctls.overrides.net.ipv4.ip_local_port_range: net.ipv4.ip_local_port_range: values must not decrease (got "60000 1024")',
    'sysctls.overrides.net.ipv4.tcp_rmem: net.ipv4.tcp_rmem needs 3 integers separated by spaces (got "4096 87380")',
    'sysctls.overrides.net.core.rps_sock_flow_entries: net.core.rps_sock_flow_entries is not settable here: set it through tuning.affinity.rpsSockFlowEntries',
    'sysctls.overrides.net.ipv4.tcp_congestion_control: net.ipv4.tcp_congestion_control must be one of cubic, bbr, reno, htcp, dctcp, westwood, illinois, vegas (got "foo")',
    'sysctls.overrides.fs.nr_open: fs.nr_open: "-1" is not a non-negative integer',
  ]);
  assert.match(problems({ sysctls: { profile: 'fast' } })[0]!, /^sysctls\.profile: /);
  assert.match(
    problems({ sysctls: { overrides: { 'net.core.somaxconn': 1.5 } } })[0]!,
    /^sysctls\.overrides\.net\.core\.somaxconn: /,
  );
  assert.deepEqual(canonicalSysctl('__proto__', 1), {
    error: '__proto__ is not an allowed sysctl (see docs/tuning.md for the allowlist)',
  });
});

test('affinity: CPU lists are checked, explicit needs irqCpus and workerCpus', () => {
  assert.deepEqual(problems({ affinity: { mode: 'explicit', irqCpus: '0-3' } }), [
    'affinity.workerCpus: required when mode is explicit',
  ]);
  assert.deepEqual(
    problems({ affinity: { mode: 'auto', irqCpus: '3-1', workerCpus: '0-3,x', reservedCpus: '9000' } }),
    [
      'affinity.irqCpus: range 3-1 runs backwards',
      'affinity.workerCpus: must be a CPU list like 0-3,8,10-11',
      'affinity.reservedCpus: CPU 9000 is above 8191',
    ],
  );
  assert.deepEqual(problems({ affinity: { mode: 'explicit', irqCpus: '0', workerCpus: '1', irqCpuCount: 2 } }), [
    'affinity.irqCpuCount: only used when mode is auto',
  ]);
  assert.deepEqual(
    problems({ affinity: { mode: 'auto', interfaces: ['this-name-is-too-long'] } })[0],
    'affinity.interfaces[0]: must be an interface name (max 15 characters)',
  );
  assert.deepEqual(problems({ affinity: { mode: 'auto', bogus: 1 } }), ['affinity: Unrecognized key: "bogus"']);
  const t = Tuning.parse({
    affinity: { mode: 'explicit', irqCpus: '0-1', workerCpus: '2-7', interfaces: ['eth0'], rps: 'off' },
  });
  assert.deepEqual(t.affinity, {
    mode: 'explicit',
    irqCpus: '0-1',
    workerCpus: '2-7',
    interfaces: ['eth0'],
    rps: 'off',
    rpsSockFlowEntries: 32768,
    xps: 'auto',
    irqbalance: 'coexist',
  });
});

test('the input side is representable as JSON schema, with the allowlist as CEL and int-or-string values', () => {
  const js = z.toJSONSchema(TuningSpec, { io: 'input', unrepresentable: 'throw' }) as any;
  const ov = js.properties.sysctls.properties.overrides;
  assert.equal(ov.type, 'object');
  assert.equal(ov.additionalProperties['x-kubernetes-int-or-string'], true);
  assert.equal(ov.maxProperties, 64);
  const rule: string = ov['x-kubernetes-validations'][0].rule;
  for (const k of Object.keys(SYSCTLS)) assert.ok(rule.includes(`'${k}'`), `${k} in the CEL allowlist`);
  assert.ok(!rule.includes('kernel.'), 'no kernel.* key is allowed');
  assert.deepEqual(js.properties.affinity.properties.mode.enum, ['off', 'auto', 'explicit']);
  assert.ok(js.properties.affinity.properties.irqCpus.pattern, 'CPU lists carry a pattern');
  for (const [name, node] of Object.entries<any>(js.properties.affinity.properties))
    assert.ok(node.description, `affinity.${name} is documented`);
});

test('host-wide sysctls are floored where a lower value would deny service to the whole node (issue 12)', () => {
  for (const [key, value, msg] of [
    ['net.ipv4.tcp_mem', '1 1 1', /tcp_mem: 1 is out of range 16384\.\./],
    ['fs.file-max', 65536, /fs\.file-max: 65536 is out of range 1048576\.\./],
    ['net.ipv4.ip_local_port_range', '1024 1100', /must span at least 4096 values/],
  ] as const) {
    const r = canonicalSysctl(key, value);
    assert.ok('error' in r, `${key}=${value} refused`);
    assert.match(r.error, msg);
  }
  assert.deepEqual(canonicalSysctl('net.ipv4.tcp_mem', '16384 32768 65536'), { text: '16384 32768 65536' });
  assert.deepEqual(canonicalSysctl('fs.file-max', 1048576), { text: '1048576' });
});
