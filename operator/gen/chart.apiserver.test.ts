// `helm install` of charts/tpfleet into a real kube-apiserver (e2e/testenv), the user path of
// docs/helm.md. No kubelet or controller-manager runs here, so the chart's Deployment never gets
// pods: the operator runs as a process with that Deployment's own args and the chart's
// ServiceAccount token, so the chart's flags and RBAC are what is exercised, not an admin shortcut.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { ApiError, KubeClient, type KubeObject } from '../../kube/client.ts';
import { createNode, loadSample, tpPath, waitFor } from '../../e2e/testenv/fixtures.ts';
import { freePort, startTestEnv, type TestEnv } from '../../e2e/testenv/testenv.ts';
import { chartDir, helm, RELEASE, RELEASE_NS } from './helm.testkit.ts';
import { repoRoot } from './chart.ts';

const FLEET = 'tpfleet-fleet';
const PSA = 'pod-security.kubernetes.io/enforce';
type Obj = KubeObject & { spec?: any; status?: any };

let env: TestEnv, admin: KubeClient, dir: string, operator: ChildProcess | undefined, inlineSample: Obj;
const operatorLog = () => {
  try {
    return readFileSync(join(dir, 'operator.log'), 'utf8').slice(-3000);
  } catch {
    return '(no log)';
  }
};
const helmAdmin = (args: string[]) => helm(['--kubeconfig', env.kubeconfigPath, ...args]);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tpfleet-chart-'));
  env = await startTestEnv();
  admin = new KubeClient(env.kubeConfig, 'chart-test');
});
after(async () => {
  await stopOperator();
  // Before env.stop(): its children are unref'd, so the process may exit while stop() still
  // awaits their exit events (the harness's exit handler then cleans up only its own files).
  rmSync(dir, { recursive: true, force: true });
  await env?.stop();
});

async function stopOperator(): Promise<void> {
  const p = operator;
  operator = undefined;
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

test('helm install as documented: CRD served, fleet namespace privileged, release namespace restricted, NOTES', async () => {
  await env.kubectl(['create', 'namespace', RELEASE_NS]);
  await env.kubectl([
    'label',
    'namespace',
    RELEASE_NS,
    `${PSA}=restricted`,
    'pod-security.kubernetes.io/enforce-version=latest',
  ]);
  const notes = await helmAdmin(['install', RELEASE, chartDir, '--namespace', RELEASE_NS]);
  assert.match(notes, /STATUS: deployed/);
  assert.match(
    notes,
    /`helm upgrade` upgrades the TransparentProxy CRD/,
    'NOTES: the CRD is upgraded with the release',
  );
  assert.match(notes, /kubectl apply -f operator\/samples\/minimal\.yaml/);
  // The inline TransparentProxy of the NOTES (for users without a checkout; the heredoc's EOF at
  // column 0 so a copy-paste runs) is valid for the CRD.
  const inline = /\ncat <<EOF \| kubectl apply -f -\n([\s\S]*?)\nEOF\n/.exec(notes)?.[1];
  assert.ok(inline, 'NOTES carry an inline TransparentProxy');
  const tp = parse(inline) as Obj;
  assert.equal(tp.metadata.namespace, FLEET);
  await waitFor(
    'CRD established',
    async () => (await admin.list('/apis/tpfleet.io/v1alpha1/transparentproxies')) && true,
  );
  // failurePolicy Fail, documented: while no operator answers the webhook, apply is refused.
  await assert.rejects(
    admin.request('POST', tpPath(FLEET, undefined), { body: tp, query: { dryRun: 'All', fieldValidation: 'Strict' } }),
    /failed calling webhook "validate\.tpfleet\.io"/,
  );
  inlineSample = tp;
  assert.doesNotMatch(notes, /WARNING/, 'the release namespace enforces restricted');
  const ns = (name: string) => admin.get<Obj>(`/api/v1/namespaces/${name}`);
  assert.equal((await ns(FLEET))?.metadata.labels?.[PSA], 'privileged');
  assert.equal((await ns(RELEASE_NS))?.metadata.labels?.[PSA], 'restricted');
});

test("the operator with the chart Deployment's args and ServiceAccount token reconciles a sample in the fleet namespace", async () => {
  const deployment = (await admin.get<Obj>(`/apis/apps/v1/namespaces/${RELEASE_NS}/deployments/tpfleet-operator`))!;
  const pod = deployment.spec.template.spec;
  const args: string[] = pod.containers.find((c: { name: string }) => c.name === 'operator').args;
  const token = (
    await env.kubectl(['create', 'token', pod.serviceAccountName, '-n', RELEASE_NS, '--duration', '1h'])
  ).trim();
  const adminConfig = parse(readFileSync(env.kubeconfigPath, 'utf8')) as {
    clusters: { cluster: Record<string, string> }[];
  };
  const kubeconfig = join(dir, 'operator.kubeconfig');
  writeFileSync(
    kubeconfig,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'sa',
      clusters: [{ name: 'c', cluster: adminConfig.clusters[0]!.cluster }],
      users: [{ name: 'sa', user: { token } }],
      contexts: [{ name: 'sa', context: { cluster: 'c', user: 'sa' } }],
    }),
    { mode: 0o600 },
  );
  // In a pod the operator binds 0.0.0.0:8080 and serves the webhook behind its Service; here no pod
  // runs, so those flags are replaced (free loopback ports) and the webhook registration points at
  // the process by URL. Everything else (names, Secret, RBAC) is the chart's.
  const port = await freePort(),
    webhookPort = await freePort();
  await admin.jsonPatch('/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/tpfleet-operator', [
    { op: 'remove', path: '/webhooks/0/clientConfig/service' },
    {
      op: 'add',
      path: '/webhooks/0/clientConfig/url',
      value: `https://127.0.0.1:${webhookPort}/validate-transparentproxy`,
    },
  ]);
  const out = openSync(join(dir, 'operator.log'), 'a');
  operator = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(repoRoot, 'operator', 'main.ts'),
      ...args.filter((a) => !/^--(bind|webhook-bind|webhook-hosts)=/.test(a)),
      '--bind',
      `127.0.0.1:${port}`,
      `--webhook-bind=127.0.0.1:${webhookPort}`,
      '--webhook-hosts=127.0.0.1',
      '--kubeconfig',
      kubeconfig,
    ],
    { cwd: repoRoot, stdio: ['ignore', out, out] },
  );
  closeSync(out);
  // Last resort if the test process dies without running after().
  const child = operator;
  process.once('exit', () => child.kill('SIGKILL'));
  await waitFor(
    'operator /readyz',
    async () => {
      if (operator?.exitCode != null) throw new Error(`operator exited ${operator.exitCode}: ${operatorLog()}`);
      return (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.ok;
    },
    60_000,
  );

  // The NOTES' inline TransparentProxy is admitted now that the operator answers.
  await waitFor('the webhook to answer', async () => {
    await admin.request('POST', tpPath(FLEET, undefined), {
      body: inlineSample,
      query: { dryRun: 'All', fieldValidation: 'Strict' },
    });
    return true;
  });
  const tls = await admin.get<Obj & { data?: Record<string, string> }>(
    `/api/v1/namespaces/${RELEASE_NS}/secrets/tpfleet-operator-webhook-tls`,
  );
  assert.deepEqual(
    Object.keys(tls?.data ?? {}).sort(),
    ['ca.crt', 'ca.key', 'tls.crt', 'tls.key'],
    'the operator made its TLS Secret',
  );
  await createNode(admin, 'n1', { zone: 'a' });
  await env.kubectl(['apply', '-f', join(repoRoot, 'operator', 'samples', 'minimal.yaml')]);
  const sample = loadSample('minimal.yaml');
  assert.equal(sample.metadata.namespace, FLEET);
  const tp = await waitFor(
    'the sample reconciled (status conditions)',
    async () => {
      const o = await admin.get<Obj>(tpPath(FLEET, 'web'));
      return o?.status?.conditions?.some((c: { type: string }) => c.type === 'Ready') && o;
    },
    30_000,
  ).catch((e: Error) => {
    throw new Error(`${e.message}\noperator log:\n${operatorLog()}`);
  });
  assert.equal(tp.status.conditions.find((c: { type: string }) => c.type === 'InvalidSpec')?.status, 'False');
  assert.equal(tp.status.candidates, 1);
  for (const p of [
    `/apis/apps/v1/namespaces/${FLEET}/daemonsets/web`,
    `/api/v1/namespaces/${FLEET}/configmaps/web-nodeconfig`,
    `/api/v1/namespaces/${FLEET}/services/web-metrics`,
    `/apis/rbac.authorization.k8s.io/v1/namespaces/${FLEET}/roles/web-node-agent`,
  ]) {
    assert.ok(await admin.get(p), `${p} created by the operator`);
  }
  const ds = (await admin.get<Obj>(`/apis/apps/v1/namespaces/${FLEET}/daemonsets/web`))!;
  assert.equal(
    ds.spec.template.spec.containers.find((c: { name: string }) => c.name === 'sidecar').image,
    'ghcr.io/tpfleet/tpfleet-node:0.1.0',
    'node image from --image',
  );
  const lease = await admin.get<Obj>(`/apis/coordination.k8s.io/v1/namespaces/${RELEASE_NS}/leases/tpfleet-operator`);
  assert.ok(lease?.spec.holderIdentity, "the operator leads through the chart's leader-election Role");
});

/** What the HPA and KEDA do with a scaleTargetRef: discovery maps the kind to a resource, then /scale. */
async function resolveScale(
  ns: string,
  ref: { apiVersion: string; kind: string; name: string },
): Promise<{ spec: { replicas?: number }; status: { selector?: string } }> {
  const group = await admin.request<{ resources: { name: string; kind: string }[] }>('GET', `/apis/${ref.apiVersion}`);
  const resource = group.resources.find((r) => r.kind === ref.kind && !r.name.includes('/'));
  assert.ok(resource, `${ref.kind} is served by ${ref.apiVersion}`);
  assert.ok(
    group.resources.some((r) => r.name === `${resource.name}/scale`),
    `${resource.name} has a /scale subresource`,
  );
  return admin.request('GET', `/apis/${ref.apiVersion}/namespaces/${ns}/${resource.name}/${ref.name}/scale`);
}

test("autoscaling: the KEDA recipe's scaleTargetRef and the operator's HPA both resolve to a TransparentProxy /scale", async () => {
  const keda = parse(readFileSync(join(chartDir, 'examples', 'keda-scaledobject.yaml'), 'utf8')) as {
    metadata: { namespace: string };
    spec: { scaleTargetRef: { apiVersion: string; kind: string; name: string } };
  };
  // The recipe's step: /scale can only be read once spec.replicas is set.
  await env.kubectl(['scale', 'tproxy/web', '-n', keda.metadata.namespace, '--replicas=1']);
  const scale = await resolveScale(keda.metadata.namespace, keda.spec.scaleTargetRef);
  assert.equal(scale.spec.replicas, 1);
  assert.equal(
    scale.status.selector,
    'app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=web',
    'the pods KEDA/HPA count',
  );
  await env.kubectl(['apply', '-f', join(repoRoot, 'operator', 'samples', 'autoscaling.yaml')]);
  const hpa = await waitFor(
    "the operator's HPA",
    () => admin.get<Obj>(`/apis/autoscaling/v2/namespaces/${FLEET}/horizontalpodautoscalers/ingress`),
    30_000,
  );
  await resolveScale(FLEET, hpa.spec.scaleTargetRef);
  assert.equal(
    hpa.spec.metrics[0].pods.metric.name,
    'tpfleet_proxy_connections_active',
    'the metric the prometheus-adapter recipe serves',
  );
});

/** Creates a Pod with server-side dry run: admission (Pod Security included) runs, nothing is stored. */
async function dryRunPod(ns: string, spec: unknown): Promise<void> {
  await admin.request('POST', `/api/v1/namespaces/${ns}/pods`, {
    body: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'psa-probe' }, spec },
    query: { dryRun: 'All' },
  });
}

test('Pod Security admission: node pods only in the fleet namespace, the operator pod passes restricted', async () => {
  const node = (await admin.get<Obj>(`/apis/apps/v1/namespaces/${FLEET}/daemonsets/web`))!.spec.template.spec;
  await dryRunPod(FLEET, node);
  await assert.rejects(
    dryRunPod(RELEASE_NS, node),
    (e: unknown) =>
      e instanceof ApiError && e.status === 403 && /violates PodSecurity "restricted:latest"/.test(e.message),
  );
  const op = (await admin.get<Obj>(`/apis/apps/v1/namespaces/${RELEASE_NS}/deployments/tpfleet-operator`))!.spec
    .template.spec;
  await dryRunPod(RELEASE_NS, op);
});

test('NOTES warn when the release namespace does not enforce restricted', async () => {
  await env.kubectl(['create', 'namespace', 'plain']);
  const notes = await helmAdmin([
    'install',
    'probe',
    chartDir,
    '--namespace',
    'plain',
    '--dry-run=server',
    '--set',
    'fleetNamespace.create=false',
    '--set',
    'fleetNamespace.name=elsewhere',
    // One janitor per cluster (its namespace belongs to the first release).
    '--set',
    'janitor.enabled=false',
    // A second release in the cluster: the CRD (cluster-scoped) belongs to the first one.
    '--set',
    'crds.enabled=false',
    // The user ClusterRoles have cluster-wide names: the first release owns them.
    '--set',
    'userRoles.create=false',
  ]);
  assert.match(notes, /WARNING: namespace plain enforces Pod Security "privileged \(no label\)"/);
  assert.match(notes, /kubectl label namespace plain pod-security\.kubernetes\.io\/enforce=restricted/);
});

test('helm uninstall removes the operator objects, keeps the fleet namespace, the CRD and the fleets', async () => {
  await stopOperator();
  await helmAdmin(['uninstall', RELEASE, '--namespace', RELEASE_NS]);
  const left = (
    await env.kubectl([
      'get',
      'deployments,serviceaccounts,services,roles,rolebindings,clusterroles,clusterrolebindings',
      '-A',
      '-l',
      `app.kubernetes.io/instance=${RELEASE}`,
      '-o',
      'name',
    ])
  ).trim();
  assert.equal(left, '', 'nothing of the release is left');
  assert.ok(await admin.get(`/api/v1/namespaces/${FLEET}`), 'fleet namespace kept (helm.sh/resource-policy: keep)');
  assert.ok(
    await admin.get('/apis/apiextensions.k8s.io/v1/customresourcedefinitions/transparentproxies.tpfleet.io'),
    'Helm never deletes CRDs',
  );
  assert.ok(await admin.get(tpPath(FLEET, 'web')), 'TransparentProxies stay');
});
