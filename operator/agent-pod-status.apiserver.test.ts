// operator/deploy/agent-pod-status-policy.yaml in the real API server, with tokens it minted the way
// the kubelet mints agent-watch's projected token (TokenRequest bound to the pod): the node agent may
// write the status of its own pod only, not of another node's pod nor of another pod on its node.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { errorMessage } from '../api/errors.ts';
import { inClusterCredentials } from '../kube/credentials.ts';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import { createNamespace, createNode, waitFor } from '../e2e/testenv/fixtures.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';
import { commonLabels } from './render/names.ts';
import { renderAgentRole, renderAgentRoleBinding, renderServiceAccount } from './render/objects.ts';

let env: TestEnv, admin: KubeClient;
const NS = 'apps';
const pods = '/api/v1/namespaces/apps/pods';
const TP = {
  apiVersion: 'tpfleet.io/v1alpha1',
  kind: 'TransparentProxy',
  metadata: { name: 'p', namespace: NS, uid: '0b9e0a62-5a4c-4a3c-9d7e-1f1f1f1f1f1f' },
};

before(async () => {
  env = await startTestEnv();
  admin = new KubeClient(env.kubeConfig, 'test-admin');
  await createNamespace(admin, NS);
  for (const n of ['n1', 'n2']) await createNode(admin, n);
  // The agent's account and Role exactly as the operator renders them.
  await admin.create(`/api/v1/namespaces/${NS}/serviceaccounts`, renderServiceAccount(TP));
  await admin.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/roles`, renderAgentRole(TP));
  await admin.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings`, renderAgentRoleBinding(TP));
  // a: the agent's own pod on n1; b: the same fleet's pod on n2; c: another tpfleet pod on n1.
  for (const [name, node] of [
    ['a', 'n1'],
    ['b', 'n2'],
    ['c', 'n1'],
  ]) {
    await admin.create(pods, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, labels: commonLabels('p') },
      spec: { serviceAccountName: 'p', nodeName: node, containers: [{ name: 'agent-watch', image: 'tpfleet-node' }] },
    });
  }
});
after(async () => {
  await env?.stop();
});

/** A client holding a token of `sa` (bound to `pod` when given), read as agent-watch reads its mount. */
async function tokenClient(ns: string, sa: string, pod?: string): Promise<KubeClient> {
  const boundObjectRef = pod
    ? {
        kind: 'Pod',
        apiVersion: 'v1',
        name: pod,
        uid: (await admin.get(`/api/v1/namespaces/${ns}/pods/${pod}`))!.metadata.uid,
      }
    : undefined;
  const tr = await admin.create<KubeObject & { status: { token: string } }>(
    `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`,
    { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 3607, boundObjectRef } },
  );
  const dir = join(env.dir, `token-${ns}-${sa}-${pod ?? 'unbound'}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'token'), tr.status.token);
  copyFileSync(env.pki.caCert, join(dir, 'ca.crt'));
  const url = new URL(env.server);
  return new KubeClient(inClusterCredentials({ host: url.hostname, port: url.port }, dir), 'tpfleet-agent');
}

const condition = (status: string) => ({
  status: {
    conditions: [{ type: 'tpfleet.io/Tuning', status, reason: 'Test', lastTransitionTime: new Date().toISOString() }],
  },
});
const patchStatus = (c: KubeClient, pod: string, status = 'True') =>
  c.mergePatch(`${pods}/${pod}/status`, condition(status));
async function refused(c: KubeClient, pod: string): Promise<string> {
  try {
    await patchStatus(c, pod, 'False');
  } catch (e) {
    return errorMessage(e);
  }
  return 'admitted';
}

test('without the policy the agent Role lets one node write another node pod status (the defect)', async () => {
  const agentA = await tokenClient(NS, 'p', 'a');
  await patchStatus(agentA, 'b');
  const b = await admin.get<KubeObject & { status: { conditions: { type: string }[] } }>(`${pods}/b`);
  assert.ok(
    b!.status.conditions.some((x) => x.type === 'tpfleet.io/Tuning'),
    'RBAC alone admits it',
  );
});

test('with the policy the node agent writes only its own pod status', async () => {
  const docs = parseAllDocuments(
    readFileSync(join(import.meta.dirname, 'deploy', 'agent-pod-status-policy.yaml'), 'utf8'),
  ).map((d) => d.toJS());
  await admin.create('/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies', docs[0]);
  await admin.create('/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings', docs[1]);
  const agentA = await tokenClient(NS, 'p', 'a');
  // The harness's API server adds what the policy reads to a pod-bound token (ServiceAccountTokenPodNodeInfo).
  const review = await agentA.create<
    KubeObject & { status: { userInfo: { username: string; extra: Record<string, string[]> } } }
  >('/apis/authentication.k8s.io/v1/selfsubjectreviews', {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'SelfSubjectReview',
  });
  assert.equal(review.status.userInfo.username, 'system:serviceaccount:apps:p');
  assert.deepEqual(review.status.userInfo.extra['authentication.kubernetes.io/node-name'], ['n1']);
  assert.deepEqual(review.status.userInfo.extra['authentication.kubernetes.io/pod-name'], ['a']);

  // The policy takes effect once the API server has compiled it.
  const msg = await waitFor('another node refused', async () => {
    const m = await refused(agentA, 'b');
    return m !== 'admitted' && m;
  });
  assert.match(
    msg,
    /a tpfleet node agent may write the status only of pods on the node its token is bound to: pod b runs on node "n2", the token is bound to node "n1"/,
  );
  assert.match(
    await refused(agentA, 'c'),
    /may write the status only of its own pod: the token is bound to pod a, not to c/,
  );
  // A token of the same account not bound to a pod (someone who could mint one) is refused too.
  assert.match(await refused(await tokenClient(NS, 'p'), 'a'), /the token is bound to no node/);
  // Its own pod: admitted, and written.
  await patchStatus(agentA, 'a', 'True');
  const a = await admin.get<KubeObject & { status: { conditions: { type: string; status: string }[] } }>(`${pods}/a`);
  assert.equal(a!.status.conditions.find((x) => x.type === 'tpfleet.io/Tuning')?.status, 'True');
});

test('controllers of other namespaces still write tpfleet pod status (node lifecycle marks pods NotReady)', async () => {
  await createNamespace(admin, 'kube-system');
  await admin.create('/api/v1/namespaces/kube-system/serviceaccounts', {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name: 'node-controller' },
  });
  await admin.create('/apis/rbac.authorization.k8s.io/v1/clusterroles', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRole',
    metadata: { name: 'test-pod-status' },
    rules: [{ apiGroups: [''], resources: ['pods/status'], verbs: ['patch'] }],
  });
  await admin.create('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: 'test-pod-status' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'test-pod-status' },
    subjects: [{ kind: 'ServiceAccount', name: 'node-controller', namespace: 'kube-system' }],
  });
  const controller = await tokenClient('kube-system', 'node-controller');
  await waitFor('RBAC for the controller', async () => (await patchStatus(controller, 'b', 'Unknown')) && true);
});
