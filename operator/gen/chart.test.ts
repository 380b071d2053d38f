// charts/tpfleet with the real helm (no cluster): lint, golden renderings, values the schema or
// the templates refuse (naming the field), RBAC parity with operator/deploy/rbac.yaml, and the
// restricted security context of the operator. The install is chart.apiserver.test.ts.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { assertGolden } from '../../e2e/golden.ts';
import { renderDaemonSet } from '../render/daemonset.ts';
import { commonLabels } from '../render/names.ts';
import { renderNodeConfig } from '../render/nodeconfig.ts';
import { webhookConfiguration } from '../webhook/registration.ts';
import { WEBHOOK_PATH } from '../webhook/server.ts';
import { transparentProxyCrd } from './crd.ts';
import { chartDir, find, helm, RELEASE_NS, runHelm, template, type Doc } from './helm.testkit.ts';

/** The node janitor's objects (ADR 0015): not the operator's, tested on their own. */
const isJanitor = (d: Doc) => d.metadata.name === 'tpfleet-janitor';

const FULL = join(chartDir, 'ci', 'full-values.yaml');
const goldenDir = join(import.meta.dirname, 'testdata', 'chart');

const golden = (name: string, text: string) => assertGolden(join(goldenDir, name), text);

test('helm lint --strict passes with the default values and with every value set (ci/full-values.yaml)', async () => {
  for (const extra of [[], ['--values', FULL]]) {
    const out = await helm(['lint', '--strict', chartDir, ...extra]);
    assert.match(out, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  }
});

test('helm template renders the golden files (default and full values)', async () => {
  const def = await template();
  golden('default.yaml', def.text);
  assert.deepEqual(
    def.docs.map((d) => d.kind).sort(),
    [
      'ClusterRole',
      'ClusterRole',
      'ClusterRole',
      'ClusterRole',
      'ClusterRole',
      'ClusterRole',
      'ClusterRoleBinding',
      'ClusterRoleBinding',
      'CustomResourceDefinition',
      'DaemonSet',
      'Deployment',
      'Namespace',
      'Namespace',
      'Role',
      'Role',
      'RoleBinding',
      'RoleBinding',
      'RoleBinding',
      'Service',
      'Service',
      'ServiceAccount',
      'ServiceAccount',
      'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicyBinding',
      'ValidatingAdmissionPolicyBinding',
      'ValidatingWebhookConfiguration',
    ],
    'monitors are off by default',
  );
  const full = await template(['--values', FULL]);
  golden('full.yaml', full.text);
  assert.ok(full.docs.some((d) => d.kind === 'ServiceMonitor') && full.docs.some((d) => d.kind === 'PodMonitor'));
});

test('the CRD is a template: the generated CRD with the release labels, kept on uninstall unless crds.keep=false, absent with crds.enabled=false', async () => {
  const crdName = 'transparentproxies.tpfleet.io';
  const { docs } = await template();
  const crd = find(docs, 'CustomResourceDefinition', crdName);
  const { labels, annotations, ...meta } = crd.metadata;
  assert.deepEqual({ ...crd, metadata: meta }, transparentProxyCrd(), 'the same CRD as crds/ (one source)');
  assert.equal(labels?.['app.kubernetes.io/managed-by'], 'Helm');
  assert.deepEqual(annotations, { 'helm.sh/resource-policy': 'keep' });
  const loose = find((await template(['--set', 'crds.keep=false'])).docs, 'CustomResourceDefinition', crdName);
  assert.equal(loose.metadata.annotations, undefined, 'crds.keep=false: helm uninstall deletes it');
  const none = await template(['--set', 'crds.enabled=false']);
  assert.ok(!none.docs.some((d) => d.kind === 'CustomResourceDefinition'), 'crds.enabled=false: no CRD');
  assert.ok(
    none.docs.some((d) => d.kind === 'Deployment'),
    'the rest still renders',
  );
});

const BAD: { why: string; set: string[]; error: RegExp }[] = [
  { why: 'wrong type', set: ['operator.replicas=two'], error: /\/operator\/replicas.*got string, want integer/ },
  {
    why: 'crds.enabled not a boolean',
    set: ['crds.enabled=maybe'],
    error: /\/crds\/enabled.*got string, want boolean/,
  },
  {
    why: 'unknown key (typo)',
    set: ['operator.replicass=2'],
    error: /\/operator.*additional properties 'replicass' not allowed/,
  },
  { why: 'unknown top-level key', set: ['image.tag=1'], error: /additional properties 'image' not allowed/ },
  { why: 'replicas above the range', set: ['operator.replicas=9'], error: /\/operator\/replicas.*maximum/ },
  { why: 'replicas 0', set: ['operator.replicas=0'], error: /\/operator\/replicas.*minimum/ },
  {
    why: 'bad image pull policy',
    set: ['operator.image.pullPolicy=Sometimes'],
    error: /\/operator\/image\/pullPolicy.*one of 'Always', 'IfNotPresent', 'Never'/,
  },
  { why: 'bad duration', set: ['operator.cleanupTimeout=5min'], error: /\/operator\/cleanupTimeout/ },
  { why: 'bad log level', set: ['operator.logLevel=verbose'], error: /\/operator\/logLevel/ },
  { why: 'bad namespace name', set: ['fleetNamespace.name=Fleet_NS'], error: /\/fleetNamespace\/name/ },
  { why: 'digest not sha256', set: ['node.image.digest=md5:abc'], error: /\/node\/image\/digest/ },
  { why: 'privileged port', set: ['operator.port=80'], error: /\/operator\/port.*minimum/ },
  {
    why: 'node pull policy is per TransparentProxy',
    set: ['node.image.pullPolicy=Never'],
    error: /\/node\/image.*additional properties 'pullPolicy'/,
  },
  {
    why: 'two replicas without leader election',
    set: ['operator.leaderElect=false'],
    error: /operator\.leaderElect: must be true when operator\.replicas > 1/,
  },
  {
    why: 'fleet namespace = release namespace',
    set: [`fleetNamespace.name=${RELEASE_NS}`],
    error: /fleetNamespace\.name: "tpfleet-system" is the release namespace/,
  },
];

test(`${BAD.length} bad values are refused by helm template naming the field`, async () => {
  const failures: string[] = [];
  for (const bad of BAD) {
    const r = await runHelm([
      'template',
      'tpfleet',
      chartDir,
      '--namespace',
      RELEASE_NS,
      ...bad.set.flatMap((s) => ['--set', s]),
    ]);
    if (r.code === 0) failures.push(`${bad.why}: rendered`);
    else if (!bad.error.test(r.stderr)) failures.push(`${bad.why}: ${r.stderr.trim()}`);
  }
  assert.deepEqual(failures, []);
  // One leader is allowed without election.
  await template(['--set', 'operator.replicas=1', '--set', 'operator.leaderElect=false']);
});

type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };
const norm = (rules: Rule[]) =>
  rules
    .map((r) => ({
      apiGroups: [...r.apiGroups].sort(),
      resources: [...r.resources].sort(),
      verbs: [...r.verbs].sort(),
      resourceNames: r.resourceNames,
    }))
    .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

test('RBAC parity: the chart grants exactly operator/deploy/rbac.yaml (ClusterRole and leader-election Role), no wildcards', async () => {
  const deploy = parseAllDocuments(readFileSync(join(import.meta.dirname, '..', 'deploy', 'rbac.yaml'), 'utf8')).map(
    (d) => d.toJS() as Doc,
  );
  const users = parseAllDocuments(
    readFileSync(join(import.meta.dirname, '..', 'deploy', 'user-roles.yaml'), 'utf8'),
  ).map((d) => d.toJS() as Doc);
  const { docs } = await template();
  const roles = (ds: Doc[]) =>
    Object.fromEntries(
      ds
        .filter((d) => (d.kind === 'ClusterRole' || d.kind === 'Role') && !isJanitor(d))
        .map((d) => [`${d.kind}/${d.metadata.name}`, d]),
    );
  const chart = roles(docs),
    manual = roles([...deploy, ...users]);
  assert.deepEqual(
    Object.keys(chart).sort(),
    Object.keys(manual).sort(),
    'the same roles, by name for release "tpfleet"',
  );
  for (const [key, role] of Object.entries(chart)) {
    assert.deepEqual(norm(role.rules), norm(manual[key]!.rules), `${key} rules`);
    for (const r of role.rules as Rule[])
      for (const v of [...r.apiGroups, ...r.resources, ...r.verbs])
        assert.ok(!v.includes('*'), `${key}: wildcard in ${JSON.stringify(r)}`);
  }
  assert.deepEqual(
    chart['ClusterRole/tpfleet-view']?.metadata.labels?.['rbac.authorization.k8s.io/aggregate-to-view'],
    'true',
  );
  // The janitor's own ServiceAccount and role are checked in the janitor's test below.
  const sa = find(docs, 'ServiceAccount', 'tpfleet-operator');
  for (const b of docs.filter((d) => (d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding') && !isJanitor(d))) {
    assert.deepEqual(
      b.subjects,
      [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: RELEASE_NS }],
      `${b.kind} ${b.metadata.name} binds the chart's ServiceAccount`,
    );
  }
});

test('the operator Deployment: restricted security context, probes, flags from values, lease in the release namespace', async () => {
  const { docs } = await template([
    '--set',
    'node.image.tag=9.9.9',
    '--set',
    'operator.logLevel=debug',
    '--set',
    'operator.cleanupTimeout=2m',
  ]);
  const d = find(docs, 'Deployment');
  const pod = d.spec.template.spec,
    c = pod.containers[0];
  assert.equal(c.name, 'operator');
  assert.equal(d.spec.replicas, 2);
  assert.deepEqual(c.args, [
    '--image=ghcr.io/tpfleet/tpfleet-node:9.9.9',
    '--leader-elect=true',
    `--lease-namespace=${RELEASE_NS}`,
    '--lease-name=tpfleet-operator',
    '--log-level=debug',
    '--cleanup-timeout=2m',
    '--resync=10m',
    '--workers=2',
    '--bind=0.0.0.0:8080',
    '--namespaces=tpfleet-fleet',
    '--allow-control-plane=false',
    '--webhook-bind=0.0.0.0:9443',
    '--webhook-config=tpfleet-operator',
    `--webhook-secret=${RELEASE_NS}/tpfleet-operator-webhook-tls`,
    `--webhook-hosts=tpfleet-operator-webhook.${RELEASE_NS}.svc`,
    '--webhook-cert-validity=720h',
    '--webhook-ca-validity=8760h',
  ]);
  assert.equal(c.image, 'ghcr.io/tpfleet/tpfleet-operator:0.1.0', 'tag defaults to appVersion');
  assert.deepEqual(pod.securityContext, {
    runAsNonRoot: true,
    runAsUser: 65532,
    runAsGroup: 65532,
    seccompProfile: { type: 'RuntimeDefault' },
  });
  assert.deepEqual(c.securityContext, {
    runAsNonRoot: true,
    runAsUser: 65532,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  });
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(pod.serviceAccountName, find(docs, 'ServiceAccount', 'tpfleet-operator').metadata.name);
  const svc = docs.find((x) => x.kind === 'Service' && x.metadata.name === 'tpfleet-operator-metrics')!;
  assert.deepEqual(svc.spec.selector, d.spec.selector.matchLabels, 'the metrics Service selects the operator pods');
  assert.equal(
    d.spec.selector.matchLabels['app.kubernetes.io/component'],
    'operator',
    'never the node pods (instance = TransparentProxy name)',
  );
});

/**
 * Prometheus relabeling as it applies the PodMonitor's rules to one pod-role target (keep and
 * replace; regexes fully anchored, source values joined with ";"). undefined: the target is dropped.
 */
function relabel(
  rules: { sourceLabels: string[]; regex: string; action?: string; replacement?: string; targetLabel?: string }[],
  labels: Record<string, string>,
) {
  const out = { ...labels };
  for (const r of rules) {
    const value = r.sourceLabels.map((l) => out[l] ?? '').join(';');
    const m = new RegExp(`^(?:${r.regex})$`).exec(value);
    if ((r.action ?? 'replace') === 'keep') {
      if (!m) return undefined;
      continue;
    }
    if (m) out[r.targetLabel!] = r.replacement!.replace(/\$(\d)/g, (_, d: string) => m[Number(d)] ?? '');
  }
  return out;
}

test("PodMonitor scrapes each node pod's sidecar at the port its annotation names (no declared port)", async () => {
  const { docs } = await template([
    '--set',
    'metrics.podMonitor.enabled=true',
    '--set',
    'metrics.podMonitor.namespaces={more}',
  ]);
  const pm = find(docs, 'PodMonitor');
  const podLabels = commonLabels('web');
  for (const [k, v] of Object.entries(pm.spec.selector.matchLabels as Record<string, string>))
    assert.equal(podLabels[k as keyof typeof podLabels], v, `node pods carry ${k}=${v}`);
  assert.deepEqual(pm.spec.namespaceSelector.matchNames, ['tpfleet-fleet', 'more']);
  const ep = pm.spec.podMetricsEndpoints[0];
  assert.equal(ep.port, undefined, 'the pods declare no port (a hostPort would block the surge rollout)');
  const r = renderNodeConfig({ proxy: { metricsPort: 19999 } });
  assert.ok(r.ok);
  const ds = renderDaemonSet({
    tp: {
      apiVersion: 'tpfleet.io/v1alpha1',
      kind: 'TransparentProxy',
      metadata: { name: 'web', namespace: 'tpfleet-fleet', uid: 'u' },
    },
    spec: r.value.spec,
    proxy: r.value.config.proxy,
    podHash: 'h',
    defaultImage: 'img',
    mode: 'run',
  }) as Doc;
  const annotations = ds.spec.template.metadata.annotations as Record<string, string>;
  // Prometheus' pod role: one target per container without ports, __address__ the pod IP;
  // annotation names become label names with every other character replaced by "_".
  const meta = Object.fromEntries(
    Object.entries(annotations).map(([k, v]) => [
      `__meta_kubernetes_pod_annotation_${k.replace(/[^a-zA-Z0-9_]/g, '_')}`,
      v,
    ]),
  );
  const targets = (podIp: string) =>
    ds.spec.template.spec.containers
      .map((c: { name: string }) =>
        relabel(ep.relabelings, {
          ...meta,
          __address__: podIp,
          __meta_kubernetes_pod_ip: podIp,
          __meta_kubernetes_pod_container_name: c.name,
        }),
      )
      .filter((t: unknown) => t)
      .map((t: Record<string, string>) => t.__address__);
  assert.deepEqual(targets('10.0.0.7'), ['10.0.0.7:19999'], 'one target per pod: the sidecar, at its metrics port');
  assert.deepEqual(targets('fd00::7'), ['[fd00::7]:19999'], 'IPv6 node addresses in brackets');
});

test('the node janitor: its own privileged namespace, every Linux node, one verb (list transparentproxies)', async () => {
  const { docs } = await template();
  const ns = find(docs, 'Namespace', 'tpfleet-janitor');
  assert.equal(ns.metadata.labels?.['pod-security.kubernetes.io/enforce'], 'privileged');
  // daemonset/main.ts runJanitor makes exactly one kind of request: LIST transparentproxies.
  assert.deepEqual(find(docs, 'ClusterRole', 'tpfleet-janitor').rules, [
    { apiGroups: ['tpfleet.io'], resources: ['transparentproxies'], verbs: ['list'] },
  ]);
  assert.deepEqual(find(docs, 'ClusterRoleBinding', 'tpfleet-janitor').subjects, [
    { kind: 'ServiceAccount', name: 'tpfleet-janitor', namespace: 'tpfleet-janitor' },
  ]);
  const pod = find(docs, 'DaemonSet', 'tpfleet-janitor').spec.template.spec;
  assert.equal(pod.hostNetwork, true);
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  assert.deepEqual(pod.containers[0].command, [
    'tpfleet-agent',
    'janitor',
    '--state-dir=/run/tpfleet',
    '--state-copy-dir=/var/lib/tpfleet',
    '--status-interval=30',
  ]);
  assert.equal(pod.volumes[0].hostPath.path, '/run/tpfleet');
  const off = await template(['--set', 'janitor.enabled=false']);
  assert.ok(!off.docs.some((d) => d.metadata.name === 'tpfleet-janitor'));
  const same = await runHelm([
    'template',
    'tpfleet',
    chartDir,
    '-n',
    RELEASE_NS,
    '--set',
    'janitor.namespace=tpfleet-fleet',
  ]);
  assert.match(same.stderr, /janitor\.namespace: "tpfleet-fleet" must differ/);
});

test('the webhook: the chart registers operator/webhook/registration.ts for its Service, caBundle left to the operator', async () => {
  const { docs } = await template();
  const vwc = find(docs, 'ValidatingWebhookConfiguration');
  const want = webhookConfiguration('tpfleet-operator', {
    service: { namespace: RELEASE_NS, name: 'tpfleet-operator-webhook', port: 443, path: WEBHOOK_PATH },
  });
  assert.deepEqual(vwc.webhooks, want.webhooks);
  assert.equal(want.webhooks[0]?.failurePolicy, 'Fail');
  const svc = docs.find((x) => x.kind === 'Service' && x.metadata.name === 'tpfleet-operator-webhook')!;
  assert.deepEqual(svc.spec.ports, [{ name: 'webhook', port: 443, targetPort: 'webhook', protocol: 'TCP' }]);
  const c = find(docs, 'Deployment').spec.template.spec.containers[0];
  assert.ok(
    c.ports.some((p: { name: string; containerPort: number }) => p.name === 'webhook' && p.containerPort === 9443),
  );
  // More namespaces and an image allowlist reach the flags.
  const more = await template([
    '--set',
    'tenancy.namespaces={team-a,tpfleet-fleet}',
    '--set',
    'tenancy.allowedImages={registry.corp/tpfleet-node:}',
    '--set',
    'tenancy.allowControlPlane=true',
  ]);
  const args: string[] = find(more.docs, 'Deployment').spec.template.spec.containers[0].args;
  assert.ok(args.includes('--namespaces=tpfleet-fleet,team-a'), args.join(' '));
  // The operator may write fleet objects exactly in the namespaces it reconciles.
  assert.deepEqual(
    more.docs
      .filter((d) => d.kind === 'RoleBinding' && d.metadata.name === 'tpfleet-operator-fleet')
      .map((d) => d.metadata.namespace),
    ['tpfleet-fleet', 'team-a'],
  );
  assert.ok(args.includes('--allowed-images=registry.corp/tpfleet-node:'));
  assert.ok(args.includes('--allow-control-plane=true'));
});

test("the node-write policy: operator/deploy/node-write-policy.yaml for the release's ServiceAccount", async () => {
  const manual = parseAllDocuments(
    readFileSync(join(import.meta.dirname, '..', 'deploy', 'node-write-policy.yaml'), 'utf8'),
  ).map((d) => d.toJS() as Doc);
  const { docs } = await template();
  const vap = find(docs, 'ValidatingAdmissionPolicy', 'tpfleet-operator-node-writes'),
    want = find(manual, 'ValidatingAdmissionPolicy');
  assert.equal(
    vap.spec.matchConditions[0].expression,
    `request.userInfo.username == 'system:serviceaccount:${RELEASE_NS}:tpfleet-operator'`,
  );
  assert.deepEqual({ ...vap.spec, matchConditions: [] }, { ...want.spec, matchConditions: [] });
  assert.deepEqual(
    find(docs, 'ValidatingAdmissionPolicyBinding', 'tpfleet-operator-node-writes').spec,
    find(manual, 'ValidatingAdmissionPolicyBinding').spec,
  );
});

test('the agent pod-status policy: operator/deploy/agent-pod-status-policy.yaml, the same rules', async () => {
  const manual = parseAllDocuments(
    readFileSync(join(import.meta.dirname, '..', 'deploy', 'agent-pod-status-policy.yaml'), 'utf8'),
  ).map((d) => d.toJS() as Doc);
  const { docs } = await template();
  for (const kind of ['ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']) {
    const want = find(manual, kind, 'tpfleet-agent-pod-status');
    assert.deepEqual(find(docs, kind, 'tpfleet-agent-pod-status').spec, want.spec, kind);
  }
  // Its match is on the labels the operator renders on every node pod.
  assert.equal(commonLabels('x')['app.kubernetes.io/managed-by'], 'tpfleet-operator');
  assert.match(
    find(manual, 'ValidatingAdmissionPolicy').spec.matchConditions[0].expression,
    /'app\.kubernetes\.io\/managed-by'\] == 'tpfleet-operator'/,
  );
});
