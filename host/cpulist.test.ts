import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatCpuList, formatCpuMask, parseCpuList, parseCpuMask } from './cpulist.ts';

test('CPU lists: ranges, singles, whitespace, newline, empty', () => {
  assert.deepEqual(parseCpuList('0-3,8,10-11'), [0, 1, 2, 3, 8, 10, 11]);
  assert.deepEqual(parseCpuList(' 0-1 ,\t5\n'), [0, 1, 5]);
  assert.deepEqual(parseCpuList('7,3,3,1-2'), [1, 2, 3, 7], 'unsorted and repeated entries normalise');
  assert.deepEqual(parseCpuList(''), []);
  assert.deepEqual(parseCpuList('\n'), []);
  assert.deepEqual(parseCpuList('0-15:2/4'), [0, 1, 4, 5, 8, 9, 12, 13], 'kernel stride form');
});

test('CPU lists: bad input is an error naming the part', () => {
  assert.match(parseCpuList('3-1') as string, /3-1 runs backwards/);
  assert.match(parseCpuList('0,a') as string, /"a" is not a CPU/);
  assert.match(parseCpuList('0,,1') as string, /"" is not a CPU/);
  assert.match(parseCpuList('9000') as string, /above 8191/);
  assert.match(parseCpuList('0-7:5/4') as string, /stride/);
});

test('CPU lists: formatting compresses runs and round-trips', () => {
  assert.equal(formatCpuList([0, 1, 2, 3, 8, 10, 11]), '0-3,8,10-11');
  assert.equal(formatCpuList([]), '');
  assert.equal(formatCpuList([5]), '5');
  assert.equal(formatCpuList([11, 10]), '10-11');
  for (const s of ['0-3,8,10-11', '1', '0,2,4', '0-63', '31-32,95-96'])
    assert.equal(formatCpuList(parseCpuList(s) as number[]), s);
});

test('CPU masks: 32-bit words, most significant first, as the kernel prints them', () => {
  assert.deepEqual(parseCpuMask('3\n'), [0, 1]);
  assert.deepEqual(parseCpuMask('0'), []);
  assert.deepEqual(parseCpuMask('00000001,80000000'), [31, 32]);
  assert.deepEqual(parseCpuMask('ff,00000000,0000000f'), [0, 1, 2, 3, 64, 65, 66, 67, 68, 69, 70, 71]);
  assert.equal(formatCpuMask([0, 1]), '3');
  assert.equal(formatCpuMask([0, 1], 2), '3', 'nr_cpu_ids 2 prints one digit, like this VM');
  assert.equal(formatCpuMask([], 2), '0');
  assert.equal(formatCpuMask([31]), '80000000');
  assert.equal(formatCpuMask([31, 32]), '1,80000000');
  assert.equal(formatCpuMask([0], 72), '00,00000000,00000001', 'width follows nr_cpu_ids');
  assert.equal(formatCpuMask([8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31], 32), 'ff00ff00');
  assert.match(parseCpuMask('xyz') as string, /not a CPU mask/);
  assert.match(parseCpuMask('123456789') as string, /not a CPU mask/, 'a word wider than 32 bits');
  for (const cpus of [[0], [63], [0, 40, 127], [5, 6, 7]]) assert.deepEqual(parseCpuMask(formatCpuMask(cpus)), cpus);
});
