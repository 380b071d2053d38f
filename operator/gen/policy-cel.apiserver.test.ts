// spec.policy as a real kube-apiserver enforces it (issue 13): the generated CRD, with rules up to
// MAX_RULES and 1024 entries per match list, installs (the server's static CEL cost check), a
// policy at those limits is accepted (the runtime cost budget), and every bad input the issue
// lists is refused at create / `kubectl apply` with the field and the message, storing nothing.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { MAX_RULES } from '../../api/policy.ts';
import { ApiError, KubeClient, type KubeObject } from '../../kube/client.ts';
import { createNamespace, installCrd, tpPath } from '../../e2e/testenv/fixtures.ts';
import { startTestEnv, type TestEnv } from '../../e2e/testenv/testenv.ts';
import { renderNodeConfig } from '../render/nodeconfig.ts';
import { POLICY_INVALID } from './invalid-specs.ts';

let env: TestEnv, c: KubeClient;
const NS = 'policy-cel';

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'policy-cel-test');
  // Rejected by the server if any CEL rule's estimated cost exceeds its limits.
  await installCrd(c);
  await createNamespace(c, NS);
});
after(async () => {
  await env?.stop();
});

let n = 0;
/** Creates like `kubectl create`: strict field validation. Resolves with the server's refusal, if any. */
async function create(policy: unknown): Promise<string | undefined> {
  const obj = {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: `p${n++}` },
    spec: { policy },
  };
  try {
    await c.request<KubeObject>('POST', tpPath(NS), { body: obj, query: { fieldValidation: 'Strict' } });
    return undefined;
  } catch (e) {
    if (e instanceof ApiError && (e.status === 422 || e.status === 400)) return e.message;
    throw e;
  }
}

test(`${POLICY_INVALID.length} bad policies are refused naming the field, with the rule's message`, async () => {
  const failures: string[] = [];
  for (const bad of POLICY_INVALID) {
    const m = await create(bad.spec);
    if (m === undefined) failures.push(`${bad.why}: accepted`);
    else if (!m.includes(`${bad.field}: `)) failures.push(`${bad.why}: does not name ${bad.field}: ${m}`);
    else if (!bad.message.test(m)) failures.push(`${bad.why}: message ${m} does not match ${bad.message}`);
  }
  assert.deepEqual(failures, []);
  assert.equal((await c.list(tpPath(NS))).items.length, 0, 'nothing was stored');
});

test('wildcards, punycode and every action with a defined upstream are accepted', async () => {
  const policy = {
    defaultAction: 'Deny',
    upstreams: [
      { name: 'corp', type: 'HTTPConnect', address: 'proxy.corp.example:3128', credentialsSecret: { name: 'corp' } },
      { name: 'socks', type: 'SOCKS5', address: '[fd00::1]:1080', connectTimeout: '2s' },
    ],
    rules: [
      { name: 'wild', action: 'Allow', match: { serverNames: ['*.example.com', 'xn--bcher-kva.de'] } },
      { name: 'via-corp', action: 'Forward', upstream: 'corp', match: { hosts: ['api.example.org'] } },
      { name: 'via-socks', action: 'Forward', upstream: 'socks', proxyProtocol: 'v2' },
      { name: 'block', action: 'Deny', match: { destinations: ['10.0.0.0/8', 'fd00::/8'], ports: [{ port: 25 }] } },
    ],
  };
  assert.equal(await create(policy), undefined);
  assert.ok(renderNodeConfig({ policy }).ok, 'and the operator accepts it too');
});

/** n rules, mixed CIDR and SNI wildcard rules (the shape of the 1,000-rule benchmark). */
function manyRules(count: number) {
  return Array.from({ length: count }, (_, i) =>
    i % 2
      ? { name: `cidr-${i}`, action: 'Deny', match: { destinations: [`10.${i >> 8}.${i & 255}.0/24`] } }
      : { name: `sni-${i}`, action: 'Allow', match: { serverNames: [`*.s${i}.example.com`, `s${i}.example.com`] } },
  );
}

test(`${MAX_RULES} rules fit the runtime CEL budget; ${MAX_RULES + 1} are refused`, async () => {
  const upstreams = [{ name: 'corp', type: 'HTTPConnect', address: 'proxy:3128' }];
  const rules = [...manyRules(MAX_RULES - 1), { name: 'fwd', action: 'Forward', upstream: 'corp' }];
  assert.equal(await create({ upstreams, rules }), undefined);
  const m = await create({ upstreams, rules: [...rules, { name: 'one-more', action: 'Allow' }] });
  assert.match(m ?? 'accepted', /spec\.policy\.rules: Too many: 2049: must have at most 2048 items/);
});

test('one rule with 1024 entries in each match list is accepted', async () => {
  const list = (f: (i: number) => string) => Array.from({ length: 1024 }, (_, i) => f(i));
  const match = {
    destinations: list((i) => `10.${i >> 8}.${i & 255}.0/24`),
    sources: list((i) => `fd00:${i.toString(16)}::/32`),
    serverNames: list((i) => `*.n${i}.example.com`),
    hosts: list((i) => `h${i}.example.com`),
  };
  assert.equal(await create({ rules: [{ name: 'big', action: 'Deny', match }] }), undefined);
});

test("what only the parser sees (host bits, an IPv6 text that does not parse) passes admission and is the operator's InvalidSpec", async () => {
  // Policy CIDRs are checked by a pattern, not CEL: CEL over 2048 x 1024 entries exceeds the
  // server's cost budget (api/policy.ts POLICY_CIDR).
  for (const [d, why] of [
    ['10.1.2.3/8', /"10\.1\.2\.3\/8" has host bits set \(did you mean 10\.0\.0\.0\/8\?\)/],
    ['fd00::1::2/64', /is not an IPv4 or IPv6 CIDR/],
  ] as const) {
    const policy = { rules: [{ name: 'r', action: 'Deny', match: { destinations: [d] } }] };
    assert.equal(await create(policy), undefined, `${d}: admitted`);
    const r = renderNodeConfig({ policy });
    assert.ok(
      !r.ok && r.problems.some((p) => p.startsWith('spec.policy.rules[0].match.destinations[0]: ') && why.test(p)),
      d,
    );
  }
});

test('kubectl apply of a bad policy is refused naming the field; nothing is created', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-policy-'));
  try {
    const file = join(dir, 'bad.yaml');
    writeFileSync(
      file,
      stringify({
        apiVersion: 'tpfleet.io/v1alpha1',
        kind: 'TransparentProxy',
        metadata: { name: 'bad-wildcard', namespace: NS },
        spec: { policy: { rules: [{ name: 'r', action: 'Deny', match: { serverNames: ['a.*.example.com'] } }] } },
      }),
    );
    await assert.rejects(
      env.kubectl(['apply', '-f', file]),
      /spec\.policy\.rules\[0\]\.match\.serverNames\[0\]: Invalid value: "a\.\*\.example\.com"/,
    );
    assert.equal(await c.get(tpPath(NS, 'bad-wildcard')), undefined, 'nothing was created');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
