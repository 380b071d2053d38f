// The harness itself: a real etcd + kube-apiserver come up with RBAC and client certificates,
// and stop() leaves no process and no data behind.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { ApiError, KubeClient } from '../../kube/client.ts';
import { k8sVersion } from './binaries.ts';
import { startTestEnv, type TestEnv } from './testenv.ts';

let env: TestEnv;
before(async () => {
  env = await startTestEnv();
});
after(async () => {
  await env?.stop();
});

test('the admin kubeconfig talks to a real kube-apiserver of the pinned version', async () => {
  const c = new KubeClient(env.kubeConfig, 'test');
  const v = await c.request<{ gitVersion: string }>('GET', '/version');
  assert.equal(v.gitVersion, k8sVersion(), 'binaries are stamped with their release version');
  const ns = await c.list('/api/v1/namespaces');
  assert.ok(
    ns.items.some((n) => n.metadata.name === 'kube-system'),
    'bootstrap namespaces exist',
  );
});

test('RBAC is enforced: a user without bindings is forbidden', async () => {
  const kc = new KubeConfig();
  kc.loadFromFile(await env.userKubeconfig('nobody', ['tpfleet:test']));
  const c = new KubeClient(kc, 'test');
  await assert.rejects(c.list('/api/v1/nodes'), (e: unknown) => e instanceof ApiError && e.status === 403);
});

test('stop() kills both servers and deletes their data', async () => {
  const other = await startTestEnv();
  const c = new KubeClient(other.kubeConfig, 'test');
  try {
    assert.equal(await c.request('GET', '/readyz'), 'ok');
  } finally {
    await other.stop();
  }
  assert.equal(existsSync(other.dir), false, 'data dir removed');
  await assert.rejects(c.request('GET', '/readyz', { timeoutMs: 2000 }));
});
