// Golden tests of the affinity planner on recorded /proc + /sys trees (testdata/*/root, written by
// testdata/make-fixtures.ts). The goldens are reviewed by hand; regenerate them after an intended
// change with TPFLEET_UPDATE_GOLDEN=1 and review the diff. Each case also asserts the properties the
// algorithm promises, so a wrong golden cannot pass unnoticed.
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Tuning } from '../api/tuning.ts';
import { assertGolden } from '../e2e/golden.ts';
import { affinityWrites, planAffinity, type AffinityPlan } from './affinity.ts';
import { cpuList, cpuMask, intersect } from './cpulist.ts';
import { readNodeFacts, type NodeFacts } from './facts.ts';
import { classifyQueueIrq, parseInterrupts } from './interrupts.ts';

const TESTDATA = join(dirname(fileURLToPath(import.meta.url)), 'testdata');
const golden = (name: string, value: unknown) =>
  assertGolden(join(TESTDATA, name), `${JSON.stringify(value, null, 2)}\n`);

function plan(fixture: string, caseName: string, affinity: unknown): { facts: NodeFacts; p: AffinityPlan } {
  const spec = Tuning.parse({ affinity });
  const facts = readNodeFacts(join(TESTDATA, fixture, 'root'), spec.affinity.interfaces);
  const p = planAffinity(spec.affinity, facts);
  golden(`${fixture}/golden/${caseName}.json`, { spec: affinity, plan: p, writes: affinityWrites(p, facts) });
  return { facts, p };
}

const siblingsOf = (facts: NodeFacts, cpus: number[]) => new Set(cpus.flatMap((c) => facts.siblings[c] ?? [c]));

test('facts are read from each fixture tree', () => {
  for (const f of ['numa2-ixgbe', 'vm-virtio1', 'ht8-mlx5'])
    golden(`${f}/golden/facts.json`, readNodeFacts(join(TESTDATA, f, 'root')));
  const vm = readNodeFacts(join(TESTDATA, 'vm-virtio1', 'root'));
  assert.deepEqual(
    vm.interfaces.eth0!.queueIrqs.map((q) => [q.irq, q.kind, q.queue]),
    [
      [38, 'rx', 0],
      [39, 'tx', 0],
    ],
    'virtio-config (37) is not a queue',
  );
  assert.equal(vm.interfaces.eth0!.numaNode, -1);
  const ht = readNodeFacts(join(TESTDATA, 'ht8-mlx5', 'root'));
  assert.deepEqual(ht.irqbalance, {
    running: false,
    pid: null,
    bannedCpus: [0],
    bannedIrqs: [61],
    sources: ['/etc/default/irqbalance'],
  });
});

test('2-socket NUMA, 16-queue NIC on socket 1, irqbalance running', () => {
  const { facts, p } = plan('numa2-ixgbe', 'auto', { mode: 'auto' });
  const node1 = cpuList('8-15,24-31');
  const ifc = p.interfaces[0]!;
  assert.equal(ifc.name, 'ens1f0', 'default-route interface only');
  assert.equal(ifc.irqs.length, 16, 'every TxRx vector, not the link vector');
  assert.ok(!ifc.irqs.some((q) => q.name === 'ens1f0'));
  const irqCpus = cpuList(p.irqCpus),
    workers = cpuList(p.workerCpus);
  assert.deepEqual(intersect(irqCpus, node1), irqCpus, 'IRQ CPUs are NUMA-local');
  assert.deepEqual(intersect(workers, node1), workers, 'workers are NUMA-local');
  assert.equal(irqCpus.length, 2, 'a quarter of the 8 local cores');
  assert.equal(
    new Set(irqCpus.map((c) => facts.siblings[c]!.join())).size,
    irqCpus.length,
    'one IRQ CPU per physical core',
  );
  const busy = siblingsOf(facts, irqCpus);
  assert.ok(
    workers.every((c) => !busy.has(c)),
    'no worker on an IRQ core or its hyper-thread sibling',
  );
  assert.equal(p.workers, 12);
  assert.equal(ifc.xps.length, 16);
  assert.equal(new Set(ifc.xps.flatMap((x) => cpuList(x.cpus))).size, 32, 'every CPU transmits on exactly one queue');
  assert.equal(ifc.rps[0]!.flowCnt, 2048, '32768 flow entries over 16 rx queues');
  assert.match(p.irqbalance.conflict!, /irqbalance \(pid 812\) will move IRQs 120,121,.*--banirq=120/);
  assert.deepEqual(
    cpuList(p.irqbalance.required!.bannedCpus),
    [...irqCpus, ...workers].sort((a, b) => a - b),
    'irqbalance keeps other IRQs off IRQ and worker CPUs',
  );
  assert.deepEqual(
    p.irqbalance.required!.banIrqs,
    ifc.irqs.map((q) => q.irq),
  );
});

test('2-socket: both ports, 4 IRQ cores, a reserved CPU, irqbalance defer', () => {
  const { facts, p } = plan('numa2-ixgbe', 'two-ports-defer', {
    mode: 'auto',
    interfaces: ['ens1f0', 'ens1f1'],
    irqCpuCount: 4,
    reservedCpus: '8,24',
    irqbalance: 'defer',
    maxWorkers: 6,
  });
  assert.ok(
    p.interfaces.every((i) => i.irqs.length === 0),
    'defer: IRQs left to irqbalance',
  );
  assert.equal(p.irqCpus, '', 'defer: no core set aside for interrupts');
  assert.ok(!cpuList(p.workerCpus).some((c) => c === 8 || c === 24), 'reserved CPUs unused');
  assert.equal(p.workers, 6);
  const busy = siblingsOf(facts, cpuList(p.irqCpus));
  assert.ok(cpuList(p.workerCpus).every((c) => !busy.has(c)));
  assert.equal(p.irqbalance.conflict, null);
  const w = affinityWrites(p, facts);
  assert.ok(!w.some((x) => x.key.startsWith('irq/')));
  assert.equal(w.filter((x) => x.key.endsWith('/xps_cpus')).length, 32);
});

test('single-queue virtio VM (this machine, recorded)', () => {
  const { facts, p } = plan('vm-virtio1', 'auto', { mode: 'auto' });
  assert.deepEqual(
    p.interfaces[0]!.irqs.map((q) => [q.irq, q.cpus]),
    [
      [38, '0'],
      [39, '0'],
    ],
    'rx and tx of queue 0 on one CPU',
  );
  assert.equal(p.workerCpus, '1');
  assert.deepEqual(
    p.interfaces[0]!.rps,
    [{ queue: 'rx-0', cpus: '1', flowCnt: 32768 }],
    'RPS+RFS moves protocol work to the worker',
  );
  assert.deepEqual(p.interfaces[0]!.xps, [], 'no XPS with one tx queue (the kernel refuses xps_cpus)');
  const writes = affinityWrites(p, facts);
  assert.deepEqual(
    writes.find((w) => w.key === 'eth0/rx-0/rps_cpus')?.value,
    '2',
    'mask of CPU 1, one digit for 2 possible CPUs',
  );
  const ex = plan('vm-virtio1', 'explicit', {
    mode: 'explicit',
    irqCpus: '1',
    workerCpus: '0-1',
    rps: 'off',
    interfaces: ['eth0'],
  });
  assert.equal(ex.p.workers, 2);
  assert.deepEqual(ex.p.interfaces[0]!.rps, []);
  assert.equal(ex.p.rpsSockFlowEntries, null);
  const bad = plan('vm-virtio1', 'explicit-offline', {
    mode: 'explicit',
    irqCpus: '1,7',
    workerCpus: '0',
    interfaces: ['eth0', 'eth9'],
  });
  assert.deepEqual(bad.p.problems, [
    'affinity.interfaces: eth9 does not exist on this node',
    'affinity.irqCpus: CPUs 7 are offline or reserved on this node; ignored',
  ]);
});

test('hyper-threaded 8-core, mlx5 with 8 channels', () => {
  const { facts, p } = plan('ht8-mlx5', 'auto', { mode: 'auto' });
  const ifc = p.interfaces[0]!;
  assert.equal(ifc.irqs.length, 8, 'mlx5_comp0..7, not mlx5_async0');
  assert.ok(!cpuList(p.irqCpus).includes(0), 'core 0 is kept for housekeeping');
  assert.deepEqual(cpuList(p.irqCpus), [1, 2]);
  const busy = siblingsOf(facts, cpuList(p.irqCpus));
  assert.ok(cpuList(p.workerCpus).every((c) => !busy.has(c)));
  assert.equal(p.workers, 12);
  const capped = plan('ht8-mlx5', 'max-workers', { mode: 'auto', maxWorkers: 4 });
  const cores = new Set(cpuList(capped.p.workerCpus).map((c) => c % 8));
  assert.equal(cores.size, 4, 'capped workers land on distinct physical cores first');
  const xpsUnion = capped.p.interfaces[0]!.xps.flatMap((x) => cpuList(x.cpus));
  assert.equal(xpsUnion.length, 16);
  const w = affinityWrites(capped.p, facts).find((x) => x.key === 'enp1s0f0np0/rx-0/rps_cpus')!;
  assert.deepEqual(cpuMask(w.value), cpuList(capped.p.workerCpus), 'rps mask = worker CPUs');
});

test('off plans nothing', () => {
  const facts = readNodeFacts(join(TESTDATA, 'numa2-ixgbe', 'root'));
  const p = planAffinity(Tuning.parse({ affinity: { mode: 'off' } }).affinity, facts);
  assert.deepEqual(affinityWrites(p, facts), []);
  assert.equal(p.workers, 0);
});

test('queue IRQ names of common drivers', () => {
  const lines = parseInterrupts(
    '           CPU0       CPU1\n 40:  1  2  PCI-MSIX-0000:00:03.0 2-edge  virtio2-output.3\n 41: 0 0 IR-PCI-MSI 524288-edge  i40e-eth0-TxRx-12\n 42: 0 0 IR-PCI-MSI 1-edge ena-Tx-Rx-2\n 43: 0 0 IR-PCI-MSI 2-edge eth1-rx-5\n 44: 0 0 IR-PCI-MSI 3-edge mlx5_async0@pci:0000:01:00.0\n NMI: 0 0 Non-maskable\n',
  );
  assert.deepEqual(
    lines.map(classifyQueueIrq).map((q) => q && [q.irq, q.kind, q.queue, q.count]),
    [[40, 'tx', 3, 3], [41, 'combined', 12, 0], [42, 'combined', 2, 0], [43, 'rx', 5, 0], undefined],
  );
});
