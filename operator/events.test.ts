import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Buckets, microTime } from './events.ts';

test('the rate limit: a burst, then one Event per refill period, per object', () => {
  const b = new Buckets(3, 1000);
  const taken = (key: string, at: number, n: number) =>
    Array.from({ length: n }, () => b.take(key, at)).filter(Boolean).length;
  assert.equal(taken('a', 0, 10), 3, 'burst of 3');
  assert.equal(taken('b', 0, 1), 1, 'another object has its own bucket');
  assert.equal(taken('a', 999, 5), 0, 'nothing before a refill period');
  assert.equal(taken('a', 1000, 5), 1, 'one per period');
  assert.equal(taken('a', 10_000, 10), 3, 'refills up to the burst, not beyond');
});

test('the rate limiter remembers a bounded number of objects', () => {
  const b = new Buckets(1, 1000, 100);
  for (let i = 0; i < 1000; i++) b.take(`o${i}`, 0);
  assert.equal(b.size, 100);
});

test('MicroTime has six fractional digits', () => {
  assert.equal(microTime(new Date('2026-12-02T05:50:01.234Z')), '2026-12-02T05:50:01.234000Z');
});
