// status.policy from a rolled-out spec and from a rejected one (pure), checked against the status
// schema the CRD publishes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { POLICY_CONDITION_TYPE } from '../api/policy-condition.ts';
import { TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import { fleetPods } from './pods.ts';
import { renderNodeConfig } from './render/nodeconfig.ts';
import { policyInForce, policyRejected } from './policy-status.ts';
import { TRAFFIC_CONDITION_TYPE } from '../api/traffic-condition.ts';
import { computeStatus } from './status.ts';

const spec = {
  policy: {
    defaultAction: 'Deny',
    upstreams: [{ name: 'corp', type: 'HTTPConnect', address: 'proxy:3128', credentialsSecret: { name: 'c' } }],
    rules: [
      { name: 'ok', action: 'Allow', match: { serverNames: ['*.example.com'] } },
      { name: 'via', action: 'Forward', upstream: 'corp' },
    ],
  },
};

test('a valid policy: rules, upstreams and default action; none without spec.policy', () => {
  const r = renderNodeConfig(spec);
  assert.ok(r.ok);
  assert.deepEqual(policyInForce(r.value.spec), { rules: 2, upstreams: 1, defaultAction: 'Deny' });
  const bare = renderNodeConfig({ policy: {} });
  assert.ok(bare.ok);
  assert.deepEqual(policyInForce(bare.value.spec), { rules: 0, upstreams: 0, defaultAction: 'Allow' });
  const none = renderNodeConfig({});
  assert.ok(none.ok);
  assert.equal(policyInForce(none.value.spec), undefined);
});

test('a rejected policy keeps the counts in force and names the first bad rule and upstream', () => {
  const bad = structuredClone(spec) as any;
  bad.policy.rules.push({ name: 'typo', action: 'Deny', match: { hosts: ['Bad Host'] } });
  bad.policy.rules.push({ name: 'later', action: 'Deny', match: { hosts: ['*x'] } });
  const r = renderNodeConfig(bad);
  assert.ok(!r.ok);
  const prev = { rules: 2, upstreams: 1, defaultAction: 'Deny' as const };
  const p = policyRejected({ ...prev, invalidRule: { name: 'old', message: 'old' } }, r.problems, bad);
  assert.deepEqual({ ...p, invalidRule: undefined }, { ...prev, invalidRule: undefined }, 'what the nodes still run');
  assert.equal(p?.invalidRule?.name, 'typo');
  assert.match(p!.invalidRule!.message, /^spec\.policy\.rules\[2\]\.match\.hosts\[0\]: must be a lower-case host name/);
  assert.equal(p?.invalidUpstream, undefined);
  const secret = ['spec.policy.upstreams[0].credentialsSecret: Secret fleet/c not found'];
  assert.deepEqual(policyRejected(undefined, secret, spec), {
    rules: 0,
    upstreams: 0,
    defaultAction: 'Allow',
    invalidUpstream: { name: 'corp', message: secret[0] },
  });
  // A problem elsewhere in the spec names no rule; without a policy before, none after.
  assert.equal(policyRejected(undefined, ['spec.replicas: too small'], spec), undefined);
  assert.deepEqual(policyRejected(prev, ['spec.replicas: too small'], spec), prev);
  // A spec too broken to hold names still yields a status.
  assert.equal(policyRejected(undefined, ['spec.policy.rules[7]: bad'], { policy: 'x' })?.invalidRule?.name, '[7]');
});

test('status.policy passes the status schema, and is removed with spec.policy', () => {
  const base = { generation: 2, now: '2026-01-01T00:00:00Z', selector: 's', configHash: 'h' };
  const withPolicy = computeStatus({ ...base, policy: { rules: 2, upstreams: 1, defaultAction: 'Deny' } });
  assert.ok(TransparentProxyStatus.safeParse(withPolicy).success);
  assert.equal(withPolicy.policy?.rules, 2);
  const invalid = computeStatus({
    ...base,
    prev: withPolicy,
    invalid: ['spec.policy.rules[0].name: x'],
    policy: policyRejected(withPolicy.policy, ['spec.policy.rules[0].name: x'], spec),
  });
  assert.ok(TransparentProxyStatus.safeParse(invalid).success);
  assert.deepEqual(invalid.policy?.invalidRule, { name: 'ok', message: 'spec.policy.rules[0].name: x' });
  assert.equal(invalid.configHash, 'h', 'the configuration in force is still the old one');
  const removed = computeStatus({ ...base, prev: invalid });
  assert.equal(removed.policy, undefined);
});

test("status.nodes[].policy: each active node's published totals; a forged message is ignored", () => {
  const pod = (node: string, message: string) => ({
    metadata: {
      name: `web-${node}`,
      namespace: 'fleet',
      labels: { 'app.kubernetes.io/name': 'tpfleet', 'app.kubernetes.io/instance': 'web' },
    },
    spec: { nodeName: node },
    status: {
      conditions: [
        { type: 'Ready', status: 'True' },
        { type: POLICY_CONDITION_TYPE, status: 'True', reason: 'Counted', message },
      ],
    },
  });
  const pods = fleetPods([pod('n1', 'allow=5 deny=2 forward=1 limited=0'), pod('n2', 'allow=lots')], 'fleet', 'web');
  const s = computeStatus({
    generation: 1,
    now: '2026-01-01T00:00:00Z',
    selector: 's',
    active: [{ name: 'n1' }, { name: 'n2' }] as never,
    ...pods,
  });
  assert.deepEqual(
    s.nodes?.map((n) => [n.name, n.policy]),
    [
      ['n1', { allow: 5, deny: 2, forward: 1, limited: 0 }],
      ['n2', undefined],
    ],
  );
  assert.ok(TransparentProxyStatus.safeParse(s).success);
});

test("status.nodes[].traffic: each active node's published backend, connections and errors; a forged message is ignored", () => {
  const pod = (node: string, message: string) => ({
    metadata: {
      name: `web-${node}`,
      namespace: 'fleet',
      labels: { 'app.kubernetes.io/name': 'tpfleet', 'app.kubernetes.io/instance': 'web' },
    },
    spec: { nodeName: node },
    status: { conditions: [{ type: TRAFFIC_CONDITION_TYPE, status: 'True', reason: 'Observed', message }] },
  });
  const pods = fleetPods(
    [pod('n1', 'backend=nftables verified=true connections=7 errors=2'), pod('n2', 'backend=nftables lots')],
    'fleet',
    'web',
  );
  const s = computeStatus({
    generation: 1,
    now: '2026-01-01T00:00:00Z',
    selector: 's',
    active: [{ name: 'n1' }, { name: 'n2' }] as never,
    ...pods,
  });
  assert.deepEqual(
    s.nodes?.map((n) => [n.name, n.traffic]),
    [
      ['n1', { backend: 'nftables', verified: true, connections: 7, errors: 2 }],
      ['n2', undefined],
    ],
  );
  assert.ok(TransparentProxyStatus.safeParse(s).success);
});
