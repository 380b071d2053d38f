// The chart's CRD template (crds.enabled, operator/gen/crd.ts renderCrdTemplate) with the real helm
// in a real kube-apiserver: a wrong-typed value fails before anything is created (Helm's crds/
// folder would have been installed first), and `helm upgrade` with a chart whose CRD gained a field
// makes the API server serve that field (Helm never upgrades crds/).
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ApiError, KubeClient, type KubeObject } from '../../kube/client.ts';
import { tpPath, waitFor } from '../../e2e/testenv/fixtures.ts';
import { startTestEnv, type TestEnv } from '../../e2e/testenv/testenv.ts';
import { repoRoot } from './chart.ts';
import { CRD_TEMPLATE, renderCrdTemplate, transparentProxyCrd } from './crd.ts';
import { chartDir, helm, RELEASE, RELEASE_NS, runHelm } from './helm.testkit.ts';

const FLEET = 'tpfleet-fleet';
const CRD_PATH = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/transparentproxies.tpfleet.io';
type Crd = KubeObject & { spec: any; status?: { conditions?: { type: string; status: string }[] } };

let env: TestEnv, admin: KubeClient, dir: string;
const kc = () => ['--kubeconfig', env.kubeconfigPath, '--namespace', RELEASE_NS];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tpfleet-chart-crds-'));
  env = await startTestEnv();
  admin = new KubeClient(env.kubeConfig, 'chart-crds-test');
  await env.kubectl(['create', 'namespace', RELEASE_NS]);
});
after(async () => {
  rmSync(dir, { recursive: true, force: true });
  await env?.stop();
});

/** A TransparentProxy carrying spec.<field>, created with strict field validation (what kubectl does). */
function tpWith(name: string, field: string): Promise<unknown> {
  return admin.request('POST', tpPath(FLEET, undefined), {
    body: {
      apiVersion: 'tpfleet.io/v1alpha1',
      kind: 'TransparentProxy',
      metadata: { name, namespace: FLEET },
      spec: { interception: { ports: [{ port: 80 }] }, [field]: 'from the new chart' },
    },
    query: { fieldValidation: 'Strict' },
  });
}

/**
 * The chart's node janitor lives in a namespace of its own that helm uninstall deletes; no namespace
 * controller finishes that here, so a reinstall would meet it terminating. These tests are about the
 * CRD; the janitor has its own (chart.test.ts).
 */
const NO_JANITOR = ['--set', 'janitor.enabled=false'];

test('helm install with a wrong-typed value fails naming the field and creates nothing (no CRD, no namespace)', async () => {
  const r = await runHelm(['install', RELEASE, chartDir, ...kc(), ...NO_JANITOR, '--set', 'crds.keep=yes']);
  assert.notEqual(r.code, 0, 'the install is refused');
  assert.match(r.stderr, /\/crds\/keep.*got string, want boolean/);
  assert.equal(await admin.get(CRD_PATH), undefined, 'the CRD was not created');
  assert.equal(await admin.get(`/api/v1/namespaces/${FLEET}`), undefined, 'the fleet namespace was not created');
  const releases = await admin.list(`/api/v1/namespaces/${RELEASE_NS}/secrets`);
  assert.deepEqual(
    releases.items.map((s) => s.metadata.name).filter((n) => n.startsWith('sh.helm.release')),
    [],
    'no release recorded',
  );
});

test('helm upgrade upgrades the CRD: a field the new chart adds is refused before and served after', async () => {
  await helm(['install', RELEASE, chartDir, ...kc(), ...NO_JANITOR]);
  const installed = await waitFor('CRD Established', async () => {
    const crd = await admin.get<Crd>(CRD_PATH);
    return crd?.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') && crd;
  });
  assert.equal(installed.metadata.annotations?.['helm.sh/resource-policy'], 'keep');
  assert.equal(installed.metadata.annotations?.['meta.helm.sh/release-name'], RELEASE, 'owned by the release');
  await waitFor('TransparentProxies served', async () => (await admin.list(tpPath(FLEET, undefined))) && true);
  await assert.rejects(
    tpWith('before', 'futureKnob'),
    (e: unknown) => e instanceof ApiError && /unknown field "spec.futureKnob"/.test(e.message),
  );

  // The next chart version: the same generator, a CRD with one more spec field.
  const next = join(dir, 'tpfleet');
  cpSync(chartDir, next, { recursive: true });
  const crd = transparentProxyCrd() as any;
  crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.futureKnob = {
    type: 'string',
    description: 'A field a later chart version adds.',
  };
  writeFileSync(join(next, CRD_TEMPLATE), renderCrdTemplate(crd));
  const chartYaml = join(next, 'Chart.yaml');
  writeFileSync(chartYaml, readFileSync(chartYaml, 'utf8').replace(/^version: .*$/m, 'version: 0.1.1'));
  const out = await helm(['upgrade', RELEASE, next, ...kc(), ...NO_JANITOR]);
  assert.match(out, /REVISION: 2/);

  const upgraded = await admin.get<Crd>(CRD_PATH);
  assert.equal(
    upgraded?.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.futureKnob?.type,
    'string',
    'the CRD in the API server has the new field',
  );
  // No operator runs here (this test is about the CRD), so nothing answers the chart's admission
  // webhook, whose failurePolicy Fail would refuse every write (chart.apiserver.test.ts tests that):
  // the registration goes, for the writes below to reach the CRD's own schema.
  await admin.delete('/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/tpfleet-operator');
  // The API server serves the new schema a moment after the CRD update; poll until it accepts.
  await waitFor('the new field accepted', async () => {
    try {
      await tpWith('after', 'futureKnob');
      return true;
    } catch (e) {
      if (e instanceof ApiError && /unknown field/.test(e.message)) return false;
      throw e;
    }
  });
  const stored = await admin.get<KubeObject & { spec: Record<string, unknown> }>(tpPath(FLEET, 'after'));
  assert.equal(stored?.spec.futureKnob, 'from the new chart', 'stored, not pruned');
});

test('a CRD applied by hand (the older charts, crds/) is adopted with the two commands of docs/helm.md', async () => {
  await helm(['uninstall', RELEASE, ...kc()]);
  assert.ok(await admin.get(CRD_PATH), 'crds.keep: helm uninstall left the CRD');
  await env.kubectl(['delete', 'crd', 'transparentproxies.tpfleet.io', '--wait=true']);
  // What users of the older chart have: the CRD from crds/, applied without Helm's ownership.
  await env.kubectl(['apply', '--server-side', '-f', join(repoRoot, 'crds')]);
  const refused = await runHelm(['install', RELEASE, chartDir, ...kc(), ...NO_JANITOR]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /invalid ownership metadata/);
  // docs/helm.md, "From a chart that installed the CRD from crds/".
  const doc = readFileSync(join(repoRoot, 'docs', 'helm.md'), 'utf8');
  const steps = [...doc.matchAll(/^(kubectl (?:label|annotate) crd .*)$/gm)].map((m) => m[1]!.split(' ').slice(1));
  assert.equal(steps.length, 2, 'docs/helm.md names the label and the annotate command');
  for (const s of steps) await env.kubectl(s);
  await helm(['install', RELEASE, chartDir, ...kc(), ...NO_JANITOR]);
  const crd = await admin.get<Crd>(CRD_PATH);
  assert.equal(crd?.metadata.annotations?.['meta.helm.sh/release-name'], RELEASE, 'adopted by the release');
  assert.equal(crd?.metadata.annotations?.['helm.sh/resource-policy'], 'keep');
});
