// operator/deploy/rbac.yaml is sufficient and no wider than the code: the operator (controller and
// admission webhook) runs as a user bound to exactly those roles (the bindings' ServiceAccount
// subject is swapped for that user) through a full lifecycle: create with replicas and autoscaling,
// scale, delete with the finalizer, an object in a namespace it does not reconcile, upstream
// credentials, leader election. The API server's audit log of that user then shows that every
// granted verb was used, and that no request was refused: a verb removed from the file breaks the
// step that sends it, a verb added without code using it fails the audit test.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { KubeClient, resourcePath } from '../kube/client.ts';
import { LeaderElector } from './leader.ts';
import { errorMessage } from '../api/errors.ts';
import { INTERCEPTION_TAINT } from '../api/defaults.ts';
import { activeLabelKey, commonLabels, FIELD_MANAGER } from './render/names.ts';
import { tenancy } from './tenancy.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { registerWebhook, startOperator, WEBHOOK_CONFIG, type RunningOperator } from '../e2e/testenv/operator.ts';
import { freePort, startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';
import { auditedUse, deployDocs, grantedKeys, grantedVerbs, installFor, type RbacDoc } from './rbac.testkit.ts';

let env: TestEnv, admin: KubeClient, op: RunningOperator, userConfig: string;
const USER = 'tpfleet-operator-under-test';
/** Where deploy/rbac.yaml grants the fleet writes: the operator's default --namespaces. */
const FLEET = 'tpfleet-fleet';
/** A namespace this installation does not reconcile. */
const OTHER = 'apps';
type Obj = RbacDoc & { spec?: any; status?: any };
const RBAC = deployDocs('rbac.yaml');
const ds = (ns: string, name = 'p') => `/apis/apps/v1/namespaces/${ns}/daemonsets/${name}`;

before(async () => {
  env = await startTestEnv({ auditUsers: [USER] });
  admin = new KubeClient(env.kubeConfig, 'test-admin');
  await installCrd(admin);
  for (const ns of ['tpfleet-system', FLEET, OTHER]) await createNamespace(admin, ns);
  for (const n of ['p1', 'p2', 'p3']) await createNode(admin, n, { zone: n });
  // The test's webhook configuration in place of the chart's: the one name that differs.
  await installFor(admin, RBAC, USER, { 'tpfleet-operator': WEBHOOK_CONFIG });
  // The node-write policy, for this test's user in place of the chart's ServiceAccount.
  const policy = deployDocs<Obj & { spec: any }>('node-write-policy.yaml');
  const vap = policy[0]!;
  vap.spec.matchConditions[0].expression = `request.userInfo.username == '${USER}'`;
  await admin.create('/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies', vap);
  await admin.create('/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings', policy[1]);
  userConfig = await env.userKubeconfig(USER);
  // The webhook too, as the chart runs it: its Secret is created, read and (short-lived certificate)
  // rotated, its CA bundle written.
  const port = await freePort();
  await registerWebhook(admin, port);
  op = await startOperator(userConfig, {
    tenancy: tenancy({ namespaces: [FLEET], allowedImages: ['registry.example/'], allowControlPlane: false }),
    admission: { port, validityMs: 9_000, caValidityMs: 60_000, checkMs: 1_000 },
  });
});
after(async () => {
  await op?.stop();
  await env?.stop();
});

const granted = (resource: string, group: string, namespace: string) =>
  grantedVerbs(userConfig, resource, group, namespace);

test('the operator works end to end with only the permissions in deploy/rbac.yaml', async () => {
  await admin.create(tpPath(FLEET), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'p' },
    spec: { replicas: 2, autoscaling: { enabled: true, maxReplicas: 3 } },
  });
  const t = await waitFor('reconciled', async () => {
    const o = await admin.get<Obj>(tpPath(FLEET, 'p'));
    return o?.status?.replicas === 2 && o;
  });
  assert.equal(t.status.conditions.find((c: { type: string }) => c.type === 'InvalidSpec').status, 'False');
  for (const p of [
    ds(FLEET),
    `/api/v1/namespaces/${FLEET}/configmaps/p-nodeconfig`,
    `/api/v1/namespaces/${FLEET}/services/p-metrics`,
    `/api/v1/namespaces/${FLEET}/serviceaccounts/p`,
    `/apis/autoscaling/v2/namespaces/${FLEET}/horizontalpodautoscalers/p`,
    // The node agent's Role/RoleBinding: granting pods/status needs the operator to hold it (escalation check).
    `/apis/rbac.authorization.k8s.io/v1/namespaces/${FLEET}/roles/p-node-agent`,
    `/apis/rbac.authorization.k8s.io/v1/namespaces/${FLEET}/rolebindings/p-node-agent`,
  ]) {
    assert.ok(await admin.get(p), p);
  }
  await admin.mergePatch(tpPath(FLEET, 'p', 'scale'), { spec: { replicas: 3 } });
  await waitFor(
    '3 labeled nodes',
    async () =>
      (await admin.list('/api/v1/nodes', { labelSelector: `${activeLabelKey(FLEET, 'p')}=true` })).items.length === 3,
  );
  await interceptionTaint();
  await admin.mergePatch(tpPath(FLEET, 'p'), { spec: { autoscaling: { enabled: false } } });
  await waitFor(
    'HPA deleted',
    async () => !(await admin.get(`/apis/autoscaling/v2/namespaces/${FLEET}/horizontalpodautoscalers/p`)),
  );
  await admin.delete(tpPath(FLEET, 'p'));
  await waitFor(
    'cleanup mode',
    async () => (await admin.get<Obj>(ds(FLEET)))?.spec.template.metadata.annotations['tpfleet.io/mode'] === 'cleanup',
  );
  // The DaemonSet controller's aggregation of the nodes' "cleanup done" (written as it would).
  const live = (await admin.get<Obj>(ds(FLEET)))!;
  await admin.mergePatch(`${ds(FLEET)}/status`, {
    status: {
      observedGeneration: live.metadata.generation,
      desiredNumberScheduled: 3,
      currentNumberScheduled: 3,
      updatedNumberScheduled: 3,
      numberReady: 3,
      numberMisscheduled: 0,
    },
  });
  await waitFor('deleted', async () => !(await admin.get(tpPath(FLEET, 'p'))));
  assert.deepEqual(await tainted(), [], 'the readiness taint goes with the object');
  assert.equal(
    (await admin.list('/api/v1/nodes', { labelSelector: `${activeLabelKey(FLEET, 'p')}=true` })).items.length,
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
  const pod = await admin.create<Obj>(`/api/v1/namespaces/${FLEET}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p-on-p1', labels: commonLabels('p'), annotations: { 'tpfleet.io/mode': 'run' } },
    spec: { nodeName: 'p1', containers: [{ name: 'sidecar', image: 'tpfleet/node:test' }] },
  });
  const ready = (status: 'True' | 'False') =>
    admin.mergePatch(`/api/v1/namespaces/${FLEET}/pods/${pod.metadata.name}/status`, {
      status: { conditions: [{ type: 'Ready', status }] },
    });
  await ready('True');
  await waitFor('p1 untainted once its proxy pod is Ready', async () => (await tainted()).join() === 'p2,p3');
  await ready('False');
  await waitFor('p1 tainted again when its proxy pod turns unready', async () => (await tainted()).length === 3);
  await admin.delete(`/api/v1/namespaces/${FLEET}/pods/${pod.metadata.name}`, { gracePeriodSeconds: '0' });
}

test('only the reconciled namespace: elsewhere a status and an Event, and no permission on the fleet kinds at all', async () => {
  await admin.create(tpPath(OTHER), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'p' },
    spec: {},
  });
  await waitFor('refused in status', async () => {
    const o = await admin.get<Obj>(tpPath(OTHER, 'p'));
    const c = o?.status?.conditions?.find((x: { type: string }) => x.type === 'InvalidSpec');
    return c?.status === 'True' && /is not a namespace this tpfleet installation reconciles/.test(c.message);
  });
  assert.equal(await admin.get(ds(OTHER)), undefined, 'nothing scheduled');
  // The fleet kinds: read (the informers watch per namespace) and written only where reconciled.
  for (const [resource, group, inFleet] of [
    ['daemonsets', 'apps', ['create', 'list', 'patch', 'watch']],
    ['serviceaccounts', '', ['create', 'list', 'patch', 'watch']],
    ['services', '', ['create', 'list', 'patch', 'watch']],
    ['configmaps', '', ['create', 'get', 'list', 'patch', 'watch']],
    ['horizontalpodautoscalers', 'autoscaling', ['create', 'delete', 'list', 'patch', 'watch']],
    ['roles', 'rbac.authorization.k8s.io', ['create', 'list', 'patch', 'watch']],
    ['rolebindings', 'rbac.authorization.k8s.io', ['create', 'list', 'patch', 'watch']],
    ['pods', '', ['list', 'watch']],
    ['secrets', '', ['get']],
  ] as const) {
    assert.deepEqual((await granted(resource, group, FLEET)).sort(), [...inFleet].sort(), `${resource} in ${FLEET}`);
    assert.deepEqual(await granted(resource, group, OTHER), [], `${resource} in ${OTHER}`);
  }
  assert.deepEqual(await granted('nodes', '', ''), ['list', 'watch', 'patch']);
  assert.deepEqual(await granted('transparentproxies', 'tpfleet.io', OTHER), ['list', 'watch', 'patch']);
});

test('deleting an object in a namespace no longer reconciled keeps its finalizer: the operator cannot see its nodes', async () => {
  // As if reconciled by an installation that still listed the namespace: our finalizer is on it.
  await admin.create(tpPath(OTHER), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'kept', finalizers: ['tpfleet.io/node-cleanup'] },
    spec: {},
  });
  await admin.delete(tpPath(OTHER, 'kept'));
  const start = Date.now();
  await new Promise((r) => setTimeout(r, 3000)); // several reconciles of the deletion
  const o = await admin.get<Obj>(tpPath(OTHER, 'kept'));
  assert.ok(o?.metadata.deletionTimestamp, `still there, terminating, after ${Date.now() - start} ms`);
  assert.deepEqual(o.metadata.finalizers, ['tpfleet.io/node-cleanup']);
  await admin.mergePatch(tpPath(OTHER, 'kept'), { metadata: { finalizers: null } }); // the administrator's way out
  await waitFor('gone', async () => !(await admin.get(tpPath(OTHER, 'kept'))));
});

test('upstream credentials: get on the named Secret and create/patch on events suffice; no list, watch or write on secrets', async () => {
  const path = tpPath(FLEET, 'creds');
  await admin.create(tpPath(FLEET), {
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
  const missing = new RegExp(`Secret ${FLEET}/corp not found`);
  await waitFor('InvalidSpec', async () => missing.test(cond(await admin.get<Obj>(path))?.message ?? ''));
  const events = async () =>
    (await admin.list(`/apis/events.k8s.io/v1/namespaces/${FLEET}/events`, { fieldSelector: 'regarding.name=creds' }))
      .items as unknown as { reason: string; series?: { count: number } }[];
  const first = await waitFor('Event', async () => {
    const l = await events();
    return l.length > 0 && l;
  });
  assert.equal(first[0]!.reason, 'InvalidSpec');
  const secret = `/api/v1/namespaces/${FLEET}/secrets`;
  await admin.create(secret, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'corp' },
    stringData: { username: 'u', password: 'p' },
  });
  await waitFor(
    'valid once the Secret exists',
    async () => cond(await admin.get<Obj>(path))?.status === 'False',
    40_000,
  );
  // The Secret goes again: the same Warning repeats, which patches the Event's series.
  await admin.delete(`${secret}/corp`);
  await admin.mergePatch(path, { metadata: { annotations: { touched: '1' } } });
  await waitFor(
    'the Event series patched',
    async () => (await events()).some((e) => (e.series?.count ?? 1) >= 2),
    40_000,
  );
  // Least privilege, measured: what the operator may do with Secrets is exactly get, where it reconciles.
  assert.deepEqual(await granted('secrets', '', FLEET), ['get']);
  // Events: create and patch (a repeat patches the series) in events.k8s.io, nothing in core.
  for (const [group, want] of [
    ['events.k8s.io', ['create', 'patch']],
    ['', []],
  ] as const) {
    assert.deepEqual(await granted('events', group, FLEET), want, `events in group "${group}"`);
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

test('server-side apply of a missing object needs create as well as patch (why the fleet kinds hold both)', async () => {
  const who = 'apply-without-create';
  const rb = (name: string, verbs: string[]) => ({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name, namespace: FLEET },
    rules: [{ apiGroups: [''], resources: ['configmaps'], verbs }],
  });
  const bind = (name: string) => ({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name, namespace: FLEET },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
    subjects: [{ kind: 'User', name: who, apiGroup: 'rbac.authorization.k8s.io' }],
  });
  await admin.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${FLEET}/roles`, rb('patch-only', ['patch']));
  await admin.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${FLEET}/rolebindings`, bind('patch-only'));
  const kc = new KubeConfig();
  kc.loadFromFile(await env.userKubeconfig(who));
  const c = new KubeClient(kc, FIELD_MANAGER);
  const path = `/api/v1/namespaces/${FLEET}/configmaps/applied`;
  const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'applied' }, data: { a: '1' } };
  const refused = await waitFor('refused without create', async () => {
    try {
      await c.apply(path, cm);
    } catch (e) {
      return /403 Forbidden.*cannot create resource "configmaps"/.test(errorMessage(e)) && errorMessage(e);
    }
    throw new Error('applied without create');
  });
  assert.match(refused, /cannot create/);
  await admin.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${FLEET}/roles`, rb('create', ['create']));
  await admin.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${FLEET}/rolebindings`, bind('create'));
  await waitFor('applied with create', async () => (await c.apply(path, cm)) && true);
  await c.apply(path, { ...cm, data: { a: '2' } }); // an existing object: patch alone
});

/** Granted but never requested, by design: what the node agent's Role grants (RBAC's escalation
 * check makes the operator hold it) and what an admission plugin checks on the owner reference. */
const HELD_FOR_OTHERS = new Set([
  'pods/status get',
  'pods/status patch',
  'configmaps get',
  'tpfleet.io/transparentproxies/finalizers update',
]);

test("the audit log: every verb deploy/rbac.yaml grants was used, and none of the operator's requests was refused", async () => {
  const { used, refused } = auditedUse(env.auditLog!, USER);
  assert.deepEqual(refused, [], 'requests RBAC refused');
  const keys = grantedKeys(RBAC);
  const unused = keys.filter((k) => !used.has(k) && !HELD_FOR_OTHERS.has(k)).sort();
  assert.deepEqual(
    unused,
    [],
    `granted in deploy/rbac.yaml but never requested (used: ${[...used].sort().join(', ')})`,
  );
  // The exceptions are real exceptions: still granted, and never requested.
  for (const k of HELD_FOR_OTHERS) {
    assert.ok(keys.includes(k), `${k} is granted`);
    assert.ok(!used.has(k), `${k} is used after all: move it out of HELD_FOR_OTHERS`);
  }
});
