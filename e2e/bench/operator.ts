// npm run bench:operator -- [--nodes 1000] [--steady 60] [--churn 60] [--changes 100]
// The operator at fleet scale (issue 17) on a real kube-apiserver + etcd (e2e/testenv) with kwok
// keeping N Node objects Ready (Lease heartbeats, as kubelets), in 3 zones. Half the nodes are in
// 50 pools with one TransparentProxy each (replicas 3, disjoint selectors), the other half are the
// candidates of one TransparentProxy without replicas (one TransparentProxy per node: the two
// groups cannot overlap). No kube-controller-manager runs, so no pod exists: this measures the
// operator, not a rollout. The operator runs as its compiled bundle (images/bundle.ts) with the node
// flags of its image's launcher (images/bin/tpfleet-operator), what the image runs, in a child
// process, talking to the API server only through a counting proxy.
// Prints the figures as JSON and as markdown rows for docs/benchmarks.md.
import { readFileSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { KubeClient, type KubeObject, type WatchEvent } from '../../kube/client.ts';
import { bundle } from '../../images/bundle.ts';
import { activeLabelKey, names } from '../../operator/render/names.ts';
import { KWOK_ANNOTATION, STAGES } from '../cluster/local-kwok.ts';
import { ensureBinaries } from '../testenv/binaries.ts';
import { createNamespace, installCrd, setNodeReady, tpPath, waitFor } from '../testenv/fixtures.ts';
import { freePort, startProcess, startTestEnv, stopProcess, tail } from '../testenv/testenv.ts';
import { startCountingProxy } from './counting-proxy.ts';

const { values: a } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1000' },
    steady: { type: 'string', default: '60' },
    churn: { type: 'string', default: '60' },
    changes: { type: 'string', default: '100' },
  },
});
const N = Number(a.nodes),
  STEADY_S = Number(a.steady),
  CHURN_S = Number(a.churn),
  CHANGES = Number(a.changes);
const NS = 'bench';
const FLEETS = 50;
const IMAGE = 'registry.example/tpfleet-node';
type Obj = KubeObject & { spec?: any; status?: any };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (m: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${m}\n`);
const fleet = (i: number) => `f${String(i).padStart(2, '0')}`;

/** The node flags the operator image's launcher runs the bundle with (one place states them). */
function launcherFlags(): string[] {
  const file = join(import.meta.dirname, '..', '..', 'images', 'bin', 'tpfleet-operator');
  const m = /^exec node (.*?)\s*\/opt\/tpfleet\/dist\/tpfleet-operator\.mjs /m.exec(readFileSync(file, 'utf8'));
  if (!m) throw new Error(`${file}: no "exec node ... /opt/tpfleet/dist/tpfleet-operator.mjs" line`);
  return m[1]!.split(/\s+/).filter(Boolean);
}

function nodeBody(name: string, zone: number, pool: string) {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: { 'kubernetes.io/hostname': name, 'topology.kubernetes.io/zone': `z${zone}`, pool },
      annotations: { [KWOK_ANNOTATION.key]: KWOK_ANNOTATION.value },
    },
    spec: {},
  };
}
/** Pool of original node i: the first half in 50 pools, the second half the wide fleet's. */
const poolOf = (i: number) => (i < N / 2 ? `p${String(Math.floor(i / (N / 2 / FLEETS))).padStart(2, '0')}` : 'all');

async function inBatches<T>(items: T[], size: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

/** Creates a node kwok will play and lifts the not-ready taint TaintNodesByCondition put on it (no node controller runs). */
async function addNode(c: KubeClient, name: string, zone: number, pool: string): Promise<void> {
  await c.create('/api/v1/nodes', nodeBody(name, zone, pool));
  await c.mergePatch(`/api/v1/nodes/${name}`, { spec: { taints: null } });
}

function scrape(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.on('timeout', () => req.destroy());
  });
}
const metricSum = (text: string, name: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith(name) && !l.startsWith(`${name}_`))
    .reduce((s, l) => s + Number(l.split(' ').pop()), 0);

/** Where the operator's memory is, from its own /metrics (prom-client's default metrics), in MiB. */
function memoryBreakdown(text: string, rssMB: number) {
  const mib = (name: string, space?: string) => {
    const line = text.split('\n').find((l) => l.startsWith(space ? `${name}{space="${space}"}` : `${name} `));
    return Math.round((Number(line?.split(' ').pop() ?? Number.NaN) / 2 ** 20) * 10) / 10;
  };
  return {
    rssMB: Math.round(rssMB),
    heapUsedMB: mib('nodejs_heap_size_used_bytes'),
    heapTotalMB: mib('nodejs_heap_size_total_bytes'),
    oldSpaceMB: mib('nodejs_heap_space_size_total_bytes', 'old'),
    newSpaceMB: mib('nodejs_heap_space_size_total_bytes', 'new'),
    codeSpaceMB: mib('nodejs_heap_space_size_total_bytes', 'code'),
    externalMB: mib('nodejs_external_memory_bytes'),
  };
}

/** CPU seconds (user+system) and RSS of a process, from /proc. */
function procStat(pid: number): { cpuS: number; rssMB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuS = (Number(f[11]) + Number(f[12])) / 100;
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuS, rssMB: Number(rss?.[1] ?? 0) / 1024 };
}

/** Phase accounting: requests by verb/resource, operator CPU and peak RSS over a span. */
class Phase {
  private t0 = Date.now();
  private cpu0: number;
  peakRss = 0;
  private timer: NodeJS.Timeout;
  constructor(
    private readonly pid: number,
    private readonly proxy: Awaited<ReturnType<typeof startCountingProxy>>,
  ) {
    proxy.reset();
    this.cpu0 = procStat(pid).cpuS;
    this.timer = setInterval(() => {
      this.peakRss = Math.max(this.peakRss, procStat(pid).rssMB);
    }, 500);
  }
  end() {
    clearInterval(this.timer);
    const s = procStat(this.pid);
    this.peakRss = Math.max(this.peakRss, s.rssMB);
    const secs = (Date.now() - this.t0) / 1000;
    const perMin = Object.fromEntries(
      [...this.proxy.reset()].sort().map(([k, v]) => [k, Math.round((v * 600) / secs) / 10]),
    );
    const writes = Object.entries(perMin)
      .filter(([k]) => /^(create|update|patch|delete) /.test(k) && !k.endsWith(' leases'))
      .reduce((x, [, v]) => x + v, 0);
    return {
      seconds: Math.round(secs),
      requestsPerMin: perMin,
      writesPerMinExclLease: Math.round(writes * 10) / 10,
      cpuPct: Math.round(((s.cpuS - this.cpu0) / secs) * 1000) / 10,
      peakRssMB: Math.round(this.peakRss),
    };
  }
}
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

async function main(): Promise<void> {
  const started = Date.now();
  const bin = await ensureBinaries(['kwok', 'kube-apiserver', 'etcd', 'kubectl']);
  const env = await startTestEnv();
  const cleanup: (() => Promise<void>)[] = [() => env.stop()];
  const result: Record<string, unknown> = { nodes: N, fleets: FLEETS + 1 };
  try {
    const c = new KubeClient(env.kubeConfig, 'bench');
    await installCrd(c);
    for (const ns of [NS, 'tpfleet-system', 'kube-node-lease']) await createNamespace(c, ns);
    log(`creating ${N} nodes`);
    await inBatches(
      Array.from({ length: N }, (_, i) => i),
      20,
      (i) => addNode(c, `n${String(i).padStart(5, '0')}`, i % 3, poolOf(i)),
    );
    const kwokLog = join(env.dir, 'kwok.log');
    const kwok = startProcess(
      join(bin, 'kwok'),
      [
        `--kubeconfig=${env.kubeconfigPath}`,
        `--config=${STAGES}`,
        '--manage-all-nodes=false',
        `--manage-nodes-with-annotation-selector=${KWOK_ANNOTATION.key}=${KWOK_ANNOTATION.value}`,
        '--node-lease-duration-seconds=40',
        '--cidr=10.244.0.0/16',
      ],
      kwokLog,
    );
    cleanup.unshift(() => stopProcess(kwok));
    await waitFor(
      'kwok: every node Ready',
      async () => {
        if (kwok.exitCode !== null) throw new Error(`kwok exited: ${tail(kwokLog)}`);
        const l = await c.list('/api/v1/nodes', { limit: '5000' });
        const ready = l.items.filter((n) =>
          (n as Obj).status?.conditions?.some((x: any) => x.type === 'Ready' && x.status === 'True'),
        ).length;
        return ready === N;
      },
      300_000,
    );
    log('nodes Ready; starting the operator (bundle)');

    const dist = join(env.dir, 'dist');
    await bundle(dist);
    const proxy = await startCountingProxy(env.server, env.kubeConfig);
    cleanup.unshift(() => proxy.close());
    const kcPath = join(env.dir, 'operator.kubeconfig');
    writeFileSync(
      kcPath,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          { name: 'p', cluster: { server: `http://127.0.0.1:${proxy.port}`, 'insecure-skip-tls-verify': true } },
        ],
        users: [{ name: 'u', user: {} }],
        contexts: [{ name: 'c', context: { cluster: 'p', user: 'u' } }],
        'current-context': 'c',
      }),
    );
    const mport = await freePort();
    const nodeFlags = launcherFlags();
    result.operatorNodeFlags = nodeFlags;
    const spawnOperator = () =>
      startProcess(
        process.execPath,
        [
          ...nodeFlags,
          join(dist, 'tpfleet-operator.mjs'),
          `--kubeconfig=${kcPath}`,
          `--bind=127.0.0.1:${mport}`,
          '--lease-namespace=tpfleet-system',
          '--webhook=false',
          `--namespaces=${NS}`,
          '--allowed-images=registry.example/',
          `--image=${IMAGE}:bench`,
          '--log-level=warn',
        ],
        join(env.dir, 'operator.log'),
      );
    let op = spawnOperator();
    cleanup.unshift(() => stopProcess(op));
    log(`operator pid ${op.pid}, metrics on ${mport}, proxy on ${proxy.port}`);
    const synced = async () => {
      const m = (await scrape(mport, '/metrics')).body;
      return (
        (await scrape(mport, '/readyz')).status === 200 &&
        metricSum(m, 'tpfleet_operator_leader') === 1 &&
        metricSum(m, 'tpfleet_operator_queue_depth') === 0 &&
        metricSum(m, 'tpfleet_operator_reconcile_total') >= FLEETS + 1
      );
    };

    const t0 = Date.now();
    log('creating the TransparentProxies');
    for (let i = 0; i < FLEETS; i++)
      await c.create(tpPath(NS), {
        apiVersion: 'tpfleet.io/v1alpha1',
        kind: 'TransparentProxy',
        metadata: { name: fleet(i) },
        spec: { replicas: 3, nodeSelector: { pool: `p${String(i).padStart(2, '0')}` } },
      });
    await c.create(tpPath(NS), {
      apiVersion: 'tpfleet.io/v1alpha1',
      kind: 'TransparentProxy',
      metadata: { name: 'wide' },
      spec: { nodeSelector: { pool: 'all' } },
    });
    const allReconciled = async () => {
      const l = (await c.list(tpPath(NS))).items as Obj[];
      const done = l.filter((t) => t.status?.observedGeneration === t.metadata.generation).length;
      if (Math.random() < 0.02) log(`${done} of ${l.length} reconciled`);
      return (
        l.length === FLEETS + 1 &&
        l.every(
          (t) =>
            t.status?.observedGeneration === t.metadata.generation &&
            t.status?.conditions?.some((x: any) => x.type === 'InvalidSpec' && x.status === 'False'),
        )
      );
    };
    log('waiting for every fleet to be reconciled');
    await waitFor('every fleet reconciled', allReconciled, 300_000);
    result.initialSyncS = (Date.now() - t0) / 1000;
    const wide = (await c.get<Obj>(tpPath(NS, 'wide')))!;
    result.wideStatus = {
      replicas: wide.status.replicas,
      listed: wide.status.nodes?.length,
      nodeCounts: wide.status.nodeCounts,
      bytes: Buffer.byteLength(JSON.stringify(wide.status)),
    };
    log(`all reconciled in ${result.initialSyncS} s; settling`);
    await waitFor('queue empty', synced, 120_000);
    await sleep(10_000);

    let phase = new Phase(op.pid!, proxy);
    await sleep(STEADY_S * 1000);
    result.steady = phase.end();
    result.memorySteady = memoryBreakdown((await scrape(mport, '/metrics')).body, procStat(op.pid!).rssMB);
    log(`steady: ${JSON.stringify(result.steady)} ${JSON.stringify(result.memorySteady)}`);

    // Spec change -> DaemonSet applied: watch the DaemonSets, patch one fleet's image at a time.
    const seen = new Map<string, { image: string; at: number }>();
    const abort = new AbortController();
    const dsWatch = c
      .watch(
        `/apis/apps/v1/namespaces/${NS}/daemonsets`,
        {},
        (e: WatchEvent) => {
          const o = e.object as Obj;
          const images = (o.spec?.template?.spec?.containers ?? []).map((x: any) => x.image);
          for (const image of images) if (image.includes(':c')) seen.set(o.metadata.name, { image, at: Date.now() });
        },
        abort.signal,
      )
      .catch(() => undefined);
    await sleep(1000);
    phase = new Phase(op.pid!, proxy);
    const lat: number[] = [];
    for (let i = 0; i < CHANGES; i++) {
      const f = fleet(i % FLEETS),
        image = `${IMAGE}:c${i}`;
      const start = Date.now();
      await c.mergePatch(tpPath(NS, f), { spec: { proxy: { image } } });
      await waitFor(`${f} DaemonSet with ${image}`, async () => seen.get(names(f).daemonSet)?.image === image, 30_000);
      lat.push(seen.get(names(f).daemonSet)!.at - start);
    }
    abort.abort();
    await dsWatch;
    result.specToDaemonSetMs = { n: lat.length, p50: pct(lat, 50), p99: pct(lat, 99), max: Math.max(...lat) };
    result.specChanges = phase.end();
    log(`spec -> DS: ${JSON.stringify(result.specToDaemonSetMs)}`);

    // A node NotReady -> a replacement active (kwok lets go of it first, or it would set it Ready again).
    const repl: number[] = [];
    for (let k = 0; k < 3; k++) {
      const f = fleet(10 + k),
        label = activeLabelKey(NS, f);
      const active = async () =>
        (await c.list('/api/v1/nodes', { labelSelector: `${label}=true` })).items.map((n) => n.metadata.name);
      const victim = (await active())[0]!;
      await c.mergePatch(`/api/v1/nodes/${victim}`, { metadata: { annotations: { [KWOK_ANNOTATION.key]: null } } });
      const start = Date.now();
      await setNodeReady(c, victim, false);
      await waitFor(
        `${f}: a replacement for ${victim}`,
        async () => (await active()).filter((n) => n !== victim).length === 3,
        30_000,
      );
      repl.push(Date.now() - start);
    }
    result.notReadyToReplacementMs = repl;
    log(`NotReady -> replacement: ${repl.join(', ')} ms`);
    await sleep(5000);

    // Churn: 100 nodes added and 100 removed per minute, spread evenly.
    phase = new Phase(op.pid!, proxy);
    const steps = Math.round((CHURN_S / 60) * 200);
    const victims = Array.from({ length: N }, (_, i) => i).filter((i) => i % 7 === 3);
    for (let s = 0; s < steps; s++) {
      const t = Date.now();
      if (s % 2 === 0) {
        const j = s / 2;
        await addNode(c, `churn-${String(j).padStart(4, '0')}`, j % 3, j % 2 ? poolOf((j * 37) % (N / 2)) : 'all');
      } else {
        const i = victims[((s - 1) / 2) % victims.length]!;
        await c.delete(`/api/v1/nodes/n${String(i).padStart(5, '0')}`);
      }
      await sleep(Math.max(0, (CHURN_S * 1000) / steps - (Date.now() - t)));
    }
    result.churn = phase.end();
    log(`churn: ${JSON.stringify(result.churn)}`);
    await sleep(10_000);

    // Restart -> full sync (caches listed, leader, every fleet reconciled once, queue empty).
    // SIGTERM, as a rollout does: the old leader releases the Lease on its way out.
    const exited = new Promise((r) => op.once('exit', r));
    op.kill('SIGTERM');
    await exited;
    const r0 = Date.now();
    op = spawnOperator();
    phase = new Phase(op.pid!, proxy);
    await waitFor('readyz after restart', async () => (await scrape(mport, '/readyz')).status === 200, 60_000);
    const readyS = (Date.now() - r0) / 1000;
    await waitFor('synced after restart', synced, 120_000);
    result.restart = { readyzS: readyS, fullSyncS: (Date.now() - r0) / 1000, ...phase.end() };
    log(`restart: ${JSON.stringify(result.restart)}`);
    phase = new Phase(op.pid!, proxy);
    await sleep(Math.min(STEADY_S, 30) * 1000);
    result.steadyAfterRestart = phase.end();
    result.memoryAfterRestart = memoryBreakdown((await scrape(mport, '/metrics')).body, procStat(op.pid!).rssMB);
    result.totalS = Math.round((Date.now() - started) / 1000);
  } catch (e) {
    log(`failed: ${(e as Error).stack}`);
    throw e;
  } finally {
    try {
      log(`operator log:\n${tail(join(env.dir, 'operator.log'), 20)}`);
    } catch {}
    // Bounded: a child that already went would leave its exit promise pending with nothing else alive.
    for (const f of cleanup) await Promise.race([f().catch(() => undefined), sleep(5000)]);
  }
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

let finished = false;
process.on('beforeExit', () => {
  if (!finished) log('event loop empty before the bench finished (a cleanup step hung)');
});
main().then(
  () => {
    finished = true;
  },
  (e: Error) => {
    process.stderr.write(`bench:operator: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
