// A/B benchmark of node tuning on the data path: the same topology as `npm run bench:dataplane`
// (client ⇄ proxy node ⇄ server namespaces, the node agent's interception rules, keepClientIp), with
// the proxy namespace untuned vs the `throughput` profile applied by the tuning engine (daemonset/tuning/cli.ts run
// inside the namespace), alternating A, B, A, B in one run so machine noise hits both alike.
// Prints a markdown table and writes it, with the machine's description, into docs/benchmarks.md.
//   bench.ts [--proxy tpfleet|haproxy] [--seconds 10] [--rounds 2] [--profile throughput] [--workers 2] [--no-write]
// Only net.* keys of the proxy namespace change (veth has no IRQs or queues, so affinity is not measured).
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { iperf3, wrk } from './measure.ts';
import { haproxyConf, nginxConf, startHaproxy, startIperfServer, startNginx } from './peers.ts';
import { describeMachine, writeSection } from './report.ts';
import { createTopology, nsExec, privilegedSkipReason, waitFor, type Topology } from '../netns.ts';
import { agent, nodeConfigYaml, REPO, scrape, scratch, startSidecar, type Proc } from '../proc.ts';

const run = promisify(execFile);
const { values: opt } = parseArgs({
  options: {
    proxy: { type: 'string', default: 'tpfleet' },
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    profile: { type: 'string', default: 'throughput' },
    workers: { type: 'string', default: '2' },
    'no-write': { type: 'boolean', default: false },
  },
});
const SECONDS = Number(opt.seconds),
  LISTEN = 15101,
  METRICS = 15190;

interface Sample {
  tuning: string;
  gbps: number;
  connPerSec: number;
  kaRps: number;
  kaP99ms: number;
}

async function tuning(ns: string, cmd: 'apply' | 'restore', dir: ReturnType<typeof scratch>): Promise<unknown> {
  const argv = [
    'ip',
    'netns',
    'exec',
    ns,
    process.execPath,
    '--import',
    'tsx',
    join(REPO, 'daemonset/tuning/cli.ts'),
    cmd,
    '--state-dir',
    join(dir.dir, 'tuning-state'),
  ];
  if (cmd === 'apply')
    argv.push('--spec', dir.file('tuning.json', JSON.stringify({ sysctls: { profile: opt.profile } })));
  const { stdout } = await run(argv[0]!, argv.slice(1), { cwd: REPO, maxBuffer: 16 << 20 });
  return JSON.parse(stdout);
}

async function startProxy(
  t: Topology,
  dir: ReturnType<typeof scratch>,
): Promise<{ proc: Proc; served(): Promise<number> }> {
  if (opt.proxy === 'haproxy') {
    const proc = await startHaproxy(
      t.proxy.ns,
      dir.file(
        'haproxy.cfg',
        haproxyConf({ dir: dir.dir, port: LISTEN, splice: false, keepClientIp: true, maxconn: 9000 }),
      ),
    );
    return { proc, served: async () => 1 }; // in-path proof for HAProxy: iptables/nft TPROXY fails closed without it
  }
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
  ); // readiness comes from /readyz
  const proc = await startSidecar(t.proxy.ns, cfg);
  return {
    proc,
    served: async () => (await scrape(t.proxy.ns, METRICS)).get('tpfleet_proxy_connections_accepted_total') ?? 0,
  };
}

async function sample(label: string, t: Topology, dir: ReturnType<typeof scratch>): Promise<Sample> {
  const p = await startProxy(t, dir);
  try {
    const srv = t.server.v4;
    const gbps = await iperf3(t.client.ns, srv, 1, SECONDS);
    const close = await wrk(t.client.ns, `http://${srv}/`, SECONDS, true);
    const ka = await wrk(t.client.ns, `http://${srv}/`, SECONDS, false);
    if (!((await p.served()) > 0)) throw new Error('the proxy was not in the path');
    console.error(
      `${label}: ${gbps.toFixed(2)} Gbit/s, ${close.rps.toFixed(0)} conn/s (${close.errors} errors), ${ka.rps.toFixed(0)} req/s p99 ${ka.p99ms} ms`,
    );
    return { tuning: label, gbps, connPerSec: close.rps, kaRps: ka.rps, kaP99ms: ka.p99ms };
  } finally {
    await p.proc.stop();
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function table(samples: Sample[]): string {
  const rows = [
    '| proxy namespace tuning | iperf3 1 stream (Gbit/s) | HTTP conn/s (`Connection: close`) | keep-alive req/s | keep-alive p99 (ms) | samples |',
    '|---|---|---|---|---|---|',
  ];
  for (const label of [...new Set(samples.map((s) => s.tuning))]) {
    const s = samples.filter((x) => x.tuning === label);
    const f = (k: keyof Omit<Sample, 'tuning'>, d: number) =>
      `${median(s.map((x) => x[k])).toFixed(d)} (${s.map((x) => x[k].toFixed(d)).join(' / ')})`;
    rows.push(
      `| ${label} | ${f('gbps', 2)} | ${f('connPerSec', 0)} | ${f('kaRps', 0)} | ${f('kaP99ms', 2)} | ${s.length} |`,
    );
  }
  return rows.join('\n');
}

async function main(): Promise<void> {
  const skip = privilegedSkipReason();
  if (skip) throw new Error(skip);
  const dir = scratch('tuning-bench');
  const t = await createTopology('tb');
  const procs: Proc[] = [];
  const state = join(dir.dir, 'agent-state');
  let tuned = false,
    rules = false;
  const agentCfg = dir.file(
    'agent.yaml',
    nodeConfigYaml({
      interception: {
        ports: [{ port: 80 }, { port: 5201 }],
        destinations: { include: [`${t.server.v4}/32`] },
        ipFamilies: ['IPv4'],
        failurePolicy: 'FailClosed',
      },
      proxy: { listenPort: LISTEN, metricsPort: METRICS, keepClientIp: true },
    }),
  );
  try {
    await nsExec(t.client.ns, ['sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']); // dataplane pitfall 5
    procs.push(await startNginx(t.server.ns, dir.file('nginx.conf', nginxConf(dir.dir, [`${t.server.v4}:80`]))));
    procs.push(await startIperfServer(t.server.ns, t.server.v4));
    await waitFor('nginx', async () =>
      (await nsExec(t.client.ns, ['wrk', '-t1', '-c1', '-d1s', `http://${t.server.v4}/`])).includes('requests in'),
    );
    await agent(t.proxy.ns, 'apply', agentCfg, state);
    rules = true;
    const samples: Sample[] = [];
    for (let r = 0; r < Number(opt.rounds); r++) {
      samples.push(await sample('none', t, dir));
      const applied = (await tuning(t.proxy.ns, 'apply', dir)) as { report: { changed: unknown[]; failed: unknown[] } };
      tuned = true;
      console.error(
        `profile ${opt.profile}: ${applied.report.changed.length} values changed, ${applied.report.failed.length} refused`,
      );
      samples.push(await sample(opt.profile!, t, dir));
      await tuning(t.proxy.ns, 'restore', dir);
      tuned = false;
    }
    const head = `${opt.proxy} proxy, ${opt.workers} workers, keepClientIp, ${SECONDS}s per test, wrk -t2 -c64, median (samples):`;
    console.log(`${head}\n\n${table(samples)}`);
    if (!opt['no-write']) {
      writeSection(
        join(REPO, 'docs/benchmarks.md'),
        `tuning-${opt.proxy}`,
        [
          `## Node tuning: untuned vs the \`${opt.profile}\` profile, ${opt.proxy} (${new Date().toISOString().slice(0, 10)})`,
          '',
          describeMachine(),
          '- Same topology and node-agent rules as the data-path benchmark; the profile is applied by the tuning engine in the',
          '  proxy namespace only (net.* keys; keys a child namespace lacks or refuses are reported, see docs/tuning.md), A/B/A/B in one run.',
          '',
          head,
          '',
          table(samples),
        ].join('\n'),
      );
      console.error('written to docs/benchmarks.md');
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    if (tuned) await tuning(t.proxy.ns, 'restore', dir).catch(() => undefined);
    if (rules) await agent(t.proxy.ns, 'cleanup', agentCfg, state).catch(() => undefined);
    await t.destroy();
    dir.remove();
  }
}

await main();
