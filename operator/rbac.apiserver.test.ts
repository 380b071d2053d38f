// operator/deploy/rbac.yaml is sufficient: the operator runs as a user bound to exactly those
// roles (the bindings' ServiceAccount subject is swapped for that user) through a full lifecycle:
// create with replicas and autoscaling, scale, delete with the finalizer, and leader election.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { parseAllDocuments } from 'yaml';
import { KubeClient, resourcePath, type KubeObject } from '../kube/client.ts';
import { LeaderElector } from './leader.ts';
import { errorMessage } from '../api/errors.ts';
import { INTERCEPTION_TAINT } from '../api/defaults.ts';
import { activeLabelKey, commonLabels, FIELD_MANAGER } from './render/names.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { startOperator, type RunningOperator } from '../e2e/testenv/operator.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

let env: TestEnv, admin: KubeClient, op: RunningOperator, userConfig: string;
const USER = 'tpfleet-operator-under-test';
type Obj = KubeObject & { spec?: any; status?: any; subjects?: unknown[]; roleRef?: unknown; rules?: unknown[] };

const PATHS: Record<string, string> = {
  ServiceAccount: '/api/v1/namespaces/tpfleet-system/serviceaccounts',
  ClusterRole: '/apis/rbac.authorization.k8s.io/v1/clusterroles',
  ClusterRoleBinding: '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
  Role: '/apis/rbac.authorization.k8s.io/v1/namespaces/tpfleet-system/roles',
  RoleBinding: '/apis/rbac.authorization.k8s.io/v1/namespaces/tpfleet-system/rolebindings',
};

before(async () => {
  env = await startTestEnv();
  admin = new KubeClient(env.kubeConfig, 'test-admin');
  await installCrd(admin);
  await createNamespace(admin, 'tpfleet-system');
  await createNamespace(admin, 'apps');
  for (const n of ['p1', 'p2', 'p3']) await createNode(admin, n, { zone: n });
  const docs = parseAllDocuments(readFileSync(join(import.meta.dirname, 'deploy', 'rbac.yaml'), 'utf8')).map(
    (d) => d.toJS() as Obj,
  );
  for (const doc of docs) {
    if (doc.subjects) doc.subjects = [{ kind: 'User', name: USER, apiGroup: 'rbac.authorization.k8s.io' }];
    await admin.create(PATHS[doc.kind!]!, doc);
  }
  // The node-write policy, for this test's user in place of the chart's ServiceAccount.
  const policy = parseAllDocuments(
    readFileSync(join(import.meta.dirname, 'deploy', 'node-write-policy.yaml'), 'utf8'),
  ).map((d) => d.toJS() as Obj & { spec: any });
  const vap = policy[0]!;
  vap.spec.matchConditions[0].expression = `request.userInfo.username == '${USER}'`;
  await admin.create('/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies', vap);
  await admin.create('/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings', policy[1]);
  userConfig = await env.userKubeconfig(USER);
  op = await startOperator(userConfig);
});
after(async () => {
  await op?.stop();
  await env?.stop();
});

test('the operator works end to end with only the permissions in deploy/rbac.yaml', async () => {
  await admin.create(tpPath('apps'), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'p' },
    spec: { replicas: 2, autoscaling: { enabled: true, maxReplicas: 3 } },
  });
  const t = await waitFor('reconciled', async () => {
    const o = await admin.get<Obj>(tpPath('apps', 'p'));
    return o?.status?.replicas === 2 && o;
  });
  assert.equal(t.status.conditions.find((c: { type: string }) => c.type === 'InvalidSpec').status, 'False');
  for (const p of [
    '/apis/apps/v1/namespaces/apps/daemonsets/p',
    '/api/v1/namespaces/apps/configmaps/p-nodeconfig',
    '/api/v1/namespaces/apps/services/p-metrics',
    '/apis/autoscaling/v2/namespaces/apps/horizontalpodautoscalers/p',
    // The node agent's Role/RoleBinding: granting pods/status needs the operator to hold it (escalation check).
    '/apis/rbac.authorization.k8s.io/v1/namespaces/apps/roles/p-node-agent',
    '/apis/rbac.authorization.k8s.io/v1/namespaces/apps/rolebindings/p-node-agent',
  ]) {
    assert.ok(await admin.get(p), p);
  }
  await admin.mergePatch(tpPath('apps', 'p', 'scale'), { spec: { replicas: 3 } });
  await waitFor(
    '3 labeled nodes',
    async () =>
      (await admin.list('/api/v1/nodes', { labelSelector: `${activeLabelKey('apps', 'p')}=true` })).items.length === 3,
  );
  await interceptionTaint();
  await admin.mergePatch(tpPath('apps', 'p'), { spec: { autoscaling: { enabled: false } } });
  await waitFor(
    'HPA deleted',
    async () => !(await admin.get('/apis/autoscaling/v2/namespaces/apps/horizontalpodautoscalers/p')),
  );
  await admin.delete(tpPath('apps', 'p'));
  await waitFor(
    'cleanup mode',
    async () =>
      (await admin.get<Obj>('/apis/apps/v1/namespaces/apps/daemonsets/p'))?.spec.template.metadata.annotations[
        'tpfleet.io/mode'
      ] === 'cleanup',
  );
  // The DaemonSet controller's aggregation of the nodes' "cleanup done" (written as it would).
  const ds = (await admin.get<Obj>('/apis/apps/v1/namespaces/apps/daemonsets/p'))!;
  await admin.mergePatch('/apis/apps/v1/namespaces/apps/daemonsets/p/status', {
    status: {
      observedGeneration: ds.metadata.generation,
      desiredNumberScheduled: 3,
      currentNumberScheduled: 3,
      updatedNumberScheduled: 3,
      numberReady: 3,
      numberMisscheduled: 0,
    },
  });
  await waitFor('deleted', async () => !(await admin.get(tpPath('apps', 'p'))));
  assert.deepEqual(await tainted(), [], 'the readiness taint goes with the object');
  assert.equal(
    (await admin.list('/api/v1/nodes', { labelSelector: `${activeLabelKey('apps', 'p')}=true` })).items.length,
    0,
    'labels removed',
  );
});

/** Nodes carrying the interception readiness taint, by name. */
async function tainted(): Promise<string[]> {
  const nodes = (await admin.list('/api/v1/nodes')).items as Obj[];
  return nodes
    .filter((n) => (n.spec?.taints ?? []).some((t: { key: string }) => t.key === INTERCEPTION_TAINT))
    .map((n) => n.metadata.name)
    .sort();
}

/**
 * The readiness taint, written by the operator under the node-write policy: every intercepting
 * node carries it while its proxy pod is not Ready, loses it once Ready, gets it back when the pod
 * turns unready. No kubelet runs here: the proxy pod and its Ready condition are written as the
 * DaemonSet controller and the kubelet would.
 */
async function interceptionTaint(): Promise<void> {
  await waitFor('3 tainted', async () => (await tainted()).length === 3);
  const pod = await admin.create<Obj>('/api/v1/namespaces/apps/pods', {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p-on-p1', labels: commonLabels('p'), annotations: { 'tpfleet.io/mode': 'run' } },
    spec: { nodeName: 'p1', containers: [{ name: 'sidecar', image: 'tpfleet/node:test' }] },
  });
  const ready = (status: 'True' | 'False') =>
    admin.mergePatch(`/api/v1/namespaces/apps/pods/${pod.metadata.name}/status`, {
      status: { conditions: [{ type: 'Ready', status }] },
    });
  await ready('True');
  await waitFor('p1 untainted once its proxy pod is Ready', async () => (await tainted()).join() === 'p2,p3');
  await ready('False');
  await waitFor('p1 tainted again when its proxy pod turns unready', async () => (await tainted()).length === 3);
  await admin.delete(`/api/v1/namespaces/apps/pods/${pod.metadata.name}`, { gracePeriodSeconds: '0' });
}

test('upstream credentials: get on the named Secret and create/patch on events suffice; no list, watch or write on secrets', async () => {
  await admin.create(tpPath('apps', 'creds'), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'creds' },
    spec: {
      policy: {
        upstreams: [{ name: 'corp', type: 'SOCKS5', address: 'socks:1080', credentialsSecret: { name: 'corp' } }],
        rules: [{ name: 'all', action: 'Forward', upstream: 'corp' }],
      },
    },
  });
  const cond = (o: Obj | undefined) => o?.status?.conditions?.find((c: { type: string }) => c.type === 'InvalidSpec');
  // A missing Secret is a 404 to get (not a 403): InvalidSpec, and the Warning Event was created.
  await waitFor('InvalidSpec', async () =>
    /Secret apps\/corp not found/.test(cond(await admin.get<Obj>(tpPath('apps', 'creds')))?.message ?? ''),
  );
  const events = await waitFor('Event', async () => {
    const l = await admin.list('/apis/events.k8s.io/v1/namespaces/apps/events', {
      fieldSelector: 'regarding.name=creds',
    });
    return l.items.length > 0 && l.items;
  });
  assert.equal((events[0] as unknown as { reason: string }).reason, 'InvalidSpec');
  await admin.create('/api/v1/namespaces/apps/secrets', {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'corp' },
    stringData: { username: 'u', password: 'p' },
  });
  await waitFor(
    'valid once the Secret exists',
    async () => cond(await admin.get<Obj>(tpPath('apps', 'creds')))?.status === 'False',
    40_000,
  );
  // Least privilege, measured: what the operator may do with Secrets is exactly get.
  const kc = new KubeConfig();
  kc.loadFromFile(userConfig);
  const user = new KubeClient(kc, 'rbac-test');
  const can = async (verb: string, resource: string, group = '') =>
    (
      await user.create<Obj>('/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SelfSubjectAccessReview',
        spec: { resourceAttributes: { verb, resource, group, namespace: 'apps' } },
      })
    ).status.allowed as boolean;
  const granted = [];
  for (const verb of ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'])
    if (await can(verb, 'secrets')) granted.push(verb);
  assert.deepEqual(granted, ['get']);
  // Events: create and patch (a repeat patches the series) in events.k8s.io, nothing in core.
  for (const [group, want] of [
    ['events.k8s.io', ['create', 'patch']],
    ['', []],
  ] as const) {
    const verbs = [];
    for (const verb of ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'])
      if (await can(verb, 'events', group)) verbs.push(verb);
    assert.deepEqual(verbs, want, `events in group "${group}"`);
  }
});

test('the leader-election role lets the operator take the lease', async () => {
  const kc = new KubeConfig();
  kc.loadFromFile(userConfig);
  let led = false;
  const elector = new LeaderElector(
    new KubeClient(kc, FIELD_MANAGER),
    {
      namespace: 'tpfleet-system',
      name: 'tpfleet-operator',
      identity: 'rbac-test',
      leaseDurationSec: 3,
      onStartedLeading: () => {
        led = true;
      },
      onStoppedLeading: () => assert.fail('lost the lease'),
    },
    pino({ level: 'silent' }),
  );
  elector.start();
  try {
    await waitFor('leader', async () => led);
    const lease = await admin.get<Obj>(
      `${resourcePath({ group: 'coordination.k8s.io', version: 'v1', plural: 'leases', namespaced: true }, 'tpfleet-system', 'tpfleet-operator')}`,
    );
    assert.equal(lease?.spec.holderIdentity, 'rbac-test');
  } finally {
    await elector.stop();
  }
  const released = await admin.get<Obj>(
    '/apis/coordination.k8s.io/v1/namespaces/tpfleet-system/leases/tpfleet-operator',
  );
  assert.equal(released?.spec.holderIdentity, '', 'released on stop so a standby takes over at once');
});

test('node writes: the operator identity may change only active.tpfleet.io/* labels and its one taint (ValidatingAdmissionPolicy)', async () => {
  const path = '/api/v1/nodes/p1';
  // The lifecycle test above labelled and unlabelled nodes under this policy; here what it refuses.
  const refused: [string, unknown, RegExp][] = [
    [
      'another label',
      { metadata: { labels: { 'node-role.kubernetes.io/control-plane': '' } } },
      /may add or change only active\.tpfleet\.io/,
    ],
    [
      'removing a label',
      { metadata: { labels: { 'topology.kubernetes.io/zone': null } } },
      /may remove only active\.tpfleet\.io/,
    ],
    ['a taint', { spec: { taints: [{ key: 'x', effect: 'NoSchedule' }] } }, /may add or remove only the tpfleet/],
    [
      'its taint as NoExecute',
      { spec: { taints: [{ key: INTERCEPTION_TAINT, effect: 'NoExecute' }] } },
      /is NoSchedule without a value/,
    ],
    [
      'its taint with a value',
      { spec: { taints: [{ key: INTERCEPTION_TAINT, value: 'x', effect: 'NoSchedule' }] } },
      /is NoSchedule without a value/,
    ],
    ['cordoning', { spec: { unschedulable: true } }, /may not change a node's spec/],
    ['an annotation', { metadata: { annotations: { a: 'b' } } }, /may not change a node's annotations/],
  ];
  for (const [why, patch, msg] of refused) {
    await waitFor(`${why} refused`, async () => {
      try {
        await op.client.mergePatch(path, patch);
      } catch (e) {
        return msg.test(errorMessage(e)) || undefined;
      }
      throw new Error(`${why}: admitted`);
    });
  }
  await op.client.mergePatch(path, { metadata: { labels: { 'active.tpfleet.io/apps.x': 'true' } } });
  await op.client.mergePatch(path, { metadata: { labels: { 'active.tpfleet.io/apps.x': null } } });
  // Its one taint, added and removed (p1 has no other taint here).
  await op.client.mergePatch(path, { spec: { taints: [{ key: INTERCEPTION_TAINT, effect: 'NoSchedule' }] } });
  await op.client.mergePatch(path, { spec: { taints: null } });
  // Anyone else (the admin here) is not bound by it.
  await admin.mergePatch(path, { metadata: { annotations: { a: 'b' } } });
});
