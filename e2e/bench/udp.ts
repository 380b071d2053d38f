// `npm run bench:udp`: UDP through one node, three ways, in client ⇄ proxy ⇄ server namespaces:
//   (a) kernel routing, no interception (the ceiling here);
//   (b) a kernel DNAT/SNAT relay (nft nat in the proxy namespace; the client sends to the proxy's address);
//   (c) tpfleet: the node agent's rules (protocols [UDP]) and the sidecar (keepClientIp off, as (b) SNATs).
// 64- and 800-byte datagrams over FLOWS flows from e2e/bench/udpgen.c (compiled here with cc), each at full
// speed (pps delivered at the server) and at a fixed rate below saturation (loss). CPU per Mpps is the whole
// machine's busy time (/proc/stat: generator, sink, kernel and proxy share the 2 vCPUs) per million datagrams
// delivered; for (c) the sidecar's own CPU (user + system of its threads) is given too.
// Writes a section of docs/benchmarks.md (--label NAME). Run it under `flock -x /tmp/tpfleet-cpu.lock`.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createTopology, nsExec, type Topology, waitFor } from '../netns.ts';
import { agent, httpStatus, nodeConfigYaml, REPO, scratch, startInNs, tsNode, type Proc } from '../proc.ts';

const { values: o } = parseArgs({
  options: {
    seconds: { type: 'string', default: '4' },
    flows: { type: 'string', default: '1000' },
    label: { type: 'string', default: 'run' },
    out: { type: 'string', default: path.join(REPO, 'docs/benchmarks.md') },
    paths: { type: 'string', default: 'routing,dnat,tpfleet' },
    sizes: { type: 'string', default: '64,800' },
    /** Profile the whole machine (perf cpu-clock, call graphs) while the tpfleet path runs; report to this file. */
    perf: { type: 'string' },
  },
});
const SECONDS = Number(o.seconds),
  FLOWS = Number(o.flows),
  PORT = 7000,
  SIZES = o.sizes.split(',').map(Number);
type Path = 'routing' | 'dnat' | 'tpfleet';

const dir = scratch('bench-udp');
const GEN = path.join(dir.dir, 'udpgen');
execFileSync('cc', ['-O2', '-Wall', '-o', GEN, path.join(REPO, 'e2e/bench/udpgen.c')]);

/** Busy and total jiffies of the whole machine. */
function cpuJiffies(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}
const HZ = 100;
function procCpu(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / HZ;
}

interface Result {
  path: Path;
  size: number;
  mode: 'max' | 'fixed';
  pps: number;
  sent: number;
  received: number;
  loss: number;
  cpuPerMpps: number;
  proxyCpuPerMpps?: number;
}

async function setup(p: Path, t: Topology): Promise<{ target: string; sidecar?: Proc }> {
  if (p === 'routing') return { target: t.server.v4 };
  if (p === 'dnat') {
    await nsExec(t.proxy.ns, ['nft', '-f', '-'], {
      input: `table ip relay {
  chain pre { type nat hook prerouting priority dstnat; ip daddr ${t.proxy.clientSide.v4} udp dport ${PORT} dnat to ${t.server.v4}; }
  chain post { type nat hook postrouting priority srcnat; ip daddr ${t.server.v4} udp dport ${PORT} snat to ${t.proxy.serverSide.v4}; }
}
`,
    });
    return { target: t.proxy.clientSide.v4 };
  }
  const cfg = dir.file(
    'config.yaml',
    nodeConfigYaml({
      interception: { backend: 'nftables', protocols: ['UDP'], udpPorts: [{ port: PORT }], ipFamilies: ['IPv4'] },
      proxy: { workers: 2, keepClientIp: false, logLevel: 'warn', udp: { maxFlows: 100_000 } },
    }),
  );
  await agent(t.proxy.ns, 'apply', cfg, path.join(dir.dir, 'state'));
  const sidecar = await startInNs(t.proxy.ns, [...tsNode('sidecar/main.ts'), '--config', cfg], {
    ready: /"msg":"listening"/,
  });
  await waitFor('the sidecar ready', async () => (await httpStatus(t.proxy.ns, 15190, '/readyz')) === 200);
  return { target: t.server.v4, sidecar };
}

async function once(t: Topology, target: string, size: number, pps: number, sidecarPid?: number) {
  const sink = await startInNs(t.server.ns, [GEN, 'sink', t.server.v4, String(PORT), String(SECONDS + 2)], {
    ready: /ready/,
  });
  const c0 = cpuJiffies(),
    p0 = sidecarPid ? procCpu(sidecarPid) : 0;
  const out = await nsExec(t.client.ns, [
    GEN,
    'send',
    target,
    String(PORT),
    String(FLOWS),
    String(size),
    String(SECONDS),
    String(pps),
  ]);
  const c1 = cpuJiffies(),
    p1 = sidecarPid ? procCpu(sidecarPid) : 0;
  await new Promise((r) => sink.child.once('exit', r));
  const sent = Number(/sent (\d+)/.exec(out)?.[1] ?? 0);
  const received = Number(/received (\d+)/.exec(sink.output())?.[1] ?? 0);
  const mpps = received / 1e6;
  return {
    sent,
    received,
    pps: received / SECONDS,
    loss: sent > 0 ? 1 - received / sent : 0,
    cpuPerMpps: mpps > 0 ? (c1.busy - c0.busy) / HZ / mpps : 0,
    proxyCpuPerMpps: sidecarPid && mpps > 0 ? (p1 - p0) / mpps : undefined,
  };
}

async function measure(p: Path, ceiling: Map<number, number>): Promise<Result[]> {
  const t = await createTopology(`bu${p[0]}`);
  const results: Result[] = [];
  let env: Awaited<ReturnType<typeof setup>> | undefined;
  let perf: Proc | undefined;
  try {
    env = await setup(p, t);
    const pid = env.sidecar?.child.pid;
    if (o.perf && p === 'tpfleet')
      perf = await startInNs(t.proxy.ns, ['perf', 'record', '-e', 'cpu-clock', '-a', '-g', '-o', `${o.perf}.data`]);
    for (const size of SIZES) {
      const max = await once(t, env.target, size, 0, pid);
      results.push({ path: p, size, mode: 'max', ...max });
      if (p === 'routing') ceiling.set(size, max.pps);
      // Below saturation: half of what plain routing delivered at this size.
      const rate = Math.round((ceiling.get(size) ?? max.pps) / 2);
      results.push({ path: p, size, mode: 'fixed', ...(await once(t, env.target, size, rate, pid)) });
    }
  } finally {
    if (perf) {
      perf.child.kill('SIGINT');
      await perf.stop(10_000);
      execFileSync('sh', [
        '-c',
        `perf report -i ${o.perf}.data --no-children --sort comm,dso,symbol --stdio 2>/dev/null | head -80 > ${o.perf}`,
      ]);
    }
    await env?.sidecar?.stop(5000);
    if (p === 'tpfleet') await agent(t.proxy.ns, 'cleanup', dir.file('config.yaml', ''), path.join(dir.dir, 'state'));
    await t.destroy();
  }
  return results;
}

function table(rs: Result[]): string[] {
  const base = (r: Result, p: Path) => rs.find((x) => x.path === p && x.size === r.size && x.mode === r.mode);
  const lines = [
    '| path | size (B) | mode | sent | received | pps delivered | loss | machine CPU s per Mpps | sidecar CPU s per Mpps | pps / (a) | CPU / (b) |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rs) {
    const a = base(r, 'routing'),
      b = base(r, 'dnat');
    lines.push(
      `| ${r.path} | ${r.size} | ${r.mode === 'max' ? 'full speed' : `fixed ${Math.round(r.sent / SECONDS)}/s`} | ${r.sent} | ${r.received} | ${Math.round(r.pps)} | ${(r.loss * 100).toFixed(3)} % | ${r.cpuPerMpps.toFixed(2)} | ${r.proxyCpuPerMpps?.toFixed(2) ?? '–'} | ${a ? (r.pps / a.pps).toFixed(2) : '–'} | ${b ? (r.cpuPerMpps / b.cpuPerMpps).toFixed(2) : '–'} |`,
    );
  }
  return lines;
}

const machine = `${os.cpus().length} vCPU ${os.cpus()[0]?.model ?? ''}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, kernel ${os.release()}`;
const ceiling = new Map<number, number>();
const all: Result[] = [];
for (const p of o.paths.split(',') as Path[]) all.push(...(await measure(p, ceiling)));
const section = [
  `### UDP (${o.label}, ${new Date().toISOString().slice(0, 16)}Z)`,
  '',
  `Machine: ${machine}; ${FLOWS} flows, ${SECONDS} s per run, IPv4. Generator and sink: e2e/bench/udpgen.c (sendmmsg/recvmmsg, 16 a call).`,
  '"fixed" runs at half the pps plain routing delivered at that size (below saturation). Machine CPU = busy time of',
  'both vCPUs (generator, sink, kernel, proxy) per million datagrams delivered; sidecar CPU = its own threads.',
  '',
  ...table(all),
  '',
].join('\n');
process.stdout.write(`${section}\n`);
const doc = readFileSync(o.out, 'utf8');
const marker = '## UDP forwarding (npm run bench:udp)';
writeFileSync(
  o.out,
  doc.includes(marker) ? doc.replace(marker, `${marker}\n\n${section}`) : `${doc.trimEnd()}\n\n${marker}\n\n${section}`,
);
dir.remove();
