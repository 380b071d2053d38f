// Repro of issue 21: 4 back-to-back wrk Connection: close runs, client at default sysctls.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createTopology, nsExec, waitFor } from '../netns.ts';
import { agent, nodeConfigYaml, scratch, startSidecar, type Proc } from '../proc.ts';
import { wrk } from '../bench/measure.ts';
import { haproxyConf, nginxConf, startHaproxy, startNginx } from '../bench/peers.ts';

const { values: o } = parseArgs({ options: { path: { type: 'string', default: 'tpfleet' }, runs: { type: 'string', default: '4' }, secs: { type: 'string', default: '5' }, hold: { type: 'boolean', default: false }, tuned: { type: 'boolean', default: false } } });
const t = await createTopology('ch');
const dir = scratch('churn');
const procs: Proc[] = [];
const state = path.join(dir.dir, 'state');
try {
  if (o.tuned) await nsExec(t.client.ns, ['sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']);
  const srv = t.server.v4;
  procs.push(await startNginx(t.server.ns, dir.file('nginx.conf', nginxConf(dir.dir, [`${srv}:8080`]))));
  await waitFor('nginx', async () => (await nsExec(t.client.ns, ['wrk', '-t1', '-c1', '-d1s', `http://${srv}:8080/`])).includes('requests in'));
  const port = o.path === 'direct' ? 8081 : 8080;
  const cfg = dir.file('agent.yaml', nodeConfigYaml({
    interception: { backend: 'nftables', ports: [{ port }], ipFamilies: ['IPv4'], failurePolicy: 'FailClosed' },
    proxy: { listenPort: 15101, metricsPort: 15190, keepClientIp: o.path !== 'haproxy-own', workers: 2, logLevel: 'warn' },
  }));
  await agent(t.proxy.ns, 'apply', cfg, state);
  if (o.path === 'tpfleet') procs.push(await startSidecar(t.proxy.ns, cfg));
  if (o.path.startsWith('haproxy')) {
    procs.push(await startHaproxy(t.proxy.ns, dir.file('h.cfg', haproxyConf({ dir: dir.dir, port: 15101, splice: false, keepClientIp: o.path === 'haproxy', maxconn: 9000 }))));
    await new Promise((r) => setTimeout(r, 1000));
  }
  console.log(JSON.stringify({ ns: t, dir: dir.dir }));
  const rates: number[] = [];
  for (let i = 0; i < Number(o.runs); i++) {
    const r = await wrk(t.client.ns, `http://${srv}:8080/`, Number(o.secs), true);
    rates.push(r.rps);
    const tw = async (ns: string) => (await nsExec(ns, ['ss', '-tan', 'state', 'time-wait'])).split('\n').length - 2;
    console.log(`run ${i + 1}: ${r.rps} req/s errors ${r.errors}; TIME_WAIT cli ${await tw(t.client.ns)} px ${await tw(t.proxy.ns)} srv ${await tw(t.server.ns)}`);
  }
  console.log(`${o.path}: ${rates.join(' / ')} last/first ${(rates.at(-1)! / rates[0]!).toFixed(2)}`);
  if (o.hold) { console.log('holding; kill to end'); await new Promise((r) => process.on('SIGINT', r)); }
} finally {
  for (const p of procs.reverse()) await p.stop();
  await agent(t.proxy.ns, 'cleanup', path.join(dir.dir, 'agent.yaml'), state).catch(() => undefined);
  await t.destroy();
  dir.remove();
}
