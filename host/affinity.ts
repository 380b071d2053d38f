// The pure affinity planner: tuning.affinity + NodeFacts -> which CPUs serve which NIC queue IRQs,
// RPS/RFS and XPS settings per queue, and the CPUs (hence the count) of the sidecar's workers.
// No I/O; the decisions are explained in `notes` and docs/tuning.md. Algorithm (auto):
//  1. usable = online CPUs - reservedCpus; a NIC's local CPUs = usable CPUs of its NUMA node
//     (every usable CPU when the platform does not report a node);
//  2. physical cores = groups of hyper-thread siblings; the core holding CPU 0 goes last when the
//     node has more than two cores (timers and legacy interrupts land there);
//  3. IRQ CPUs = the first thread of the first k cores, k = irqCpuCount or a quarter of the cores
//     (>= 1, <= number of queues); queues are spread round-robin, rx and tx IRQs of one queue together;
//  4. worker CPUs = local CPUs minus IRQ CPUs and their hyper-thread siblings (a worker next to a
//     busy softirq thread shares its core's execution units); first threads of every core first,
//     then second threads, capped by maxWorkers; if nothing is left, IRQ CPUs are shared (noted);
//  5. RPS/RFS when the IRQ CPUs are not the worker CPUs: protocol processing follows the worker
//     that reads the socket; XPS on multi-queue NICs: each CPU transmits on exactly one tx queue.
import type { Tuning } from '../api/tuning.ts';
import { cpuList, formatCpuList, formatCpuMask, intersect, minus, union, type CpuSet } from './cpulist.ts';
import type { InterfaceFacts, NodeFacts } from './facts.ts';
import type { Write } from './write.ts';

type AffinitySpec = Tuning['affinity'];

export interface PlannedIrq {
  irq: number;
  name: string;
  queue: number;
  kind: string;
  cpus: string;
}
export interface PlannedInterface {
  name: string;
  numaNode: number;
  localCpus: string;
  irqs: PlannedIrq[];
  rps: { queue: string; cpus: string; flowCnt: number }[];
  xps: { queue: string; cpus: string }[];
}
export interface IrqbalancePlan {
  running: boolean;
  /** What irqbalance must be told so it leaves our IRQs alone (IRQBALANCE_ARGS / IRQBALANCE_BANNED_CPULIST). */
  required: { banIrqs: number[]; bannedCpus: string } | null;
  conflict: string | null;
}
export interface AffinityPlan {
  mode: AffinitySpec['mode'];
  interfaces: PlannedInterface[];
  irqCpus: string;
  workerCpus: string;
  workers: number;
  rpsSockFlowEntries: number | null;
  irqbalance: IrqbalancePlan;
  /** Decisions worth telling the operator. */
  notes: string[];
  /** Parts of the spec that could not be honoured on this node (not fatal: the rest applies). */
  problems: string[];
}

const pow2 = (n: number): number => (n <= 1 ? n : 2 ** Math.ceil(Math.log2(n)));

/** Physical cores among `cpus`: sibling groups (restricted to `cpus`), ordered by first CPU. */
export function physicalCores(cpus: CpuSet, facts: NodeFacts): CpuSet[] {
  const seen = new Set<number>(),
    cores: CpuSet[] = [];
  for (const c of cpus) {
    if (seen.has(c)) continue;
    const group = intersect(union(facts.siblings[c] ?? [c], [c]), cpus);
    for (const g of group) seen.add(g);
    cores.push(group);
  }
  return cores;
}

/** First threads of every core, then second threads, ... (spreads load over physical cores first). */
const threadOrder = (cores: CpuSet[]): number[] => {
  const out: number[] = [];
  for (let t = 0; cores.some((c) => c.length > t); t++) for (const c of cores) if (c[t] !== undefined) out.push(c[t]!);
  return out;
};

function siblingsOf(cpus: CpuSet, facts: NodeFacts): CpuSet {
  return union(...cpus.map((c) => facts.siblings[c] ?? [c]));
}

function explicitList(field: string, text: string | undefined, usable: CpuSet, problems: string[]): CpuSet | undefined {
  if (text === undefined) return undefined;
  const want = cpuList(text);
  const off = minus(want, usable);
  if (off.length)
    problems.push(`affinity.${field}: CPUs ${formatCpuList(off)} are offline or reserved on this node; ignored`);
  return intersect(want, usable);
}

function localCpus(ifc: InterfaceFacts, facts: NodeFacts, usable: CpuSet): CpuSet {
  const node = facts.numaNodes.find((n) => n.id === ifc.numaNode);
  const local = node ? intersect(node.cpus, usable) : [];
  return local.length ? local : usable;
}

/** What every step of the plan needs; `notes`/`problems` collect explanations as it goes. */
interface Ctx {
  spec: AffinitySpec;
  facts: NodeFacts;
  usable: CpuSet;
  nics: InterfaceFacts[];
  /** Physical cores of the NICs' NUMA nodes, in IRQ preference order. */
  cores: CpuSet[];
  /** False when irqbalance runs and the spec defers to it. */
  pin: boolean;
  notes: string[];
  problems: string[];
}

export function planAffinity(spec: AffinitySpec, facts: NodeFacts): AffinityPlan {
  const notes: string[] = [],
    problems: string[] = [];
  const empty: AffinityPlan = {
    mode: spec.mode,
    interfaces: [],
    irqCpus: '',
    workerCpus: '',
    workers: 0,
    rpsSockFlowEntries: null,
    irqbalance: { running: facts.irqbalance.running, required: null, conflict: null },
    notes,
    problems,
  };
  if (spec.mode === 'off') return empty;
  const ctx = context(spec, facts, notes, problems);
  const irqCpus = chooseIrqCpus(ctx);
  const workerCpus = chooseWorkers(ctx, irqCpus);
  if (ctx.pin && irqCpus.length === 0 && ctx.nics.some((f) => f.queueIrqs.length))
    problems.push('affinity: no usable interrupt CPU; IRQs left unchanged');
  const rpsOn = spec.rps === 'on' || (spec.rps === 'auto' && minus(workerCpus, irqCpus).length > 0);
  const steer: Steering = {
    rpsCpus: rpsOn ? (explicitList('rpsCpus', spec.rpsCpus, ctx.usable, problems) ?? workerCpus) : null,
    flowEntries: rpsOn ? pow2(spec.rpsSockFlowEntries) : null,
    xpsCpus: explicitList('xpsCpus', spec.xpsCpus, ctx.usable, problems) ?? ctx.usable,
  };
  let next = 0; // round-robin position across all interfaces, so two NICs do not stack on one CPU
  const interfaces = ctx.nics.map((f) => {
    const r = planInterface(ctx, f, irqCpus, next, steer);
    next += new Set(f.queueIrqs.map((q) => q.queue)).size;
    return r;
  });
  const ourIrqs = interfaces.flatMap((i) => i.irqs.map((q) => q.irq));
  return {
    ...empty,
    interfaces,
    irqCpus: formatCpuList(irqCpus),
    workerCpus: formatCpuList(workerCpus),
    workers: workerCpus.length,
    rpsSockFlowEntries: steer.flowEntries,
    irqbalance: irqbalancePlan(spec, facts, ourIrqs, union(irqCpus, workerCpus)),
  };
}

function context(spec: AffinitySpec, facts: NodeFacts, notes: string[], problems: string[]): Ctx {
  const usable = minus(facts.onlineCpus, spec.reservedCpus ? cpuList(spec.reservedCpus) : []);
  const names = spec.interfaces.length ? spec.interfaces : facts.defaultRouteInterfaces;
  if (!spec.interfaces.length)
    notes.push(`interfaces: none given, using those with a default route: ${names.join(', ') || '(none)'}`);
  const nics = names.flatMap((n) => {
    const f = facts.interfaces[n];
    if (!f) problems.push(`affinity.interfaces: ${n} does not exist on this node`);
    else if (f.queueIrqs.length === 0)
      notes.push(`${n}: no per-queue interrupts found (driver ${f.driver ?? 'unknown'}); only RPS/XPS apply`);
    return f ? [f] : [];
  });
  const pool = union(...nics.map((f) => localCpus(f, facts, usable)));
  const cores = physicalCores(pool.length ? pool : usable, facts);
  if (cores.length > 2) cores.sort((a, b) => Number(a.includes(0)) - Number(b.includes(0)));
  // defer: irqbalance places the interrupts anywhere, so no core is set aside for them.
  const pin = !(facts.irqbalance.running && spec.irqbalance === 'defer');
  if (!pin) notes.push('irqbalance runs and irqbalance is "defer": NIC interrupts are left to it');
  return { spec, facts, usable, nics, cores, pin, notes, problems };
}

/** Explicit list, or the first thread of the first k cores (k: irqCpuCount or a quarter of the cores). */
function chooseIrqCpus(ctx: Ctx): CpuSet {
  const { spec, cores } = ctx;
  if (!ctx.pin) return [];
  const given = explicitList('irqCpus', spec.irqCpus, ctx.usable, ctx.problems);
  if (given) return given;
  const maxQueues = Math.max(1, ...ctx.nics.map((f) => new Set(f.queueIrqs.map((q) => q.queue)).size));
  const k = Math.min(spec.irqCpuCount ?? Math.max(1, Math.ceil(cores.length / 4)), cores.length, maxQueues);
  if (spec.irqCpuCount && spec.irqCpuCount > k)
    ctx.notes.push(`irqCpuCount ${spec.irqCpuCount} lowered to ${k} (cores on the NIC's node, queues)`);
  return union(cores.slice(0, k).map((c) => c[0]!));
}

/** Explicit list, or local CPUs minus IRQ CPUs and their siblings, physical cores first; capped by maxWorkers. */
function chooseWorkers(ctx: Ctx, irqCpus: CpuSet): CpuSet {
  const { spec, cores } = ctx;
  const given = explicitList('workerCpus', spec.workerCpus, ctx.usable, ctx.problems);
  if (given) return spec.maxWorkers ? given.slice(0, spec.maxWorkers) : given;
  const busy = siblingsOf(irqCpus, ctx.facts);
  let order = threadOrder(cores.map((c) => minus(c, busy)).filter((c) => c.length > 0));
  if (order.length === 0) {
    order = threadOrder(cores);
    ctx.notes.push("workers share the interrupt CPUs: the NIC's node has no other core");
  }
  return union(spec.maxWorkers ? order.slice(0, spec.maxWorkers) : order);
}

interface Steering {
  rpsCpus: CpuSet | null;
  flowEntries: number | null;
  xpsCpus: CpuSet;
}

function planInterface(ctx: Ctx, f: InterfaceFacts, irqCpus: CpuSet, start: number, steer: Steering): PlannedInterface {
  const queues = [...new Set(f.queueIrqs.map((q) => q.queue))];
  const cpuOf = new Map(queues.map((q, i) => [q, irqCpus[(start + i) % Math.max(1, irqCpus.length)]]));
  const irqs =
    ctx.pin && irqCpus.length
      ? f.queueIrqs.map((q) => ({
          irq: q.irq,
          name: q.name,
          queue: q.queue,
          kind: q.kind,
          cpus: String(cpuOf.get(q.queue)),
        }))
      : [];
  const flowCnt = steer.flowEntries ? pow2(Math.ceil(steer.flowEntries / Math.max(1, f.rxQueues.length))) : 0;
  const rps = steer.rpsCpus ? f.rxQueues.map((q) => ({ queue: q, cpus: formatCpuList(steer.rpsCpus!), flowCnt })) : [];
  // A single tx queue has nothing to steer (and the kernel refuses xps_cpus on it).
  const xpsOn = ctx.spec.xps !== 'off' && f.txQueues.length > 1;
  if (ctx.spec.xps === 'on' && f.txQueues.length <= 1)
    ctx.notes.push(`${f.name}: XPS needs more than one tx queue; skipped`);
  const xps = xpsOn
    ? f.txQueues.map((q, j) => ({
        queue: q,
        cpus: formatCpuList(steer.xpsCpus.filter((_, i) => i % f.txQueues.length === j)),
      }))
    : [];
  return {
    name: f.name,
    numaNode: f.numaNode,
    localCpus: formatCpuList(localCpus(f, ctx.facts, ctx.usable)),
    irqs,
    rps,
    xps,
  };
}

function irqbalancePlan(spec: AffinitySpec, facts: NodeFacts, irqs: number[], ours: CpuSet): IrqbalancePlan {
  const ib = facts.irqbalance;
  if (!ib.running || spec.irqbalance === 'ignore' || irqs.length === 0)
    return { running: ib.running, required: null, conflict: null };
  const required = { banIrqs: irqs, bannedCpus: formatCpuList(ours) };
  const unbanned = irqs.filter((i) => !ib.bannedIrqs.includes(i));
  const conflict =
    unbanned.length === 0
      ? null
      : `irqbalance (pid ${ib.pid}) will move IRQs ${unbanned.join(',')}; start it with IRQBALANCE_ARGS="${irqs.map((i) => `--banirq=${i}`).join(' ')}"` +
        ` and IRQBALANCE_BANNED_CPULIST=${required.bannedCpus} (keeps other devices' interrupts off the proxy's CPUs)`;
  return { running: true, required, conflict };
}

/** The kernel writes that realise a plan (IRQ affinity, RPS/RFS, XPS). */
export function affinityWrites(plan: AffinityPlan, facts: NodeFacts): Write[] {
  const w: Write[] = [];
  for (const i of plan.interfaces) {
    for (const q of i.irqs) {
      // /proc/irq/N/<action> exists while the same handler owns IRQ N (see Write.guard).
      const action = q.name.includes('/') || q.name.includes(',') ? undefined : `/proc/irq/${q.irq}/${q.name}`;
      w.push({
        key: `irq/${q.irq}/smp_affinity_list`,
        path: `/proc/irq/${q.irq}/smp_affinity_list`,
        value: q.cpus,
        compare: 'cpulist',
        group: 'affinity',
        ...(action ? { guard: action } : {}),
      });
    }
    const base = `/sys/class/net/${i.name}/queues`;
    for (const r of i.rps) {
      w.push({
        key: `${i.name}/${r.queue}/rps_cpus`,
        path: `${base}/${r.queue}/rps_cpus`,
        value: formatCpuMask(cpuList(r.cpus), facts.possibleCpus),
        compare: 'cpumask',
        group: 'affinity',
      });
      w.push({
        key: `${i.name}/${r.queue}/rps_flow_cnt`,
        path: `${base}/${r.queue}/rps_flow_cnt`,
        value: String(r.flowCnt),
        compare: 'words',
        group: 'affinity',
      });
    }
    for (const x of i.xps)
      w.push({
        key: `${i.name}/${x.queue}/xps_cpus`,
        path: `${base}/${x.queue}/xps_cpus`,
        value: formatCpuMask(cpuList(x.cpus), facts.possibleCpus),
        compare: 'cpumask',
        group: 'affinity',
      });
  }
  if (plan.rpsSockFlowEntries !== null) {
    w.push({
      key: 'net.core.rps_sock_flow_entries',
      path: '/proc/sys/net/core/rps_sock_flow_entries',
      value: String(plan.rpsSockFlowEntries),
      compare: 'words',
      group: 'affinity',
    });
  }
  return w;
}
