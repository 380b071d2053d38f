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
import { transparentProxyCrd } from './crd.ts';
import { chartDir, find, helm, RELEASE_NS, runHelm, template, type Doc } from './helm.testkit.ts';

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
      'ClusterRoleBinding',
      'CustomResourceDefinition',
      'Deployment',
      'Namespace',
      'Role',
      'RoleBinding',
      'Service',
      'ServiceAccount',
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
  const { docs } = await template();
  for (const kind of ['ClusterRole', 'Role']) {
    const chart = find(docs, kind),
      manual = find(deploy, kind);
    assert.deepEqual(norm(chart.rules), norm(manual.rules), `${kind} rules`);
    assert.equal(chart.metadata.name, manual.metadata.name, `${kind} name for release "tpfleet"`);
    for (const r of chart.rules as Rule[])
      for (const v of [...r.apiGroups, ...r.resources, ...r.verbs])
        assert.ok(!v.includes('*'), `${kind}: wildcard in ${JSON.stringify(r)}`);
  }
  const sa = find(docs, 'ServiceAccount');
  for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
    assert.deepEqual(
      find(docs, kind).subjects,
      [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: RELEASE_NS }],
      `${kind} binds the chart's ServiceAccount`,
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
  assert.equal(pod.serviceAccountName, find(docs, 'ServiceAccount').metadata.name);
  const svc = find(docs, 'Service');
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
    configHash: 'h',
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
