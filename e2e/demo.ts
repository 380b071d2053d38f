// `npm run demo`: the data path on its defaults, end to end on this machine. It builds three network
// namespaces (client ⇄ node ⇄ server), installs the interception rules with the node agent (backend
// auto), starts the forwarding sidecar, sends traffic and prints what the client asked for, what the
// server saw and whether the sidecar carried it; then it removes everything it made.
import path from 'node:path';
import { createTopology, nsExec, privilegedSkipReason, type Topology } from './netns.ts';
import { agent, nodeConfigYaml, peer, scratch, scrape, startPeerServer, startSidecar, type Proc } from './proc.ts';
import { table } from './table.ts';

const LISTEN = 15101,
  METRICS = 15190,
  PORT = 8080,
  OTHER = 9090;

interface Probe {
  label: string;
  to: string;
}

async function accepted(t: Topology): Promise<number> {
  return (await scrape(t.proxy.ns, METRICS)).get('tpfleet_proxy_connections_accepted_total') ?? 0;
}

async function probeRows(t: Topology, probes: Probe[], keep: string): Promise<string[][]> {
  const rows: string[][] = [];
  for (const p of probes) {
    const before = await accepted(t);
    const r = (await peer(t.client.ns, ['probe', '--to', p.to])) as {
      ok: boolean;
      saw?: { dst: string; src: string };
      error?: string;
    };
    const via = (await accepted(t)) > before ? 'sidecar' : 'direct';
    rows.push([p.label, keep, p.to, r.ok ? r.saw!.dst : `(${r.error})`, r.ok ? r.saw!.src : '', via]);
  }
  return rows;
}

async function main(): Promise<void> {
  const skip = privilegedSkipReason();
  if (skip) {
    console.error(`demo: ${skip}`);
    process.exit(1);
  }
  const dir = scratch('demo');
  const t = await createTopology('demo');
  const state = path.join(dir.dir, 'state');
  let server: Proc | undefined, sidecar: Proc | undefined;
  try {
    server = await startPeerServer(t.server.ns, [`0.0.0.0:${PORT}`, `[::]:${PORT}`, `0.0.0.0:${OTHER}`]);
    const config = (keepClientIp: boolean) =>
      dir.file(
        'nodeconfig.yaml',
        nodeConfigYaml({
          interception: { ports: [{ port: PORT }] },
          proxy: { listenPort: LISTEN, metricsPort: METRICS, keepClientIp, logLevel: 'warn' },
        }),
      );
    const cfg = config(true);
    console.log(
      `client ${t.client.v4} / ${t.client.v6}  →  node ${t.proxy.clientSide.v4} / ${t.proxy.serverSide.v4}  →  server ${t.server.v4} / ${t.server.v6}`,
    );
    console.log(
      `interception: TCP port ${PORT}, every destination, keepClientIp on; port ${OTHER} is not intercepted\n`,
    );
    const applied = await agent(t.proxy.ns, 'apply', cfg, state);
    console.log(
      applied
        .trim()
        .split('\n')
        .filter((l) => /backend|applied/i.test(l))
        .slice(0, 3)
        .join('\n'),
    );
    sidecar = await startSidecar(t.proxy.ns, cfg);
    const probes: Probe[] = [
      { label: 'IPv4, intercepted', to: `${t.server.v4}:${PORT}` },
      { label: 'IPv6, intercepted', to: `[${t.server.v6}]:${PORT}` },
      { label: 'port not intercepted', to: `${t.server.v4}:${OTHER}` },
    ];
    const rows = await probeRows(t, probes, 'on');
    await sidecar.stop();
    sidecar = await startSidecar(t.proxy.ns, config(false));
    rows.push(...(await probeRows(t, probes.slice(0, 1), 'off')));
    const transfer = await peer(t.client.ns, ['transfer', '--to', `${t.server.v4}:${PORT}`, '--bytes', String(20e6)]);
    console.log(
      `\n${table(['connection', 'keepClientIp', 'client asked for', 'server saw destination', 'server saw source', 'carried by'], rows)}`,
    );
    console.log(
      `\n20 MB echoed through the sidecar with half-close: ${transfer.receivedSha === transfer.sentSha ? 'intact (sha256 matches)' : 'CORRUPTED'}`,
    );
    const m = await scrape(t.proxy.ns, METRICS);
    const pick = (k: string) => String(m.get(k) ?? 0);
    console.log(
      `\n${table(
        ['sidecar counter (since the last restart)', 'value'],
        [
          ['connections accepted', pick('tpfleet_proxy_connections_accepted_total')],
          ['connections active', pick('tpfleet_proxy_connections_active')],
          ['bytes client → upstream', pick('tpfleet_proxy_bytes_total{direction="client_to_upstream"}')],
          ['bytes upstream → client', pick('tpfleet_proxy_bytes_total{direction="upstream_to_client"}')],
          ['upstream connects timed', pick('tpfleet_proxy_upstream_connect_seconds_count')],
        ],
      )}`,
    );
  } finally {
    await sidecar?.stop();
    await server?.stop();
    await agent(t.proxy.ns, 'cleanup', path.join(dir.dir, 'nodeconfig.yaml'), state).catch((e) =>
      console.error(String(e)),
    );
    const left = await nsExec(t.proxy.ns, ['nft', 'list', 'ruleset']).catch(() => '?');
    console.log(
      `\ncleaned up: rules removed (${left.trim() ? `left: ${left}` : 'nft ruleset empty'}), namespaces deleted`,
    );
    await t.destroy();
    dir.remove();
  }
}

await main();
