// `npm run bench:dataplane`: the data-path benchmark. Every path gets the same topology (client ⇄ proxy ⇄
// server namespaces, built fresh for each path and each phase so no path inherits another's TIME_WAIT
// sockets) and the same interception rules installed by our node agent; it measures the direct path,
// HAProxy in TPROXY mode (with and without splice-auto) and the tpfleet sidecar as the image runs it
// (the compiled bundle, plain node), prints the table with ratios against HAProxy and writes it, with the
// machine's description, into docs/benchmarks.md.
//
// The client namespace keeps the kernel's default sysctls, as a pod's do (issue 21); --client tuned sets
// tcp_tw_reuse=1 and a wide port range there instead (a labelled variant, never the default).
//
// Throughput and keep-alive are measured in --rounds rounds (default 3) that visit every path in turn, each
// on a fresh proxy; the table shows the median of the rounds (every sample is printed below it), so slow
// drift of a shared 2-vCPU machine hits every path alike.
//
// Options: --seconds N (per measurement, default 10), --rounds N, --runs N (back-to-back Connection: close
// runs of the churn series, default 6), --idle N (idle connections for the memory test, default 5000),
// --paths direct,haproxy,haproxy-splice,tpfleet[,tpfleet-copy][,tpfleet-policy] (tpfleet-copy: the engine
// with splice off; tpfleet-policy: an egress policy of 1,000 rules, half CIDR, half SNI wildcards, that
// every connection must be peeked for and none matches, so the default Allow carries it: issue 13),
// --workers N (sidecar engine threads and HAProxy threads, default 2), --client default|tuned, --no-write,
// --label NAME (writes its own section, e.g. `run 2`, so repeated runs are all recorded).
import { mkdirSync, copyFileSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { bundle } from '../../images/bundle.ts';
import { createTopology, nsExec, privilegedSkipReason, waitFor, type Topology } from '../netns.ts';
import {
  agent,
  httpStatus,
  nodeConfigYaml,
  peer,
  REPO,
  scratch,
  scrape,
  startInNs,
  startPeerServer,
  tsNode,
  type Proc,
} from '../proc.ts';
import { iperf3, treeRss, wrk } from './measure.ts';
import { haproxyConf, haproxyCumConns, nginxConf, startHaproxy, startIperfServer, startNginx } from './peers.ts';
import { describeMachine, renderTable, writeSection, type Row } from './report.ts';

const { values: opt } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    runs: { type: 'string', default: '6' },
    idle: { type: 'string', default: '5000' },
    rounds: { type: 'string', default: '3' },
    paths: { type: 'string', default: 'direct,haproxy,haproxy-splice,tpfleet' },
    workers: { type: 'string', default: '2' },
    client: { type: 'string', default: 'default' },
    label: { type: 'string', default: '' },
    'no-write': { type: 'boolean', default: false },
  },
});
const SECONDS = Number(opt.seconds),
  RUNS = Number(opt.runs),
  IDLE = Number(opt.idle),
  WORKERS = Number(opt.workers);
const ROUNDS = Number(opt.rounds);
const THROUGHPUT_KEYS = ['iperf1', 'iperf4', 'cpuPerGB', 'kaRps', 'kaP99ms'] as const;
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const LISTEN = 15101,
  METRICS = 15190,
  HOLD_PORT = 7000;

type ProxyKind = 'direct' | 'haproxy' | 'haproxy-splice' | 'tpfleet' | 'tpfleet-copy' | 'tpfleet-policy';

/**
 * The tpfleet-policy path's 1,000 rules: 500 Deny rules on destinations the benchmark never uses
 * (CIDRs, IPv4 and IPv6) and 500 Deny rules on SNI wildcards with no address criterion. Those apply to
 * every connection, so the engine peeks each one (the HTTP request's Host, iperf3's cookie), matches
 * no name and lets the default Allow decide: the costliest shape of a policy that still forwards.
 */
function benchPolicy(): object {
  const rules = [];
  for (let i = 0; i < 500; i++) {
    const destinations = i % 2 ? [`2001:db8:${i.toString(16)}::/48`] : [`198.${18 + (i >> 8)}.${i & 255}.0/24`];
    rules.push({ name: `cidr-${i}`, match: { destinations }, action: 'Deny' });
    rules.push({ name: `sni-${i}`, match: { serverNames: [`*.blocked-${i}.example`] }, action: 'Deny' });
  }
  return { defaultAction: 'Allow', rules };
}
type Scratch = ReturnType<typeof scratch>;
interface Running {
  proc?: Proc;
  served(): Promise<number>;
}

/** The compiled sidecar and agent as the node image carries them (images/bundle.ts), addon beside them. */
async function productionBundles(dir: Scratch): Promise<string> {
  const dist = path.join(dir.dir, 'dist');
  await bundle(dist);
  mkdirSync(path.join(dist, 'build/Release'), { recursive: true });
  copyFileSync(
    path.join(REPO, 'sidecar/native/build/Release/tpfleet_native.node'),
    path.join(dist, 'build/Release/tpfleet_native.node'),
  );
  return dist;
}
let DIST = '';
/** argv of the sidecar as images/bin/tpfleet-sidecar runs it (minus the capability launcher: we are root). */
const sidecarArgv = (cfg: string) => [
  process.execPath,
  '--lite-mode',
  path.join(DIST, 'tpfleet-sidecar.mjs'),
  '--config',
  cfg,
];

async function startProxy(kind: ProxyKind, t: Topology, dir: Scratch): Promise<Running> {
  if (kind === 'direct') return { served: async () => 0 };
  if (kind.startsWith('tpfleet')) {
    const cfg = dir.file(
      'sidecar.yaml',
      nodeConfigYaml({
        proxy: { listenPort: LISTEN, metricsPort: METRICS, keepClientIp: true, workers: WORKERS, logLevel: 'warn' },
        ...(kind === 'tpfleet-policy' ? { policy: benchPolicy() } : {}),
      }),
    );
    const proc = await startInNs(t.proxy.ns, sidecarArgv(cfg), {
      env: kind === 'tpfleet-copy' ? { TPFLEET_ENGINE_SPLICE: 'off' } : {},
    });
    await waitFor(
      'the sidecar to be ready',
      async () => (await httpStatus(t.proxy.ns, METRICS, '/readyz')) === 200,
      20_000,
      50,
    );
    return {
      proc,
      served: async () => (await scrape(t.proxy.ns, METRICS)).get('tpfleet_proxy_connections_accepted_total') ?? 0,
    };
  }
  const conf = dir.file(
    `${kind}.cfg`,
    haproxyConf({
      dir: dir.dir,
      port: LISTEN,
      threads: WORKERS,
      splice: kind === 'haproxy-splice',
      keepClientIp: true,
      maxconn: kind === 'haproxy' ? 9000 : 6000,
    }),
  );
  const proc = await startHaproxy(t.proxy.ns, conf);
  const sock = path.join(dir.dir, 'haproxy.sock');
  await waitFor('haproxy stats socket', async () => (await haproxyCumConns(sock)) >= 0);
  return { proc, served: () => haproxyCumConns(sock) };
}

/** A fresh topology with the servers and the agent's rules (nftables, FailClosed); `fn` runs inside it. */
async function inTopology<T>(dir: Scratch, kind: ProxyKind, fn: (t: Topology) => Promise<T>): Promise<T> {
  const t = await createTopology('bn');
  const procs: Proc[] = [];
  const state = path.join(dir.dir, `agent-state-${t.prefix}`);
  const cfg = dir.file(
    'agent.yaml',
    nodeConfigYaml({
      interception: {
        ports: [{ port: 80 }, { port: 5201 }, { port: HOLD_PORT, endPort: HOLD_PORT + 1 }],
        destinations: { include: [`${t.server.v4}/32`] },
        ipFamilies: ['IPv4'],
        failurePolicy: 'FailClosed',
      },
      proxy: { listenPort: LISTEN, metricsPort: METRICS, keepClientIp: true },
    }),
  );
  try {
    if (opt.client === 'tuned')
      await nsExec(t.client.ns, [
        'sysctl',
        '-qw',
        'net.ipv4.tcp_tw_reuse=1',
        'net.ipv4.ip_local_port_range=1024 65000',
      ]);
    const srv = t.server.v4;
    procs.push(await startNginx(t.server.ns, dir.file('nginx.conf', nginxConf(dir.dir, [`${srv}:80`]))));
    procs.push(await startIperfServer(t.server.ns, srv));
    procs.push(await startPeerServer(t.server.ns, [`${srv}:${HOLD_PORT}`], 'hold'));
    procs.push(await startPeerServer(t.server.ns, [`${srv}:${HOLD_PORT + 1}`]));
    await waitFor('nginx', async () =>
      (await nsExec(t.client.ns, ['wrk', '-t1', '-c1', '-d1s', `http://${srv}/`])).includes('requests in'),
    );
    if (kind !== 'direct') await agent(t.proxy.ns, 'apply', cfg, state); // the direct path: no rules at all
    return await fn(t);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await agent(t.proxy.ns, 'cleanup', cfg, state).catch(() => undefined);
    await t.destroy();
  }
}

/** CPU seconds (user + system) of a process and its threads so far, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

async function proveInPath(kind: ProxyKind, t: Topology, running: Running): Promise<void> {
  // nft tproxy fails open silently (pitfall 2): a figure only counts if the proxy carried traffic.
  const p = await peer(t.client.ns, ['probe', '--to', `${t.server.v4}:${HOLD_PORT + 1}`]);
  if (kind !== 'direct' && !((await running.served()) > 0))
    throw new Error(`${kind} is not in the path (probe: ${JSON.stringify(p)})`);
}

/** Throughput, CPU per GB and keep-alive requests, on one proxy process. */
async function throughput(kind: ProxyKind, t: Topology, dir: Scratch, row: Row): Promise<void> {
  const running = await startProxy(kind, t, dir);
  try {
    await proveInPath(kind, t, running);
    const srv = t.server.v4;
    row.iperf1 = await iperf3(t.client.ns, srv, 1, SECONDS);
    const pid = running.proc?.child.pid;
    const cpu0 = pid ? cpuSeconds(pid) : 0;
    row.iperf4 = await iperf3(t.client.ns, srv, 4, SECONDS);
    if (pid) row.cpuPerGB = (cpuSeconds(pid) - cpu0) / ((row.iperf4 * SECONDS) / 8);
    const ka = await wrk(t.client.ns, `http://${srv}/`, SECONDS, false);
    if (ka.errors > 0) console.error(`${kind}: keep-alive wrk errors ${ka.errors}/${ka.requests}`);
    row.kaRps = ka.rps;
    row.kaP99ms = ka.p99ms;
  } finally {
    await running.proc?.stop();
  }
}

/** Memory per idle connection, on a fresh proxy process (a warmed one absorbs them in its pools). */
async function idleMemory(kind: ProxyKind, t: Topology, dir: Scratch): Promise<number | undefined> {
  if (kind === 'direct') return undefined;
  const running = await startProxy(kind, t, dir);
  try {
    await peer(t.client.ns, ['probe', '--to', `${t.server.v4}:${HOLD_PORT + 1}`]); // warm: one connection first
    const pid = running.proc!.child.pid!;
    const before = treeRss(pid);
    const holder = await startInNs(
      t.client.ns,
      [...tsNode('e2e/tools/peer.ts'), 'hold', '--to', `${t.server.v4}:${HOLD_PORT}`, '--count', String(IDLE)],
      {
        ready: /"held":\d+/,
        readyTimeoutMs: 120_000,
      },
    );
    try {
      const r = JSON.parse(/\{"held".*\}/.exec(holder.output())![0]) as { held: number; failed: number };
      if (r.failed > 0) throw new Error(`${r.failed} of ${IDLE} idle connections failed`);
      await sleep(2000); // let allocations settle
      return (treeRss(pid) - before) / IDLE / 1024;
    } finally {
      await holder.stop();
    }
  } finally {
    await running.proc?.stop();
  }
}

/** The churn series (issue 21): RUNS back-to-back `Connection: close` runs; first, last, last/first. */
async function churn(kind: ProxyKind, t: Topology, dir: Scratch, row: Row): Promise<number[]> {
  const running = await startProxy(kind, t, dir);
  try {
    await proveInPath(kind, t, running);
    const rates: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await wrk(t.client.ns, `http://${t.server.v4}/`, SECONDS, true);
      if (r.errors > r.requests / 100)
        console.error(`${kind}: churn run ${i + 1}: wrk errors ${r.errors}/${r.requests}`);
      rates.push(r.rps);
    }
    row.connPerSec = rates[0];
    row.connLast = rates.at(-1);
    row.churnRatio = rates.at(-1)! / rates[0]!;
    console.error(`${kind}: churn ${rates.map((r) => r.toFixed(0)).join(' / ')}`);
    return rates;
  } finally {
    await running.proc?.stop();
  }
}

interface Footprint {
  rssMiB: number;
  pssMiB: number;
  sidecarRssMiB: number;
  watchRssMiB: number;
  readyMs: number[];
}

/** What tpfleet costs a node at rest: sidecar + watchdog RSS and PSS, and exec -> /readyz 200. */
async function footprint(t: Topology, dir: Scratch): Promise<Footprint> {
  const cfg = dir.file(
    'idle.yaml',
    nodeConfigYaml({ proxy: { listenPort: LISTEN, metricsPort: METRICS, keepClientIp: true, workers: WORKERS } }),
  );
  const readyMs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const out = await nsExec(t.proxy.ns, [
      ...tsNode('e2e/tools/ready-timer.ts'),
      '--port',
      String(METRICS),
      '--',
      ...sidecarArgv(cfg),
    ]);
    readyMs.push((JSON.parse(out.trim().split('\n').pop()!) as { readyMs: number }).readyMs);
  }
  const sidecar = await startInNs(t.proxy.ns, sidecarArgv(cfg), { ready: /"msg":"listening"/ });
  const state = path.join(dir.dir, `agent-state-${t.prefix}`);
  const watch = await startInNs(
    t.proxy.ns,
    [
      process.execPath,
      '--lite-mode',
      path.join(DIST, 'tpfleet-agent.mjs'),
      'watch',
      '--config',
      cfg,
      '--state-dir',
      state,
    ],
    { ready: /watchdog started/ },
  );
  try {
    await sleep(5000);
    const mem = (pid: number, key: string) =>
      Number(
        new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? NaN,
      ) / 1024;
    const s = sidecar.child.pid!,
      w = watch.child.pid!;
    return {
      sidecarRssMiB: mem(s, 'Rss'),
      watchRssMiB: mem(w, 'Rss'),
      rssMiB: mem(s, 'Rss') + mem(w, 'Rss'),
      pssMiB: mem(s, 'Pss') + mem(w, 'Pss'),
      readyMs,
    };
  } finally {
    await watch.stop();
    await sidecar.stop();
  }
}

async function main(): Promise<void> {
  const skip = privilegedSkipReason();
  if (skip) {
    console.error(`bench:dataplane: ${skip}`);
    process.exit(1);
  }
  const paths = (opt.paths ?? '').split(',') as ProxyKind[];
  const dir = scratch('bench');
  try {
    DIST = await productionBundles(dir);
    const rows: Row[] = paths.map((path) => ({ path }));
    const samples: Record<string, Row[]> = Object.fromEntries(paths.map((p) => [p, []]));
    for (let round = 1; round <= ROUNDS; round++) {
      for (const kind of paths) {
        console.error(`round ${round}/${ROUNDS}: throughput and keep-alive of ${kind} (${SECONDS}s per test)...`);
        const sample: Row = { path: kind };
        await inTopology(dir, kind, (t) => throughput(kind, t, dir, sample));
        samples[kind]!.push(sample);
      }
    }
    const series: Record<string, number[]> = {};
    for (const [i, kind] of paths.entries()) {
      const row = rows[i]!;
      for (const k of THROUGHPUT_KEYS) {
        const xs = samples[kind]!.map((r) => r[k]).filter((x): x is number => typeof x === 'number');
        if (xs.length) row[k] = median(xs);
      }
      console.error(`memory and churn of ${kind} (${RUNS} runs)...`);
      row.memPerConnKiB = await inTopology(dir, kind, (t) => idleMemory(kind, t, dir));
      series[kind] = await inTopology(dir, kind, (t) => churn(kind, t, dir, row));
    }
    const fp = paths.some((p) => p.startsWith('tpfleet'))
      ? await inTopology(dir, 'tpfleet', (t) => footprint(t, dir))
      : undefined;
    const table = renderTable(rows);
    const churnLines = Object.entries(series).map(
      ([k, r]) => `- ${k}: ${r.map((x) => x.toFixed(0)).join(' / ')} req/s`,
    );
    const sampleLines = paths.map(
      (k) =>
        `- ${k}: ${THROUGHPUT_KEYS.map((key) => `${key} ${samples[k]!.map((r) => (typeof r[key] === 'number' ? r[key]!.toFixed(key === 'cpuPerGB' || key === 'kaP99ms' ? 3 : 2) : '–')).join(' / ')}`).join('; ')}`,
    );
    const fpLines = fp
      ? [
          `tpfleet at rest (${WORKERS} engine threads, compiled bundles, plain node): sidecar + watchdog RSS ${fp.rssMiB.toFixed(1)} MiB`,
          `(sidecar ${fp.sidecarRssMiB.toFixed(1)}, watchdog ${fp.watchRssMiB.toFixed(1)}; PSS of both ${fp.pssMiB.toFixed(1)} MiB: the node binary's pages are shared);`,
          `sidecar exec to /readyz 200: ${fp.readyMs.join(' / ')} ms.`,
        ]
      : [];
    console.log([table, '', ...churnLines, '', ...sampleLines, '', ...fpLines].join('\n'));
    if (!opt['no-write']) {
      writeSection(
        path.join(REPO, 'docs/benchmarks.md'),
        `${opt.client === 'tuned' ? 'dataplane-tuned-client' : 'dataplane'}${opt.label ? `-${opt.label.replace(/\W+/g, '-')}` : ''}`,
        [
          `## Data path: tpfleet sidecar vs HAProxy TPROXY vs direct (${new Date().toISOString().slice(0, 10)}${opt.client === 'tuned' ? ', tuned client' : ''}${opt.label ? `, ${opt.label}` : ''})`,
          '',
          describeMachine(),
          `- ${SECONDS}s per measurement; throughput and keep-alive: median of ${ROUNDS} rounds over all paths (samples below); wrk -t2 -c64 against nginx; client namespace at ${opt.client === 'tuned' ? '`tcp_tw_reuse=1`, ports 1024-65000 (tuned: a labelled variant)' : "the kernel's default sysctls, as a pod's"};`,
          `  ${RUNS} back-to-back \`Connection: close\` runs per path (first, last, last/first); ${IDLE} idle connections on a freshly`,
          '  started proxy for memory (RSS of the process tree after minus before, divided by the count); both proxies keep the client IP',
          `  (HAProxy \`usesrc clientip\`, ${WORKERS} threads, maxconn 9000/6000; tpfleet ${WORKERS} engine threads) behind the same node-agent rules (nftables, FailClosed);`,
          '  a fresh topology for each path and phase; proxy CPU = user + system time of the proxy process during the -P4 run.',
          '',
          table,
          '',
          'Churn series (requests/s of each run):',
          '',
          ...churnLines,
          '',
          'Samples of each round (iperf3 Gbit/s, CPU s/GB, keep-alive req/s, p99 ms):',
          '',
          ...sampleLines,
          '',
          ...fpLines,
        ].join('\n'),
      );
      console.error('written to docs/benchmarks.md');
    }
  } finally {
    dir.remove();
  }
}

await main();
