// Real kernel: an affinity plan for this machine's default-route NIC (a virtio VM here: one rx and
// one tx queue IRQ) is dry-run, applied, verified and restored. Every file touched is read before
// and after; restore must bring back the exact text. Where the kernel refuses an IRQ write (managed
// interrupts answer EIO on some drivers), the test asserts the refusal is reported with the key and
// that the value did not change, instead of the write itself.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Tuning } from '../../api/tuning.ts';
import { privilegedSkipReason } from '../../e2e/netns.ts';
import { cpuList, formatCpuList } from '../../host/cpulist.ts';
import { applyTuning, checkDrift, planTuning, readNodeFacts, restoreTuning } from './index.ts';

const skip = privilegedSkipReason();
const stateDir = mkdtempSync(join(tmpdir(), 'tpfleet-affinity-'));
after(() => rmSync(stateDir, { recursive: true, force: true }));

const readAll = (paths: string[]) => Object.fromEntries(paths.map((p) => [p, readFileSync(p, 'utf8')]));

test("affinity on this machine's NIC: dry run, apply, verify, restore exactly", { skip }, () => {
  const probe = readNodeFacts('/');
  const ifname = probe.defaultRouteInterfaces[0];
  assert.ok(ifname, 'this machine has a default-route interface');
  const facts = readNodeFacts('/', [ifname]);
  const nic = facts.interfaces[ifname]!;
  const online = facts.onlineCpus;
  // Move the IRQs to the last CPU (currently 0-1 here), workers on the first, RPS on.
  const last = online[online.length - 1]!;
  const spec = Tuning.parse({
    affinity: {
      mode: 'explicit',
      interfaces: [ifname],
      irqCpus: String(last),
      workerCpus: String(online[0]),
      rps: 'on',
      rpsSockFlowEntries: 4096,
    },
  });
  const plan = planTuning(spec, facts);
  const paths = plan.writes.map((w) => w.path);
  assert.ok(paths.length >= 1, 'something to write');
  const before = readAll(paths);

  const dry = applyTuning(plan, { stateDir, dryRun: true });
  assert.ok(dry.changed.length > 0, 'dry run lists the writes');
  for (const c of dry.changed) assert.ok(plan.writes.some((w) => w.key === c.key));
  assert.deepEqual(readAll(paths), before, 'dry run changed nothing');

  const r = applyTuning(plan, { stateDir });
  try {
    verify();
  } finally {
    const back = restoreTuning({ stateDir });
    assert.deepEqual(back.failed, []);
    assert.deepEqual(readAll(paths), before, 'every IRQ affinity and queue mask as before, byte for byte');
  }

  function verify(): void {
    for (const f of r.failed) {
      // Kernel refused (e.g. a managed IRQ): reported with its key, value untouched.
      assert.match(f.error, /E[A-Z]+/);
      const w = plan.writes.find((x) => x.key === f.key)!;
      assert.equal(readFileSync(w.path, 'utf8'), before[w.path], `${f.key} unchanged after a refused write`);
    }
    for (const q of nic.queueIrqs) {
      if (r.failed.some((f) => f.key === `irq/${q.irq}/smp_affinity_list`)) continue;
      assert.deepEqual(
        cpuList(readFileSync(`/proc/irq/${q.irq}/smp_affinity_list`, 'utf8')),
        [last],
        `IRQ ${q.irq} (${q.name}) now on CPU ${last}`,
      );
    }
    if (nic.rxQueues.length) {
      const mask = readFileSync(`/sys/class/net/${ifname}/queues/${nic.rxQueues[0]}/rps_cpus`, 'utf8');
      assert.equal(parseInt(mask.replace(/,/g, ''), 16), 1 << online[0]!, 'rps_cpus = worker CPU');
      assert.equal(
        readFileSync(`/sys/class/net/${ifname}/queues/${nic.rxQueues[0]}/rps_flow_cnt`, 'utf8').trim(),
        String(4096 / nic.rxQueues.length),
      );
    }
    assert.equal(readFileSync('/proc/sys/net/core/rps_sock_flow_entries', 'utf8').trim(), '4096');
    assert.deepEqual(checkDrift({ stateDir }).drift, []);
    assert.equal(plan.affinity.workerCpus, formatCpuList([online[0]!]));
    assert.equal(plan.affinity.workers, 1);
  }
});
