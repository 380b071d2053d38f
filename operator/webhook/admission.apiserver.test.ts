// The admission webhook in a real kube-apiserver (issue 12): registered as the chart registers it
// (failurePolicy Fail, caBundle filled in by the operator), it refuses at `kubectl apply`, naming
// the field, every spec the operator would refuse that the schema and CEL let through; 200
// generated malformed objects are all refused; a user of a namespace the installation does not
// reconcile gets nothing scheduled and a status saying why; the certificates rotate under load.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { after, before, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { ApiError, KubeClient, type KubeObject } from '../../kube/client.ts';
import { errorMessage } from '../../api/errors.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from '../../e2e/testenv/fixtures.ts';
import { registerWebhook, startOperator, WEBHOOK_CONFIG, type RunningOperator } from '../../e2e/testenv/operator.ts';
import { freePort, startTestEnv, type TestEnv } from '../../e2e/testenv/testenv.ts';
import { tenancy } from '../tenancy.ts';
import { MALFORMED, malformedObjects } from './malformed.testkit.ts';
import { splitPem } from './x509.ts';

let env: TestEnv, c: KubeClient, op: RunningOperator | undefined, port: number;
const FLEET = 'tpfleet-fleet';
type Obj = KubeObject & { spec?: any; status?: any; webhooks?: any[] };
const tp = (name: string, spec: unknown, namespace = FLEET) => ({
  apiVersion: 'tpfleet.io/v1alpha1',
  kind: 'TransparentProxy',
  metadata: { name, namespace },
  spec,
});

/** `kubectl apply -f` of one object; resolves with stdout or rejects with kubectl's stderr. */
async function apply(obj: unknown): Promise<string> {
  const file = join(env.dir, `apply-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, stringify(obj));
  return env.kubectl(['apply', '-f', file]);
}
async function refusal(obj: unknown): Promise<string> {
  try {
    await apply(obj);
  } catch (e) {
    return errorMessage(e);
  }
  assert.fail(`admitted: ${JSON.stringify(obj)}`);
}

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-admin');
  await installCrd(c);
  for (const ns of ['tpfleet-system', FLEET, 'team-x']) await createNamespace(c, ns);
  for (const n of ['a1', 'a2']) await createNode(c, n, { labels: { pool: 'a' } });
  for (const n of ['b1']) await createNode(c, n, { labels: { pool: 'b' } });
  port = await freePort();
  await registerWebhook(c, port);
  op = await startOperator(env.kubeconfigPath, {
    cleanupTimeoutMs: 3000,
    tenancy: tenancy({
      namespaces: [FLEET],
      allowedImages: ['registry.example/tpfleet-node:'],
      allowControlPlane: false,
    }),
    // Short lifetimes so that the last test sees the serving certificate and the CA rotate.
    admission: { port, validityMs: 8000, caValidityMs: 24_000, checkMs: 500 },
  });
  await waitFor('caBundle set', async () => {
    const cfg = await c.get<Obj>(
      `/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/${WEBHOOK_CONFIG}`,
    );
    return !!cfg?.webhooks?.[0]?.clientConfig?.caBundle;
  });
  // Until the API server has loaded the registration and trusts the CA, a write fails with
  // "failed calling webhook"; from then on the webhook answers.
  await waitFor('the API server to call the webhook', async () => {
    try {
      await c.request('POST', tpPath(FLEET), {
        body: tp('probe', { interception: { mark: 0x1000, mask: 0x2000 } }),
        query: { dryRun: 'All' },
      });
    } catch (e) {
      return /denied the request: spec\.interception\.mark/.test(errorMessage(e));
    }
    return false;
  });
});
after(async () => {
  await op?.stop();
  await env?.stop();
});

/**
 * Deletes an object and waits until it is gone. No kubelet here runs the cleanup pods its finalizer
 * waits for (the finalizer never gives up while a node may hold rules, ADR 0015; finalize's own tests
 * cover that): these tests are about admission, so the finalizer goes by hand, which admission must
 * let through on a deleting object.
 */
async function gone(name: string): Promise<void> {
  await c.delete(tpPath(FLEET, name));
  await c.mergePatch(tpPath(FLEET, name), { metadata: { finalizers: null } }).catch(() => undefined);
  await waitFor(`${name} to be gone`, async () => !(await c.get(tpPath(FLEET, name))));
}

test('what the schema and CEL admitted is refused at kubectl apply, naming the field', async () => {
  const cases: [string, unknown, RegExp][] = [
    [
      'mark outside mask',
      { interception: { mark: 0x1000, mask: 0x2000 } },
      /spec\.interception\.mark: must lie within mask/,
    ],
    [
      'mark partly outside mask',
      { interception: { mark: 0x3000, mask: 0x1000 } },
      /spec\.interception\.mark: must lie within mask/,
    ],
    [
      'IPv6 CIDR with ipFamilies [IPv4]',
      { interception: { ipFamilies: ['IPv4'], destinations: { include: ['fd00::/64'] } } },
      /spec\.interception\.destinations\.include\[0\]: fd00::\/64 is IPv6 but ipFamilies does not list it/,
    ],
    [
      'bare IP excluded while the same /32 is included',
      { interception: { destinations: { include: ['10.0.0.1/32'], exclude: ['10.0.0.1'] } } },
      /spec\.interception\.destinations\.exclude\[0\]: 10\.0\.0\.1\/32 is both included and excluded/,
    ],
    [
      'an image outside the allowlist',
      { proxy: { image: 'evil.example/root:latest' } },
      /spec\.proxy\.image: "evil\.example\/root:latest" is not an allowed node image/,
    ],
    [
      'a toleration of every taint',
      { tolerations: [{ operator: 'Exists' }] },
      /spec\.tolerations\[0\]: tolerates the control-plane taint/,
    ],
    [
      'a control-plane toleration',
      { tolerations: [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }] },
      /spec\.tolerations\[0\]: tolerates the control-plane taint/,
    ],
    [
      'selecting control-plane nodes',
      { nodeSelector: { 'node-role.kubernetes.io/control-plane': '' } },
      /spec\.nodeSelector\.node-role\.kubernetes\.io\/control-plane: selects control-plane nodes/,
    ],
  ];
  for (const [why, spec, field] of cases) {
    const msg = await refusal(tp('bad', spec));
    assert.match(msg, /admission webhook "validate\.tpfleet\.io" denied the request/, why);
    assert.match(msg, field, why);
  }
  assert.equal(await c.get(tpPath(FLEET, 'bad')), undefined, 'nothing was stored');
  // The allowlisted image passes.
  await apply(tp('good', { nodeSelector: { pool: 'b' }, proxy: { image: 'registry.example/tpfleet-node:1.2' } }));
  await gone('good');
});

test('the one-per-node conflict is refused at apply naming the other object; disjoint selectors pass', async () => {
  await apply(tp('first', { nodeSelector: { pool: 'a' } }));
  await waitFor('the cache to see first', async () => op!.controller.caches.proxies.get(FLEET, 'first'));
  const msg = await refusal(tp('second', { replicas: 1 }));
  assert.match(
    msg,
    /spec\.nodeSelector: node\(s\) a1, a2 are also selected by TransparentProxy tpfleet-fleet\/first, which is older/,
  );
  await apply(tp('second', { nodeSelector: { pool: 'b' } }));
  // An update that moves it onto first's nodes is refused too, and the stored spec stays.
  const moved = await refusal(tp('second', { nodeSelector: { pool: 'a' } }));
  assert.match(moved, /also selected by TransparentProxy tpfleet-fleet\/first/);
  assert.deepEqual((await c.get<Obj>(tpPath(FLEET, 'second')))?.spec.nodeSelector, { pool: 'b' });
  // Metadata-only writes (labels, the operator's finalizer) pass even while the spec would not.
  await c.mergePatch(tpPath(FLEET, 'second'), { metadata: { labels: { team: 'x' } } });
  for (const n of ['first', 'second']) await gone(n);
});

test(`${MALFORMED.length} kinds of defect, 200 generated malformed objects: every one refused at apply`, async () => {
  const objects = malformedObjects(200, 12);
  const admitted: string[] = [];
  const unnamed: string[] = [];
  for (const o of objects) {
    try {
      await c.request('POST', tpPath(FLEET), { body: tp(o.name, o.spec), query: { fieldValidation: 'Strict' } });
      admitted.push(`${o.name} (${o.defects.join(', ')})`);
      await c.delete(tpPath(FLEET, o.name));
    } catch (e) {
      if (!(e instanceof ApiError) || ![400, 422].includes(e.status)) throw e;
      // The message names the field of at least one of its defects.
      if (!o.fields.some((f) => e.message.includes(f))) unnamed.push(`${o.name}: ${e.message}`);
    }
  }
  assert.deepEqual(admitted, [], 'admitted');
  assert.deepEqual(unnamed, [], 'refused without naming a defective field');
});

test('a user who may create TransparentProxies only in a non-fleet namespace gets a status and nothing scheduled', async () => {
  // tpfleet-edit bound in team-x alone, as an administrator would (operator/deploy/user-roles.yaml).
  for (const doc of parseAllDocuments(
    readFileSync(join(import.meta.dirname, '..', 'deploy', 'user-roles.yaml'), 'utf8'),
  ))
    await c.create('/apis/rbac.authorization.k8s.io/v1/clusterroles', doc.toJS());
  await c.create('/apis/rbac.authorization.k8s.io/v1/namespaces/team-x/rolebindings', {
    metadata: { name: 'dev-edit' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'tpfleet-edit' },
    subjects: [{ kind: 'User', name: 'team-x-dev', apiGroup: 'rbac.authorization.k8s.io' }],
  });
  const kc = new KubeConfig();
  kc.loadFromFile(await env.userKubeconfig('team-x-dev'));
  const dev = new KubeClient(kc, 'dev');
  await assert.rejects(dev.create(tpPath(FLEET), tp('mine', {})), /403/, 'not in the fleet namespace');
  await dev.create(tpPath('team-x'), tp('mine', { nodeSelector: { pool: 'b' } }, 'team-x'));
  const o = await waitFor('status', async () => {
    const x = await dev.get<Obj>(tpPath('team-x', 'mine'));
    return x?.status?.conditions?.find((k: { type: string }) => k.type === 'InvalidSpec')?.status === 'True' && x;
  });
  const invalid = o.status.conditions.find((k: { type: string }) => k.type === 'InvalidSpec');
  assert.match(
    invalid.message,
    /metadata\.namespace: team-x is not a namespace this tpfleet installation reconciles \(tpfleet-fleet\); nothing is scheduled/,
  );
  assert.equal(await c.get('/apis/apps/v1/namespaces/team-x/daemonsets/mine'), undefined, 'no DaemonSet');
  assert.equal(await c.get('/api/v1/namespaces/team-x/configmaps/mine-nodeconfig'), undefined, 'no ConfigMap');
  const labels = (await c.list('/api/v1/nodes')).items.flatMap((n) => Object.keys(n.metadata.labels ?? {}));
  assert.ok(!labels.some((l) => l.includes('team-x')), 'no node label');
  assert.deepEqual(o.metadata.finalizers ?? [], [], 'no finalizer: deleting it needs no operator');
  await dev.delete(tpPath('team-x', 'mine'));
});

/** The serving certificate the webhook presents now. */
function served(): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const der = s.getPeerCertificate().raw;
      s.end();
      resolve(new X509Certificate(der));
    });
    s.on('error', reject);
  });
}

test('certificate rotation: the serving certificate and the CA are replaced while admission keeps answering', async () => {
  const cfgPath = `/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/${WEBHOOK_CONFIG}`;
  const serials = new Set<string>([(await served()).serialNumber]);
  const issuers = new Set<string>([(await served()).issuer]);
  let checks = 0,
    mostCas = 0;
  const bundles = new Set<string>([(await c.get<Obj>(cfgPath))?.webhooks?.[0]?.clientConfig?.caBundle ?? '']);
  const deadline = Date.now() + 40_000;
  // Until the CA has rotated once and the serving certificate twice (at least 5 rounds): every
  // second a refused and an admitted write, both answered by the webhook.
  while (Date.now() < deadline && (issuers.size < 2 || bundles.size < 2 || serials.size < 3 || checks < 5)) {
    const msg = await refusal(tp('rot-bad', { interception: { mark: 0x1000, mask: 0x2000 } }));
    assert.match(msg, /spec\.interception\.mark: must lie within mask/, 'refused by the webhook, not unreachable');
    await apply(tp('rot-good', { nodeSelector: { pool: 'b' }, replicas: checks % 2 }));
    checks++;
    const cert = await served();
    serials.add(cert.serialNumber);
    issuers.add(cert.issuer);
    const bundle = (await c.get<Obj>(cfgPath))?.webhooks?.[0]?.clientConfig?.caBundle ?? '';
    bundles.add(bundle);
    // The CA that signed what is served is always in the bundle the API server has.
    const cas = splitPem(Buffer.from(bundle, 'base64').toString());
    assert.ok(
      cas.some((ca) => cert.checkIssued(new X509Certificate(ca))),
      'the serving CA is in the caBundle',
    );
    mostCas = Math.max(mostCas, cas.length);
    await new Promise((r) => setTimeout(r, 1000));
  }
  assert.ok(checks >= 5);
  assert.ok(serials.size >= 3, `serving certificate renewed (${serials.size} seen)`);
  assert.ok(issuers.size >= 2, 'the CA rotated');
  assert.ok(bundles.size >= 2, 'caBundle updated');
  assert.equal(mostCas, 2, 'after a CA rotation the bundle holds the new CA and the previous one, until it expires');
});

// Last: it stops the operator. failurePolicy Fail must refuse only what the webhook would judge.
// Issue 20's path 1 (the operator down, a stuck deletion's finalizer removed by hand) needs the
// finalizer write to go through with no replica answering; before the registration's
// matchConditions it failed with "failed calling webhook", and so did every label write.
test('no operator answering: label and finalizer writes and a deleting object go through; a spec change is refused', async () => {
  await apply(tp('down', { nodeSelector: { pool: 'none' }, replicas: 1 }));
  await waitFor('the finalizer', async () =>
    ((await c.get<Obj>(tpPath(FLEET, 'down')))?.metadata.finalizers ?? []).includes('tpfleet.io/node-cleanup'),
  );
  const running = op!;
  op = undefined;
  await running.stop();
  const msg = await refusal(tp('down', { nodeSelector: { pool: 'none' }, replicas: 2 }));
  assert.match(msg, /failed calling webhook/, 'a spec change is refused while nobody can judge it');
  const created = await refusal(tp('down-new', { nodeSelector: { pool: 'none' } }));
  assert.match(created, /failed calling webhook/, 'and so is a create');
  await c.mergePatch(tpPath(FLEET, 'down'), { metadata: { labels: { team: 'a' } } });
  await c.delete(tpPath(FLEET, 'down'));
  await c.mergePatch(tpPath(FLEET, 'down'), { metadata: { finalizers: null } });
  await waitFor('down to be gone', async () => !(await c.get(tpPath(FLEET, 'down'))));
});
