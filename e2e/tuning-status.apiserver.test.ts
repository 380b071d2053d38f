// Node tuning in the TransparentProxy's status, end to end against a real kube-apiserver: the node
// agent's publisher (daemonset/tuning-publish.ts), authenticated as the fleet's ServiceAccount
// (client certificate for system:serviceaccount:<ns>:<name> in the service-account groups, which
// RBAC matches exactly like a token), patches the condition on its own pod through the Role the
// operator rendered, and may not touch pods elsewhere; the operator shows it in status.nodes[] and
// Degraded. No kubelet or DaemonSet controller runs here: the test creates the proxy pods from the
// DaemonSet's template and writes their Ready condition and the DaemonSet status as those would.
// The agent's kernel values are real files of a temporary tree (the engine's `root` option), so
// drift is made by writing a file, as another tool on the node would.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { applyTuning, sysctlPath, type AffinityPlan, type TuningPlan } from '../daemonset/tuning/index.ts';
import { AGENT_FIELD_MANAGER, TuningPublisher, tuningTick } from '../daemonset/tuning-publish.ts';
import { policyTick, scrapeMetrics } from '../daemonset/policy-publish.ts';
import { POLICY_CONDITION_TYPE } from '../api/policy-condition.ts';
import { buildReport, writeReport } from '../daemonset/tuning-report.ts';
import { tuningCondition } from '../api/tuning-condition.ts';
import { ApiError, KubeClient, type KubeObject } from '../kube/client.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from './testenv/fixtures.ts';
import { startOperator, type RunningOperator } from './testenv/operator.ts';
import { startTestEnv, type TestEnv } from './testenv/testenv.ts';

let env: TestEnv, c: KubeClient, op: RunningOperator, agent: KubeClient, root: string;
const NS = 'fleet',
  OTHER = 'elsewhere';
type Obj = KubeObject & { spec?: any; status?: any; rules?: unknown; subjects?: unknown };
const log = pino({ level: process.env.TPFLEET_TEST_LOG ?? 'silent' });
const somaxconn = () => join(root, sysctlPath('net.core.somaxconn'));
const stateDir = () => join(root, 'state');

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-admin');
  await installCrd(c);
  await createNamespace(c, NS);
  await createNamespace(c, OTHER);
  for (const n of ['n1', 'n2']) await createNode(c, n, { zone: 'z1' });
  op = await startOperator(env.kubeconfigPath);
  const kc = new KubeConfig();
  kc.loadFromFile(
    await env.userKubeconfig(`system:serviceaccount:${NS}:web`, [
      'system:serviceaccounts',
      `system:serviceaccounts:${NS}`,
      'system:authenticated',
    ]),
  );
  agent = new KubeClient(kc, AGENT_FIELD_MANAGER);
  root = mkdtempSync(join(tmpdir(), 'tpfleet-tuning-status-'));
  mkdirSync(join(somaxconn(), '..'), { recursive: true });
  writeFileSync(somaxconn(), '128\n');
});
after(async () => {
  await op?.stop();
  await env?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

const tp = () => c.get<Obj>(tpPath(NS, 'web'));
const cond = (o: Obj | undefined, type: string) =>
  o?.status?.conditions?.find((x: { type: string }) => x.type === type);
const nodeTuning = (o: Obj | undefined, node: string) =>
  o?.status?.nodes?.find((n: { name: string }) => n.name === node)?.tuning;
const podPath = (ns: string, name: string) => `/api/v1/namespaces/${ns}/pods/${name}`;

/** A proxy pod as the DaemonSet controller creates it, Ready as the kubelet reports it. */
async function createProxyPod(ds: Obj, node: string): Promise<void> {
  await c.create(`/api/v1/namespaces/${NS}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `web-${node}`, labels: ds.spec.template.metadata.labels },
    spec: { ...ds.spec.template.spec, nodeName: node },
  });
  await c.mergePatch(`${podPath(NS, `web-${node}`)}/status`, {
    status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
  });
}

/** What `tpfleet-agent apply` leaves in the state dir: the real engine on the test tree. */
function agentApply(): void {
  const plan: TuningPlan = {
    sysctls: [],
    writes: [
      {
        key: 'net.core.somaxconn',
        path: sysctlPath('net.core.somaxconn'),
        value: '4096',
        compare: 'words',
        group: 'sysctl',
      },
    ],
    affinity: {
      irqbalance: { running: false, required: null, conflict: null },
      problems: [],
      notes: [],
    } as unknown as AffinityPlan,
  };
  writeReport(stateDir(), buildReport(plan, applyTuning(plan, { stateDir: stateDir(), root })));
}

test('the operator grants the fleet account pods/status get+patch in its namespace only (owned Role + RoleBinding)', async () => {
  const created = await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'web' },
    spec: { tuning: { sysctls: { profile: 'throughput' } } },
  });
  const rbac = '/apis/rbac.authorization.k8s.io/v1/namespaces/fleet';
  const role = await waitFor('Role', () => c.get<Obj>(`${rbac}/roles/web-node-agent`));
  const binding = await waitFor('RoleBinding', () => c.get<Obj>(`${rbac}/rolebindings/web-node-agent`));
  assert.deepEqual(role.rules, [
    { apiGroups: [''], resources: ['pods/status'], verbs: ['get', 'patch'] },
    // Its fleet's ConfigMap alone, to reload in place (e2e/reload-status.apiserver.test.ts).
    { apiGroups: [''], resources: ['configmaps'], resourceNames: ['web-nodeconfig'], verbs: ['get', 'watch'] },
  ]);
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'web', namespace: NS }]);
  for (const o of [role, binding]) assert.equal(o.metadata.ownerReferences?.[0]?.uid, created.metadata.uid);
  const ds = await waitFor('DaemonSet', () => c.get<Obj>(`/apis/apps/v1/namespaces/${NS}/daemonsets/web`));
  for (const n of ['n1', 'n2']) await createProxyPod(ds, n);
  await c.create(`/api/v1/namespaces/${OTHER}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'bystander' },
    spec: { nodeName: 'n1', containers: [{ name: 'c', image: 'x' }] },
  });
  await c.mergePatch(`/apis/apps/v1/namespaces/${NS}/daemonsets/web/status`, {
    status: {
      observedGeneration: ds.metadata.generation,
      desiredNumberScheduled: 2,
      currentNumberScheduled: 2,
      updatedNumberScheduled: 2,
      numberReady: 2,
      numberMisscheduled: 0,
    },
  });
  await waitFor('Ready', async () => cond(await tp(), 'Ready')?.status === 'True');
});

test('the agent publishes Applied on its own pod (kubelet conditions kept), once; the operator shows it per node', async () => {
  agentApply();
  const pub = new TuningPublisher(agent, { namespace: NS, name: 'web-n1' });
  const published = await tuningTick({ stateDir: stateDir(), root }, pub, log);
  assert.equal(published?.reason, 'Applied');
  const pod = (await c.get<Obj>(podPath(NS, 'web-n1')))!;
  const conds = pod.status.conditions.map((x: any) => [x.type, x.status, x.reason]);
  assert.deepEqual(conds.sort(), [
    ['Ready', 'True', undefined],
    ['tpfleet.io/Tuning', 'True', 'Applied'],
  ]);
  // Steady state: another tick (and a fresh publisher, as after a container restart) writes nothing.
  await tuningTick({ stateDir: stateDir(), root }, pub, log, published);
  assert.equal(await new TuningPublisher(agent, { namespace: NS, name: 'web-n1' }).publish(published!), false);
  assert.equal((await c.get<Obj>(podPath(NS, 'web-n1')))!.metadata.resourceVersion, pod.metadata.resourceVersion);
  const t = await waitFor('status.nodes tuning', async () => {
    const o = await tp();
    return nodeTuning(o, 'n1')?.reason === 'Applied' && o;
  });
  assert.deepEqual(nodeTuning(t, 'n1'), { reason: 'Applied', message: '1 value applied' });
  assert.equal(nodeTuning(t, 'n2'), undefined, 'no report from n2 yet');
  assert.equal(cond(t, 'Degraded').status, 'False');
});

test('the fleet account may not patch pods of another namespace, nor any pod spec', async () => {
  const cond0 = tuningCondition('Applied', 'forged');
  await assert.rejects(
    new TuningPublisher(agent, { namespace: OTHER, name: 'bystander' }).publish(cond0),
    (e) => e instanceof ApiError && e.status === 403,
  );
  await assert.rejects(
    agent.mergePatch(podPath(NS, 'web-n2'), { metadata: { labels: { x: 'y' } } }),
    (e) => e instanceof ApiError && e.status === 403,
  );
  const bystander = (await c.get<Obj>(podPath(OTHER, 'bystander')))!;
  assert.equal(
    bystander.status?.conditions?.some((x: { type: string }) => x.type === 'tpfleet.io/Tuning') ?? false,
    false,
  );
});

test('drift on a node flips Degraded naming the node and key; a repaired value flips it back', async () => {
  const pub = new TuningPublisher(agent, { namespace: NS, name: 'web-n1' });
  writeFileSync(somaxconn(), '512\n'); // someone else on the node
  assert.equal((await tuningTick({ stateDir: stateDir(), root }, pub, log))?.reason, 'TuningDrift');
  let t = await waitFor('Degraded TuningDrift', async () => {
    const o = await tp();
    return cond(o, 'Degraded')?.reason === 'TuningDrift' && o;
  });
  assert.equal(cond(t, 'Degraded').status, 'True');
  assert.equal(
    cond(t, 'Degraded').message,
    'tuning on 1 node: n1: TuningDrift: drifted: net.core.somaxconn want 4096 got 512',
  );
  assert.deepEqual(nodeTuning(t, 'n1'), {
    reason: 'TuningDrift',
    message: 'drifted: net.core.somaxconn want 4096 got 512',
  });
  assert.equal(cond(t, 'Ready').status, 'True', 'tuning drift degrades, the data path stays ready');
  writeFileSync(somaxconn(), '4096\n');
  await tuningTick({ stateDir: stateDir(), root }, pub, log);
  t = await waitFor('Degraded cleared', async () => {
    const o = await tp();
    return cond(o, 'Degraded')?.status === 'False' && o;
  });
  assert.equal(cond(t, 'Degraded').reason, 'AsExpected');
  assert.equal(nodeTuning(t, 'n1').reason, 'Applied');
});

test('policy decision totals: the agent publishes them beside the tuning condition; the operator shows them per node', async () => {
  // The sidecar's /metrics as sidecar/egress.ts writes it, served on loopback (the real sidecar's
  // counters reach status on local-real, e2e/cluster/cluster.test.ts).
  let deny = 3;
  const metrics = () =>
    [
      '# TYPE tpfleet_proxy_policy_decisions_total counter',
      'tpfleet_proxy_policy_decisions_total{rule="default",action="allow"} 40',
      `tpfleet_proxy_policy_decisions_total{rule="deny-one",action="deny"} ${deny}`,
      'tpfleet_proxy_policy_decisions_total{rule="via",action="forward"} 2',
      '',
    ].join('\n');
  const server = http.createServer((_q, r) => r.end(metrics()));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    const pub = new TuningPublisher(agent, { namespace: NS, name: 'web-n2' }, undefined, POLICY_CONDITION_TYPE);
    assert.deepEqual(await policyTick(() => scrapeMetrics(port), pub, log), {
      allow: 40,
      deny: 3,
      forward: 2,
      limited: 0,
    });
    const decisions = (o: Obj | undefined) => o?.status?.nodes?.find((n: { name: string }) => n.name === 'n2')?.policy;
    await waitFor('status.nodes[n2].policy', async () => decisions(await tp())?.deny === 3);
    assert.deepEqual(decisions(await tp()), { allow: 40, deny: 3, forward: 2, limited: 0 });
    // Unchanged totals write nothing; changed ones are published again.
    const rv = (await c.get<Obj>(podPath(NS, 'web-n2')))!.metadata.resourceVersion;
    await policyTick(() => scrapeMetrics(port), pub, log);
    assert.equal((await c.get<Obj>(podPath(NS, 'web-n2')))!.metadata.resourceVersion, rv);
    deny = 4;
    await policyTick(() => scrapeMetrics(port), pub, log);
    await waitFor('deny 4', async () => decisions(await tp())?.deny === 4);
    // A sidecar that cannot be read publishes nothing (and does not throw).
    assert.equal(await policyTick(() => scrapeMetrics(1), pub, log), undefined);
  } finally {
    server.close();
  }
});
