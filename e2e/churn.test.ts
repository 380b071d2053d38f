// Sustained connection churn through the node (issue 21, ADR 0003 "Connection churn"): a client at the
// kernel's default sysctls, as a pod's, opening short HTTP connections through the sidecar must keep
// its rate. The collapse this guards against: a proxy that relays the server's FIN a moment after the
// response lets the client close first, so the client keeps every TIME_WAIT; once the even half of
// its port range is in TIME_WAIT, each connect() walks it (measured 100 req/s after 20 s, from 5,000).
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { wrk } from './bench/measure.ts';
import { nginxConf, startNginx } from './bench/peers.ts';
import { createTopology, nsExec, privilegedSkipReason, waitFor } from './netns.ts';
import { agent, nodeConfigYaml, scrape, scratch, startSidecar, type Proc } from './proc.ts';

const LISTEN = 15101,
  METRICS = 15190;

test('four back-to-back Connection: close runs through the sidecar keep their rate (last / first >= 0.4)', {
  skip: privilegedSkipReason(),
}, async () => {
  const t = await createTopology('ch');
  const dir = scratch('churn');
  const procs: Proc[] = [];
  const state = path.join(dir.dir, 'state');
  const cfg = dir.file(
    'c.yaml',
    nodeConfigYaml({
      interception: { backend: 'nftables', ports: [{ port: 80 }], ipFamilies: ['IPv4'], failurePolicy: 'FailClosed' },
      proxy: { listenPort: LISTEN, metricsPort: METRICS, keepClientIp: true, workers: 2, logLevel: 'warn' },
    }),
  );
  try {
    // The point of the test: the client keeps the defaults a pod has. Fail loudly if that changes.
    assert.equal((await nsExec(t.client.ns, ['sysctl', '-n', 'net.ipv4.tcp_tw_reuse'])).trim(), '2');
    assert.equal(
      (await nsExec(t.client.ns, ['sysctl', '-n', 'net.ipv4.ip_local_port_range'])).trim().replace(/\s+/, ' '),
      '32768 60999',
    );
    procs.push(await startNginx(t.server.ns, dir.file('nginx.conf', nginxConf(dir.dir, [`${t.server.v4}:80`]))));
    await waitFor('nginx', async () =>
      (await nsExec(t.client.ns, ['wrk', '-t1', '-c1', '-d1s', `http://${t.server.v4}/`])).includes('requests in'),
    );
    await agent(t.proxy.ns, 'apply', cfg, state);
    procs.push(await startSidecar(t.proxy.ns, cfg));
    const rates: number[] = [];
    for (let i = 0; i < 4; i++) rates.push((await wrk(t.client.ns, `http://${t.server.v4}/`, 5, true)).rps);
    const m = await scrape(t.proxy.ns, METRICS);
    const requests = rates.reduce((a, b) => a + b) * 5;
    assert.ok(
      (m.get('tpfleet_proxy_connections_accepted_total') ?? 0) >= 0.9 * requests,
      'the sidecar carried the runs',
    );
    const timeWait = (await nsExec(t.client.ns, ['ss', '-Htan', 'state', 'time-wait']))
      .trim()
      .split('\n')
      .filter(Boolean).length;
    // The collapse is a fall of 10x or more within these 20 s (the old sidecar: 2168 / 1956 / 101 / 246
    // req/s, 0.11). The bound sits well above that and well below what a machine shared with other
    // work swings by (0.6-0.9 seen in full suites beside builds); the sustained ratio against HAProxy
    // is the benchmark's job (docs/benchmarks.md), not this test's.
    assert.ok(
      rates[3]! / rates[0]! >= 0.4,
      `runs ${rates.map((r) => r.toFixed(0)).join(' / ')} req/s; the client holds ${timeWait} TIME_WAIT sockets`,
    );
    // The mechanism: the server's FIN reaches the client with the response, so the client is not the
    // side that closes first (collapsed, it held ~14,100: every even port of its range).
    assert.ok(timeWait < 3000, `the client holds ${timeWait} TIME_WAIT sockets`);
    assert.ok((m.get('tpfleet_proxy_fin_with_data_total') ?? 0) > 0, 'FINs went out with the last data');
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await agent(t.proxy.ns, 'cleanup', cfg, state).catch(() => undefined);
    await t.destroy();
    dir.remove();
  }
});
