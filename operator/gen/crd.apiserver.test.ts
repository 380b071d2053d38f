// The generated CRD against a real kube-apiserver: it installs, the documented samples are
// accepted, invalid specs are rejected at admission naming the field, and the operator's own
// zod validation (used for InvalidSpec) rejects the same specs.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { renderNodeConfig } from '../render/nodeconfig.ts';
import { ApiError, KubeClient, type KubeObject } from '../../kube/client.ts';
import { createNamespace, installCrd, loadSample, tpPath } from '../../e2e/testenv/fixtures.ts';
import { startTestEnv, type TestEnv } from '../../e2e/testenv/testenv.ts';
import { INVALID_SPECS } from './invalid-specs.ts';
import { errorMessage } from '../../api/errors.ts';

let env: TestEnv;
let c: KubeClient;
const NS = 'crd-test';

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'crd-test');
  await installCrd(c);
  await createNamespace(c, NS);
  await createNamespace(c, 'tpfleet-fleet');
});
after(async () => {
  await env?.stop();
});

/** Creates like `kubectl create` does: strict field validation (unknown fields are errors). */
const create = (ns: string, obj: unknown) =>
  c.request<KubeObject>('POST', tpPath(ns), { body: obj, query: { fieldValidation: 'Strict' } });

test('every documented sample is accepted and renders a valid NodeConfig', async () => {
  for (const file of ['minimal.yaml', 'full.yaml', 'autoscaling.yaml']) {
    const sample = loadSample(file);
    const created = await create(sample.metadata.namespace!, sample);
    assert.deepEqual(created.spec, sample.spec, `${file}: stored as written (nothing pruned)`);
    const r = renderNodeConfig(sample.spec);
    assert.ok(r.ok, `${file}: ${r.ok ? '' : r.problems.join('; ')}`);
  }
});

test(`${INVALID_SPECS.length} invalid specs are each rejected by the API server naming the field`, async () => {
  assert.ok(INVALID_SPECS.length >= 30);
  const failures: string[] = [];
  for (const [i, bad] of INVALID_SPECS.entries()) {
    const obj = {
      apiVersion: 'tpfleet.io/v1alpha1',
      kind: 'TransparentProxy',
      metadata: { name: bad.name ?? `bad-${i}` },
      spec: bad.spec,
    };
    try {
      await create(NS, obj);
      failures.push(`${bad.why}: accepted`);
    } catch (e) {
      // 422: schema/CEL; 400: strict decoding of an unknown field (what kubectl shows for a typo).
      if (!(e instanceof ApiError) || (e.status !== 422 && e.status !== 400)) {
        failures.push(`${bad.why}: ${errorMessage(e)}`);
        continue;
      }
      if (!e.message.includes(bad.field)) failures.push(`${bad.why}: message does not name ${bad.field}: ${e.message}`);
    }
  }
  assert.deepEqual(failures, []);
  const left = await c.list(tpPath(NS));
  assert.equal(left.items.length, 0, 'nothing was stored');
});

test('the operator rejects the same specs with the same field (InvalidSpec when CEL is bypassed)', () => {
  const failures: string[] = [];
  for (const bad of INVALID_SPECS.filter((b) => !b.apiOnly)) {
    const r = renderNodeConfig(bad.spec);
    if (r.ok) failures.push(`${bad.why}: accepted`);
    else if (!r.problems.some((p) => p.startsWith(bad.field)))
      failures.push(`${bad.why}: ${r.problems.join('; ')} does not name ${bad.field}`);
  }
  assert.deepEqual(failures, []);
});

test('status and scale subresources, printer columns and short name are served', async () => {
  const obj = {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'scaled' },
    spec: { replicas: 2 },
  };
  await create(NS, obj);
  const scale = await c.request<{ spec: { replicas: number } }>('GET', tpPath(NS, 'scaled', 'scale'));
  assert.equal(scale.spec.replicas, 2);
  // kubectl scale: a merge patch of the Scale object.
  await c.mergePatch(tpPath(NS, 'scaled', 'scale'), { spec: { replicas: 5 } });
  const after = await c.get<KubeObject & { spec: { replicas: number } }>(tpPath(NS, 'scaled'));
  assert.equal(after?.spec.replicas, 5);
  // Writes to the main resource cannot touch status (status subresource enabled).
  await c.mergePatch(tpPath(NS, 'scaled'), { status: { replicas: 9 } });
  assert.equal((await c.get<KubeObject & { status?: unknown }>(tpPath(NS, 'scaled')))?.status, undefined);
  // kubectl get asks for a Table; the columns come from additionalPrinterColumns.
  const table = await c.request<{ columnDefinitions: { name: string }[] }>('GET', tpPath(NS), {
    accept: 'application/json;as=Table;v=v1;g=meta.k8s.io',
  });
  assert.deepEqual(
    table.columnDefinitions.map((d) => d.name),
    ['Name', 'Ready', 'Active', 'Ready-Nodes', 'Replicas', 'Age'],
  );
  const disco = await c.request<{ resources: { name: string; shortNames?: string[] }[] }>(
    'GET',
    '/apis/tpfleet.io/v1alpha1',
  );
  const names = disco.resources.map((r) => r.name).sort();
  assert.deepEqual(names, ['transparentproxies', 'transparentproxies/scale', 'transparentproxies/status']);
  assert.deepEqual(disco.resources.find((r) => r.name === 'transparentproxies')?.shortNames, ['tproxy']);
});

test('kubectl explain has the field documentation: the API server publishes the descriptions (OpenAPI v3)', async () => {
  const doc = await waitForOpenApi();
  const schemas = doc.components.schemas as Record<
    string,
    { description?: string; properties?: Record<string, { description?: string; allOf?: unknown }> }
  >;
  const tp = Object.entries(schemas).find(([k]) => k === 'io.tpfleet.v1alpha1.TransparentProxy')?.[1];
  assert.ok(tp, 'TransparentProxy schema published');
  assert.match(tp.description ?? '', /fleet of transparent proxies/);
  const spec = JSON.stringify(tp.properties?.spec);
  for (const text of [
    'FailClosed drops intercepted traffic',
    'How many candidate nodes are active',
    'Most active nodes; required when enabled',
  ]) {
    assert.ok(spec.includes(text), `description "${text}" published`);
  }
});

async function waitForOpenApi(): Promise<{ components: { schemas: unknown } }> {
  // The OpenAPI v3 document of a new group appears shortly after the CRD is established.
  for (let i = 0; i < 100; i++) {
    try {
      return await c.request('GET', '/openapi/v3/apis/tpfleet.io/v1alpha1');
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error('no OpenAPI v3 document for tpfleet.io/v1alpha1');
}

test('the user path with the real kubectl: apply a sample, get with printer columns, explain, a bad spec refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-kubectl-'));
  try {
    const good = join(dir, 'good.yaml'),
      bad = join(dir, 'bad.yaml');
    writeFileSync(
      good,
      stringify({ ...loadSample('minimal.yaml'), metadata: { name: 'from-kubectl', namespace: NS } }),
    );
    assert.match(
      await env.kubectl(['apply', '--server-side', '-f', good]),
      /transparentproxy\.tpfleet\.io\/from-kubectl serverside-applied/,
    );
    const header = async (...extra: string[]) =>
      ((await env.kubectl(['get', 'tproxy', '-n', NS, ...extra])).split('\n')[0] ?? '').trim().split(/\s+/);
    assert.deepEqual(await header(), ['NAME', 'READY', 'ACTIVE', 'REPLICAS', 'AGE']);
    assert.deepEqual(
      await header('-o', 'wide'),
      ['NAME', 'READY', 'ACTIVE', 'READY-NODES', 'REPLICAS', 'AGE'],
      'Ready-Nodes is a wide column',
    );
    assert.match(
      await env.kubectl(['explain', 'tproxy.spec.interception.failurePolicy']),
      /FailClosed drops intercepted traffic/,
    );
    writeFileSync(
      bad,
      stringify({
        apiVersion: 'tpfleet.io/v1alpha1',
        kind: 'TransparentProxy',
        metadata: { name: 'bad', namespace: NS },
        spec: { interception: { ports: [{ port: 9000, endPort: 8000 }] } },
      }),
    );
    await assert.rejects(env.kubectl(['apply', '-f', bad]), /spec\.interception\.ports\[0\]\.endPort/);
    assert.equal(await c.get(tpPath(NS, 'bad')), undefined, 'nothing was created');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
