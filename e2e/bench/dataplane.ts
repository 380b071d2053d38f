// `npm run bench:dataplane`: the data-path benchmark. In one run and one topology (client ⇄ proxy ⇄ server
// namespaces), with the same interception rules installed by our node agent, it measures the direct path,
// HAProxy in TPROXY mode (with and without splice-auto) and the tpfleet sidecar, prints the table with
// ratios against HAProxy and writes it, with the machine's description, into docs/benchmarks.md.
//
// Options: --seconds N (per measurement, default 10), --idle N (idle connections for the memory test,
// default 5000), --paths direct,haproxy,haproxy-splice,tpfleet, --workers N (sidecar; HAProxy runs 2 threads),
// --no-write (print only).
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { createTopology, nsExec, privilegedSkipReason, waitFor, type Topology } from '../netns.ts';
import {
  agent,
  nodeConfigYaml,
  peer,
  REPO,
  scratch,
  scrape,
  startInNs,
  startPeerServer,
  startSidecar,
  tsNode,
  type Proc,
} from '../proc.ts';
import { iperf3, treeRss, wrk } from './measure.ts';
import { haproxyConf, haproxyCumConns, nginxConf, startHaproxy, startIperfServer, startNginx } from './peers.ts';
import { describeMachine, renderTable, writeSection, type Row } from './report.ts';

const { values: opt } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    idle: { type: 'string', default: '5000' },
    paths: { type: 'string', default: 'direct,haproxy,haproxy-splice,tpfleet' },
    workers: { type: 'string', default: '2' },
    'no-write': { type: 'boolean', default: false },
  },
});
const SECONDS = Number(opt.seconds),
  IDLE = Number(opt.idle);
const LISTEN = 15101,
  METRICS = 15190,
  HOLD_PORT = 7000;

type ProxyKind = 'direct' | 'haproxy' | 'haproxy-splice' | 'tpfleet';

interface Running {
  proc?: Proc;
  served(): Promise<number>;
}

async function startProxy(kind: ProxyKind, t: Topology, dir: ReturnType<typeof scratch>): Promise<Running> {
  if (kind === 'direct') return { served: async () => 0 };
  if (kind === 'tpfleet') {
    const cfg = dir.file(
      'sidecar.yaml',
      nodeConfigYaml({
        proxy: {
          listenPort: LISTEN,
          metricsPort: METRICS,
          keepClientIp: true,
          workers: Number(opt.workers),
          logLevel: 'warn',
        },
      }),
    );
    const proc = await startSidecar(t.proxy.ns, cfg);
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

async function idleMemory(t: Topology, proc: Proc): Promise<number> {
  const pid = proc.child.pid!;
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
}

async function measure(kind: ProxyKind, t: Topology, dir: ReturnType<typeof scratch>): Promise<Row> {
  const running = await startProxy(kind, t, dir);
  try {
    const srv = t.server.v4;
    // Prove the proxy is in the path before measuring it (nft tproxy fails open silently: pitfall 2).
    const p = await peer(t.client.ns, ['probe', '--to', `${srv}:${HOLD_PORT + 1}`]);
    if (kind !== 'direct' && !((await running.served()) > 0))
      throw new Error(`${kind} is not in the path (probe: ${JSON.stringify(p)})`);
    const row: Row = { path: kind };
    row.iperf1 = await iperf3(t.client.ns, srv, 1, SECONDS);
    row.iperf4 = await iperf3(t.client.ns, srv, 4, SECONDS);
    const close = await wrk(t.client.ns, `http://${srv}/`, SECONDS, true);
    const ka = await wrk(t.client.ns, `http://${srv}/`, SECONDS, false);
    if (close.errors > close.requests / 100 || ka.errors > 0) {
      console.error(
        `${kind}: wrk errors close=${close.errors}/${close.requests} keep-alive=${ka.errors}/${ka.requests}`,
      );
    }
    row.connPerSec = close.rps;
    row.kaRps = ka.rps;
    row.kaP99ms = ka.p99ms;
    console.error(`${kind}: done (${await running.served()} connections through the proxy)`);
    return row;
  } finally {
    await running.proc?.stop();
  }
}

/**
 * Memory per idle connection, on a fresh proxy process: after the load tests a process's heap and
 * pools have already grown and would absorb the idle connections (measured: Node showed 0 KiB).
 */
async function measureMemory(
  kind: ProxyKind,
  t: Topology,
  dir: ReturnType<typeof scratch>,
): Promise<number | undefined> {
  if (kind === 'direct') return undefined;
  const running = await startProxy(kind, t, dir);
  try {
    await peer(t.client.ns, ['probe', '--to', `${t.server.v4}:${HOLD_PORT + 1}`]); // warm: one connection first
    return await idleMemory(t, running.proc!);
  } finally {
    await running.proc?.stop();
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
  const t = await createTopology('bn');
  const procs: Proc[] = [];
  const state = path.join(dir.dir, 'agent-state');
  let rulesOn = false;
  try {
    // Pitfall 5: the load generators would exhaust their own ports through a proxy.
    await nsExec(t.client.ns, ['sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']);
    const srv = t.server.v4;
    procs.push(await startNginx(t.server.ns, dir.file('nginx.conf', nginxConf(dir.dir, [`${srv}:80`]))));
    procs.push(await startIperfServer(t.server.ns, srv));
    procs.push(await startPeerServer(t.server.ns, [`${srv}:${HOLD_PORT}`], 'hold'));
    procs.push(await startPeerServer(t.server.ns, [`${srv}:${HOLD_PORT + 1}`]));
    await waitFor('nginx', async () =>
      (await nsExec(t.client.ns, ['wrk', '-t1', '-c1', '-d1s', `http://${srv}/`])).includes('requests in'),
    );
    const cfg = dir.file(
      'agent.yaml',
      nodeConfigYaml({
        interception: {
          ports: [{ port: 80 }, { port: 5201 }, { port: HOLD_PORT, endPort: HOLD_PORT + 1 }],
          destinations: { include: [`${srv}/32`] },
          ipFamilies: ['IPv4'],
          failurePolicy: 'FailClosed',
        },
        proxy: { listenPort: LISTEN, metricsPort: METRICS, keepClientIp: true },
      }),
    );
    const rows: Row[] = [];
    for (const kind of paths) {
      if (kind === 'direct' && rulesOn) {
        await agent(t.proxy.ns, 'cleanup', cfg, state);
        rulesOn = false;
      }
      if (kind !== 'direct' && !rulesOn) {
        await agent(t.proxy.ns, 'apply', cfg, state);
        rulesOn = true;
      }
      console.error(`measuring ${kind} (${SECONDS}s per test)...`);
      const row = await measure(kind, t, dir);
      row.memPerConnKiB = await measureMemory(kind, t, dir);
      rows.push(row);
    }
    const table = renderTable(rows);
    console.log(table);
    if (!opt['no-write']) {
      writeSection(
        path.join(REPO, 'docs/benchmarks.md'),
        'dataplane',
        [
          `## Data path: tpfleet sidecar vs HAProxy TPROXY vs direct (${new Date().toISOString().slice(0, 10)})`,
          '',
          describeMachine(),
          `- ${SECONDS}s per measurement; wrk -t2 -c64 against nginx; ${IDLE} idle connections on a freshly started proxy for memory`,
          '  (RSS of the whole process tree after minus before, divided by the count); both proxies keep the client IP',
          `  (HAProxy \`usesrc clientip\`, 2 threads, maxconn 9000/6000; tpfleet ${opt.workers} workers) behind the same node-agent rules (nftables, FailClosed).`,
          '',
          table,
        ].join('\n'),
      );
      console.error('written to docs/benchmarks.md');
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    if (rulesOn) await agent(t.proxy.ns, 'cleanup', path.join(dir.dir, 'agent.yaml'), state).catch(() => undefined);
    await t.destroy();
    dir.remove();
  }
}

await main();
