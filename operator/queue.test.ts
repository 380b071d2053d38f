import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WorkQueue } from './queue.ts';

test('a key queued twice is processed once', async () => {
  const q = new WorkQueue();
  q.add('ns/a');
  q.add('ns/a');
  q.add('ns/b');
  assert.equal(q.depth, 2);
  assert.equal(await q.get(), 'ns/a');
  assert.equal(await q.get(), 'ns/b');
  q.shutdown();
});

test('a key added while it is processed is handed out again only after done()', async () => {
  const q = new WorkQueue();
  q.add('ns/a');
  const k = await q.get();
  q.add('ns/a');
  assert.equal(q.depth, 0, 'no second worker may get the key while it is processing');
  q.done(k!);
  assert.equal(q.depth, 1);
  assert.equal(await q.get(), 'ns/a');
  q.shutdown();
});

test('failures back off exponentially and forget() resets them', () => {
  const q = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 50 });
  assert.deepEqual(
    [1, 2, 3, 4].map(() => q.addRateLimited('k')),
    [10, 20, 40, 50],
  );
  q.forget('k');
  assert.equal(q.addRateLimited('k'), 10);
  q.shutdown();
});

test('addAfter delivers after the delay and keeps the earliest deadline', async () => {
  const q = new WorkQueue();
  const start = Date.now();
  q.addAfter('k', 5000);
  q.addAfter('k', 30);
  assert.equal(await q.get(), 'k');
  const took = Date.now() - start;
  assert.ok(took >= 25 && took < 1000, `delivered after ${took} ms`);
  q.shutdown();
});

test('shutdown releases waiting workers', async () => {
  const q = new WorkQueue();
  const waiting = q.get();
  q.shutdown();
  assert.equal(await waiting, undefined);
});
