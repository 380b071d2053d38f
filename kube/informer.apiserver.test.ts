// Paginated lists against a real kube-apiserver (issue 17): 1,200 ConfigMaps, 500 a page. The
// informer's cache is complete after three pages, and keeps following the watch. A continue token
// that expired (410 Expired) restarts the list: a real server only expires tokens after etcd
// compaction (minutes), so that one answer is injected by the counting wrapper, and says so.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { ApiError, KubeClient, type ObjectList } from './client.ts';
import { Informer } from './informer.ts';
import { createNamespace, waitFor } from '../e2e/testenv/fixtures.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

const NS = 'pages';
const COUNT = 1200;
/** Set here, not the default (kube/informer.ts PAGE_SIZE): three pages, the last one partial. */
const PAGE = 500;
let env: TestEnv, admin: KubeClient;

/** The real client, recording every LIST's query; expireOnce answers the first continued page with 410. */
class CountingClient extends KubeClient {
  readonly lists: Record<string, string>[] = [];
  expireOnce = false;
  override async list(path: string, query: Record<string, string> = {}): Promise<ObjectList> {
    this.lists.push(query);
    if (this.expireOnce && query.continue) {
      this.expireOnce = false;
      throw new ApiError(410, 'Expired', 'The provided continue parameter is too old (injected by the test)');
    }
    return super.list(path, query);
  }
}

before(async () => {
  env = await startTestEnv();
  admin = new KubeClient(env.kubeConfig, 'test-user');
  await createNamespace(admin, NS);
  const names = Array.from({ length: COUNT }, (_, i) => `cm-${String(i).padStart(4, '0')}`);
  for (let i = 0; i < names.length; i += 25)
    await Promise.all(
      names
        .slice(i, i + 25)
        .map((name) =>
          admin.create(`/api/v1/namespaces/${NS}/configmaps`, { metadata: { name, labels: { bulk: 'yes' } } }),
        ),
    );
});
after(async () => {
  await env?.stop();
});

async function informer(client: CountingClient) {
  const inf = new Informer({
    client,
    path: `/api/v1/namespaces/${NS}/configmaps`,
    resource: 'configmaps',
    labelSelector: 'bulk=yes',
    pageSize: PAGE,
    onChange: () => {},
    log: pino({ level: 'silent' }),
  });
  inf.start();
  await waitFor('synced', async () => inf.hasSynced);
  return inf;
}

test(`${COUNT} objects: listed in pages of ${PAGE}, the cache is complete and follows the watch`, async () => {
  const client = new CountingClient(env.kubeConfig, 'test');
  const inf = await informer(client);
  try {
    assert.deepEqual(
      client.lists.map((q) => [q.limit, q.continue ? 'continue' : 'first']),
      [
        ['500', 'first'],
        ['500', 'continue'],
        ['500', 'continue'],
      ],
    );
    assert.equal(inf.list().length, COUNT);
    assert.ok(inf.get(NS, 'cm-0000') && inf.get(NS, 'cm-1199'));
    await admin.create(`/api/v1/namespaces/${NS}/configmaps`, { metadata: { name: 'late', labels: { bulk: 'yes' } } });
    await waitFor('the watch after the paged list', async () => inf.get(NS, 'late') !== undefined);
    assert.equal(inf.list().length, COUNT + 1);
  } finally {
    await inf.stop();
    await admin.delete(`/api/v1/namespaces/${NS}/configmaps/late`);
  }
});

test('an expired continue token (410) restarts the list from the first page; the cache is still complete', async () => {
  const client = new CountingClient(env.kubeConfig, 'test');
  client.expireOnce = true;
  const inf = await informer(client);
  try {
    assert.deepEqual(
      client.lists.map((q) => (q.continue ? 'continue' : 'first')),
      ['first', 'continue', 'first', 'continue', 'continue'],
    );
    assert.equal(inf.list().length, COUNT);
  } finally {
    await inf.stop();
  }
});
