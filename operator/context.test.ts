import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApplyMemo } from './context.ts';
import type { KubeClient, KubeObject } from '../kube/client.ts';

/** Records applies; answers like the API server (generation bumps on a changed spec). */
function fakeClient() {
  const applied: string[] = [];
  let gen = 0,
    rv = 0;
  const client = {
    apply: async (path: string) => {
      applied.push(path);
      return { metadata: { name: 'x', generation: ++gen, resourceVersion: String(++rv) } };
    },
  };
  return { client: client as unknown as KubeClient, applied };
}

test('an unchanged render against an unchanged object is not re-applied; status churn does not count', async () => {
  const { client, applied } = fakeClient();
  const memo = new ApplyMemo();
  const live = await memo.apply(client, '/ds/x', { spec: 1 }, undefined);
  // The DaemonSet controller updates status: resourceVersion moves, generation does not.
  const afterStatus: KubeObject = { metadata: { ...live.metadata, resourceVersion: '99' } };
  await memo.apply(client, '/ds/x', { spec: 1 }, afterStatus);
  assert.equal(applied.length, 1);
  await memo.apply(client, '/ds/x', { spec: 2 }, afterStatus);
  assert.equal(applied.length, 2, 'a changed render is applied');
  const edited: KubeObject = { metadata: { name: 'x', generation: 7, resourceVersion: '100' } };
  await memo.apply(client, '/ds/x', { spec: 2 }, edited);
  assert.equal(applied.length, 3, 'someone else changed the spec: re-apply repairs it');
  memo.clear();
  await memo.apply(client, '/ds/x', { spec: 2 }, { metadata: { name: 'x', generation: 3, resourceVersion: '3' } });
  assert.equal(applied.length, 4, 'after clear() (resync) everything is applied once');
});

test('kinds without generation (ConfigMap) are compared by resourceVersion', async () => {
  const applied: string[] = [];
  const client = {
    apply: async () => {
      applied.push('x');
      return { metadata: { name: 'c', resourceVersion: '5' } };
    },
  } as unknown as KubeClient;
  const memo = new ApplyMemo();
  await memo.apply(client, '/cm/c', { data: 1 }, undefined);
  await memo.apply(client, '/cm/c', { data: 1 }, { metadata: { name: 'c', resourceVersion: '5' } });
  assert.equal(applied.length, 1);
  await memo.apply(client, '/cm/c', { data: 1 }, { metadata: { name: 'c', resourceVersion: '6' } });
  assert.equal(applied.length, 2, 'an edited ConfigMap is re-applied');
});
