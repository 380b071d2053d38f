// TEMPORARY dev harness (not committed): topology + agent rules + echo server + nginx + sidecar.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createTopology, nsExec, waitFor } from './netns.ts';
import { agent, nodeConfigYaml, scratch, startPeerServer, startSidecar, type Proc } from './proc.ts';
import { nginxConf, startNginx } from './bench/peers.ts';
const { values: o } = parseArgs({ options: { keep: { type: 'boolean', default: true }, workers: { type: 'string', default: '2' }, log: { type: 'string', default: 'warn' }, backend: { type: 'string', default: 'nftables' }, policy: { type: 'string', default: 'FailClosed' } } });
const t = await createTopology('hx');
const dir = scratch('hx');
const procs: Proc[] = [];
const state = path.join(dir.dir, 'state');
try {
  const srv = t.server.v4;
  procs.push(await startPeerServer(t.server.ns, [`0.0.0.0:8080`, `[::]:8080`]));
  procs.push(await startNginx(t.server.ns, dir.file('nginx.conf', nginxConf(dir.dir, [`${srv}:8081`]))));
  const cfg = dir.file('agent.yaml', nodeConfigYaml({
    interception: { backend: o.backend, ports: [{ port: 8080, endPort: 8090 }], failurePolicy: o.policy },
    proxy: { listenPort: 15101, metricsPort: 15190, keepClientIp: o.keep, workers: Number(o.workers), logLevel: o.log },
  }));
  await agent(t.proxy.ns, 'apply', cfg, state);
  const sc = await startSidecar(t.proxy.ns, cfg);
  procs.push(sc);
  sc.child.stdout?.on('data', (d) => process.stderr.write(d));
  sc.child.stderr?.on('data', (d) => process.stderr.write(d));
  console.log(JSON.stringify({ prefix: t.prefix, srv, cli: t.client.v4, srv6: t.server.v6 }));
  console.log('holding');
  await new Promise((r) => process.on('SIGINT', r));
} finally {
  for (const p of procs.reverse()) await p.stop();
  await agent(t.proxy.ns, 'cleanup', path.join(dir.dir, 'agent.yaml'), state).catch(() => undefined);
  await t.destroy();
  dir.remove();
}
