// Upstream credentials against a real kube-apiserver (issue 13): a spec naming a Secret that is
// missing or lacks a key is InvalidSpec naming spec.policy.upstreams[N].credentialsSecret, with a
// Warning Event, and rolls nothing out (the fleet keeps its last valid configuration); once the
// Secret is right the spec rolls out with the Secret mounted; rotating the Secret changes no
// object of the fleet (the kubelet refreshes the volume in place). No kubelet runs here: what the
// pods would see is shown on local-real (e2e/cluster).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parseNodeConfigText } from '../api/load.ts';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import { POD_HASH_ANNOTATION } from './render/names.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { startOperator, type RunningOperator } from '../e2e/testenv/operator.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

let env: TestEnv, c: KubeClient, op: RunningOperator;
const NS = 'egress';
type Obj = KubeObject & { spec?: any; status?: any; data?: Record<string, string> };

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-user');
  await installCrd(c);
  await createNamespace(c, NS);
  await createNamespace(c, 'other');
  await createNode(c, 'n1');
  op = await startOperator(env.kubeconfigPath);
});
after(async () => {
  await op?.stop();
  await env?.stop();
});

const get = (path: string) => c.get<Obj>(path);
const ds = () => get(`/apis/apps/v1/namespaces/${NS}/daemonsets/gw`);
const cm = () => get(`/api/v1/namespaces/${NS}/configmaps/gw-nodeconfig`);
const tp = () => get(tpPath(NS, 'gw'));
const invalid = (o: Obj | undefined) => o?.status?.conditions?.find((x: { type: string }) => x.type === 'InvalidSpec');
const secretPath = (ns: string, name: string) => `/api/v1/namespaces/${ns}/secrets/${name}`;
const b64 = (s: string) => Buffer.from(s).toString('base64');
const putSecret = (ns: string, name: string, data: Record<string, string>) =>
  c.apply(secretPath(ns, name), {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace: ns },
    // apply replaces the keys this manager owns: a key left out is removed.
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
  });
const upstream = (name: string, secret: string) => ({
  name,
  type: 'HTTPConnect',
  address: `${name}.corp.example:3128`,
  credentialsSecret: { name: secret },
});
const policy = (...upstreams: ReturnType<typeof upstream>[]) => ({
  upstreams,
  rules: [
    { name: 'block-metadata', action: 'Deny', match: { destinations: ['169.254.169.254'] } },
    ...upstreams.map((u) => ({
      name: `via-${u.name}`,
      action: 'Forward',
      upstream: u.name,
      match: { ports: [{ port: 443 }] },
    })),
  ],
});

/** The Warning Events on gw, oldest first. */
async function events(): Promise<{ reason: string; type: string; message: string }[]> {
  const list = await c.list(`/api/v1/namespaces/${NS}/events`, {
    fieldSelector: 'involvedObject.kind=TransparentProxy,involvedObject.name=gw',
  });
  // Names end in the creation time in hex (operator/events.ts): name order is time order.
  return (list.items as unknown as { metadata: { name: string }; reason: string; type: string; message: string }[])
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
    .map(({ reason, type, message }) => ({ reason, type, message }));
}

async function waitInvalid(message: RegExp): Promise<Obj> {
  return waitFor(
    `InvalidSpec ${message}`,
    async () => {
      const o = await tp();
      const x = invalid(o);
      return (
        x?.status === 'True' && message.test(x.message) && o!.status.observedGeneration === o!.metadata.generation && o
      );
    },
    40_000,
  );
}

test('a missing Secret: InvalidSpec naming the field, a Warning Event, no fleet; a Secret in another namespace does not count', async () => {
  await putSecret('other', 'corp-creds', { username: 'u', password: 'p' });
  await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'gw' },
    spec: { policy: policy(upstream('corp', 'corp-creds')) },
  });
  const t = await waitInvalid(/^spec\.policy\.upstreams\[0\]\.credentialsSecret: Secret egress\/corp-creds not found$/);
  assert.deepEqual(t.status.policy, {
    rules: 0,
    upstreams: 0,
    defaultAction: 'Allow',
    invalidUpstream: { name: 'corp', message: invalid(t).message },
  });
  assert.equal(await ds(), undefined, 'no DaemonSet: nothing rolled out');
  assert.equal(await cm(), undefined, 'no ConfigMap');
  const ev = await waitFor('Event', async () => {
    const e = await events();
    return e.length > 0 && e;
  });
  assert.deepEqual(ev, [{ reason: 'InvalidSpec', type: 'Warning', message: invalid(t).message }]);
  // kubectl describe shows both the condition and the Event.
  const described = await env.kubectl(['describe', 'tproxy', 'gw', '-n', NS]);
  assert.match(
    described,
    /Warning\s+InvalidSpec\s+.*spec\.policy\.upstreams\[0\]\.credentialsSecret: Secret egress\/corp-creds not found/,
  );
  assert.match(described, /Invalid Upstream:[\s\S]*Name:\s+corp/);
});

test('a Secret without password: the message changes (one new Event); complete: the fleet rolls out with it mounted', async () => {
  await putSecret(NS, 'corp-creds', { username: 'proxy-user' });
  await waitInvalid(/credentialsSecret: Secret egress\/corp-creds has no key password$/);
  // Re-checked every CREDENTIALS_RECHECK_MS without a watch; the repeated checks add no Event.
  await new Promise((r) => setTimeout(r, 16_000));
  assert.deepEqual(
    (await events()).map((e) => e.message.replace(/^.*Secret egress\/corp-creds /, '')),
    ['not found', 'has no key password'],
  );
  await putSecret(NS, 'corp-creds', { username: 'proxy-user', password: 's3cret-v1' });
  const d = await waitFor('DaemonSet', () => ds(), 40_000);
  const pod = d.spec.template.spec;
  const vol = pod.volumes.find((v: any) => v.secret);
  assert.equal(vol.secret.secretName, 'corp-creds');
  const sidecar = pod.containers.find((x: any) => x.name === 'sidecar');
  assert.deepEqual(
    sidecar.volumeMounts.find((m: any) => m.name === vol.name),
    { name: vol.name, mountPath: '/etc/tpfleet-credentials/corp-creds', readOnly: true },
  );
  const t = await waitFor('valid', async () => {
    const o = await tp();
    return invalid(o)?.status === 'False' && o?.status.configHash && o;
  });
  assert.deepEqual(t.status.policy, { rules: 2, upstreams: 1, defaultAction: 'Allow' });
  const config = parseNodeConfigText((await cm())!.data!['nodeconfig.yaml']!);
  assert.deepEqual(config.policy.upstreams[0]?.credentialsSecret, { name: 'corp-creds' });
  for (const [what, o] of [
    ['ConfigMap', await cm()],
    ['DaemonSet', d],
    ['status', t],
  ] as const)
    assert.ok(
      !JSON.stringify(o).includes('s3cret') && !JSON.stringify(o).includes(b64('s3cret-v1')),
      `${what} holds no value`,
    );
  const [header = '', row = ''] = (await env.kubectl(['get', 'tproxy', 'gw', '-n', NS, '-o', 'wide'])).split('\n');
  // Columns are aligned; an empty one (REPLICAS here) is blank, so read at RULES' offset.
  const at = header.indexOf('RULES');
  assert.ok(at > 0, header);
  assert.equal(row.slice(at).trim().split(/\s+/)[0], '2', `kubectl get -o wide: ${header}\n${row}`);
});

test('rotating the Secret changes nothing the operator owns (no rollout)', async () => {
  const [d0, c0] = [await ds(), await cm()];
  await putSecret(NS, 'corp-creds', { username: 'proxy-user', password: 's3cret-v2' });
  // Make sure the operator reconciled after the rotation: a metadata-only change enqueues it.
  await c.mergePatch(tpPath(NS, 'gw'), { metadata: { annotations: { touched: 'after-rotation' } } });
  await new Promise((r) => setTimeout(r, 3000));
  const [d1, c1] = [await ds(), await cm()];
  assert.equal(d1!.metadata.generation, d0!.metadata.generation, 'DaemonSet template unchanged');
  assert.equal(
    d1!.spec.template.metadata.annotations[POD_HASH_ANNOTATION],
    d0!.spec.template.metadata.annotations[POD_HASH_ANNOTATION],
  );
  assert.equal(c1!.metadata.resourceVersion, c0!.metadata.resourceVersion, 'ConfigMap unchanged');
});

test('a new upstream whose Secret lacks a key is refused; the fleet keeps its configuration until the Secret is right', async () => {
  const [d0, c0] = [await ds(), await cm()];
  await putSecret(NS, 'socks-creds', { password: 'x' });
  await c.mergePatch(tpPath(NS, 'gw'), {
    spec: { policy: policy(upstream('corp', 'corp-creds'), { ...upstream('socks', 'socks-creds'), type: 'SOCKS5' }) },
  });
  const t = await waitInvalid(
    /^spec\.policy\.upstreams\[1\]\.credentialsSecret: Secret egress\/socks-creds has no key username$/,
  );
  assert.deepEqual(t.status.policy, {
    rules: 2,
    upstreams: 1,
    defaultAction: 'Allow',
    invalidUpstream: { name: 'socks', message: invalid(t).message },
  });
  assert.equal((await ds())!.metadata.resourceVersion, d0!.metadata.resourceVersion, 'DaemonSet untouched');
  assert.equal((await cm())!.metadata.resourceVersion, c0!.metadata.resourceVersion, 'ConfigMap untouched');
  await putSecret(NS, 'socks-creds', { username: 'u', password: 'x' });
  const d = await waitFor(
    'second Secret mounted',
    async () => {
      const o = await ds();
      return o?.spec.template.spec.volumes.filter((v: any) => v.secret).length === 2 && o;
    },
    40_000,
  );
  assert.notEqual(
    d.spec.template.metadata.annotations[POD_HASH_ANNOTATION],
    d0!.spec.template.metadata.annotations[POD_HASH_ANNOTATION],
    'adding an upstream rolls the pods',
  );
  const v = await waitFor('valid', async () => {
    const o = await tp();
    return invalid(o)?.status === 'False' && o;
  });
  assert.deepEqual(v.status.policy, { rules: 3, upstreams: 2, defaultAction: 'Allow' });
});
