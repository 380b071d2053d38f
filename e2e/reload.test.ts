// Reload in place on one node (issue 15, ADR 0014), in network namespaces: the node agent and the
// real sidecar run as the DaemonSet runs them (init `apply --live-dir`, the sidecar reading the live
// file), and `tpfleet-agent reload` — the step agent-watch takes for each new ConfigMap version —
// applies 20 successive changes under load: 500 long-lived checksummed streams and a prober every
// 100 ms through the sidecar. Asserted: no stream reset or corrupted, every probe answered, the rules
// after the last change byte-identical to a fresh apply of the final config, and a refused change
// (a routing table another owner uses; a listen port; host-wide sysctls) leaves the previous config in force.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { snapshot } from '../daemonset/agent.testkit.ts';
import { run } from '../daemonset/run.ts';
import { createTopology, inNs, nsExec, privilegedSkipReason, waitFor } from './netns.ts';
import {
  agent,
  nodeConfigYaml,
  scrape,
  scratch,
  startInNs,
  startPeerServer,
  startSidecar,
  tsNode,
  type Proc,
} from './proc.ts';

const LISTEN = 15101,
  METRICS = 15190,
  PORT = 8080;

type Doc = { interception: Record<string, unknown>; proxy: Record<string, unknown>; tuning?: object; policy?: object };
const base = (): Doc => ({
  interception: { backend: 'nftables', ports: [{ port: PORT }], ipFamilies: ['IPv4'], failurePolicy: 'FailClosed' },
  proxy: { listenPort: LISTEN, metricsPort: METRICS, workers: 2, logLevel: 'warn' },
});
const I = (d: Doc, o: object): Doc => ({ ...d, interception: { ...d.interception, ...o } });
const P = (d: Doc, o: object): Doc => ({ ...d, proxy: { ...d.proxy, ...o } });
/** net.* overrides only: they apply in place (ADR 0020); a profile would add host-wide fs.file-max. */
const T = (d: Doc, overrides: object): Doc => ({ ...d, tuning: { sysctls: { profile: 'none', overrides } } });
const dst = (exclude: string[]) => ({ destinations: { include: [], exclude } });

/** 20 successive changes, each applied to the previous document: what a user would edit. */
const CHANGES: [string, (d: Doc) => Doc][] = [
  ['exclusion CIDR added', (d) => I(d, dst(['10.99.0.0/16']))],
  ['port added', (d) => I(d, { ports: [{ port: PORT }, { port: 8081 }] })],
  ['idle timeout', (d) => P(d, { timeouts: { idle: '600s' } })],
  ['log level debug', (d) => P(d, { logLevel: 'debug' })],
  ['tuning: two net.* sysctls', (d) => T(d, { 'net.ipv4.tcp_fin_timeout': 21, 'net.core.somaxconn': 8192 })],
  ['maxConnections', (d) => P(d, { maxConnections: 20000 })],
  ['second exclusion CIDR', (d) => I(d, dst(['10.99.0.0/16', '10.98.0.0/16']))],
  ['connect timeout', (d) => P(d, { timeouts: { idle: '600s', connect: '3s' } })],
  ['local destinations', (d) => I(d, { localDestinations: true })],
  ['local destinations off', (d) => I(d, { localDestinations: false })],
  ['routing table', (d) => I(d, { routingTable: 2001 })],
  ['rule priority', (d) => I(d, { rulePriority: 32001 })],
  ['port range', (d) => I(d, { ports: [{ port: PORT }, { port: 8081 }, { port: 9000, endPort: 9100 }] })],
  ['exclusion CIDR removed', (d) => I(d, dst(['10.98.0.0/16']))],
  [
    'egress policy',
    (d) => ({
      ...d,
      policy: { rules: [{ name: 'deny-lab', match: { destinations: ['10.250.0.0/16'] }, action: 'Deny' }] },
    }),
  ],
  ['log level warn', (d) => P(d, { logLevel: 'warn' })],
  ['idle timeout again', (d) => P(d, { timeouts: { idle: '300s', connect: '3s' } })],
  ['source exclusion', (d) => I(d, { sources: { include: [], exclude: ['10.97.0.0/16'] } })],
  ['tuning: one changed, one left the spec', (d) => T(d, { 'net.ipv4.tcp_fin_timeout': 25 })],
  ['third exclusion CIDR', (d) => I(d, dst(['10.98.0.0/16', '10.96.0.0/16']))],
];

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

test('20 changes reload in place under 500 long-lived streams: 0 resets, every probe answered, rules as a fresh apply', {
  skip: privilegedSkipReason(),
  timeout: 240_000,
}, async () => {
  const t = await createTopology('rl');
  const dir = scratch('reload');
  const procs: Proc[] = [];
  const state = path.join(dir.dir, 'state'),
    live = path.join(dir.dir, 'live');
  const to = `${t.server.v4}:${PORT}`;
  let doc = base();
  const write = (d: Doc, name = 'next.yaml') => dir.file(name, nodeConfigYaml(d));
  // stdout carries the report either way; exit 1 when refused.
  const reload = async (file: string) =>
    (
      await run(
        inNs(t.proxy.ns, [
          ...tsNode('daemonset/main.ts'),
          'reload',
          '--config',
          file,
          '--state-dir',
          state,
          '--live-dir',
          live,
        ]),
      )
    ).stdout;
  const applied = async () =>
    (await scrape(t.proxy.ns, METRICS)).get('tpfleet_proxy_config_reloads_total{result="applied"}') ?? 0;
  try {
    procs.push(await startPeerServer(t.server.ns, [to]));
    await agent(t.proxy.ns, 'apply', write(doc, 'first.yaml'), state, ['--live-dir', live]);
    procs.push(await startSidecar(t.proxy.ns, path.join(live, 'nodeconfig.yaml')));
    const streams = await startInNs(t.client.ns, [...tsNode('e2e/tools/streams.ts'), '--to', to, '--count', '500'], {
      ready: /"ready":true/,
      readyTimeoutMs: 60_000,
    });
    procs.push(streams);
    const prober = await startInNs(t.client.ns, [
      ...tsNode('e2e/tools/peer.ts'),
      'poll',
      '--to',
      to,
      '--every',
      '100',
      '--timeout',
      '3000',
      '--count',
      '100000',
    ]);
    procs.push(prober);
    const enforced: number[] = [];
    for (const [what, change] of CHANGES) {
      doc = change(doc);
      const before = await applied();
      const r = await reload(write(doc));
      assert.match(r, /"hash":"[0-9a-f]{16}"/, `${what}: ${r}`);
      assert.doesNotMatch(r, /refused/, `${what}: ${r}`);
      // Enforced = rules and routing applied by the agent and the sidecar running the new settings.
      const agentMs = Number(/"ms":(\d+)/.exec(r)?.[1]);
      const sidecarStart = Date.now();
      await waitFor(`${what}: the sidecar reloads`, async () => (await applied()) > before, 5000, 20);
      enforced.push(agentMs + (Date.now() - sidecarStart));
    }
    process.stdout.write(
      `# reload in place, ${enforced.length} changes: enforced p50 ${pct(enforced, 50)} ms, p99 ${pct(enforced, 99)} ms, max ${Math.max(...enforced)} ms\n`,
    );
    // The 5 s bound of issue 15 is asserted on the local-real cluster (e2e/cluster/reload.test.ts); here,
    // on a 2-core machine shared with other test runs, a looser bound keeps the test about behaviour
    // (measured unloaded: p50 512 ms, p99 796 ms; at load average 34: p50 1969 ms, p99 8333 ms).
    assert.ok(Math.max(...enforced) < 15_000, `each change enforced within 15 s: ${enforced.join(', ')}`);

    // Refused: a routing table another owner uses on this node. Nothing of it is applied.
    await nsExec(t.proxy.ns, ['ip', 'route', 'add', 'local', '10.77.0.1', 'dev', 'lo', 'table', '3333']);
    const inForce = await snapshot(t.proxy.ns, 2001);
    const r = await reload(write(I(doc, { routingTable: 3333 }), 'refused.yaml'));
    assert.match(
      r,
      /"refused":\{"hash":"[0-9a-f]{16}","message":"changing interception\.routingTable: .*table 3333 already holds a route we did not create/,
    );
    assert.deepEqual(await snapshot(t.proxy.ns, 2001), inForce, 'the previous config stays in force, whole');
    const restart = await reload(write(P(doc, { listenPort: 15111 }), 'restart.yaml'));
    assert.match(restart, /proxy\.listenPort: cannot change without a new pod/);
    // net.* sysctls applied in place (the CHANGES above); host-wide ones and affinity roll (ADR 0020).
    const sysctl = async (k: string) => (await nsExec(t.proxy.ns, ['cat', `/proc/sys/${k}`])).trim();
    assert.equal(await sysctl('net/ipv4/tcp_fin_timeout'), '25', 'the last tuning change is enforced');
    const hostWide = { sysctls: { profile: 'conntrack-heavy' } };
    assert.match(
      await reload(write({ ...doc, tuning: hostWide }, 'tuning.yaml')),
      /tuning\.sysctls \(host-wide keys\): cannot change without a new pod/,
    );
    assert.deepEqual(await snapshot(t.proxy.ns, 2001), inForce);

    prober.child.kill('SIGTERM');
    await streams.stop(30_000);
    const result = JSON.parse(streams.output().trim().split('\n').pop()!);
    const probes = prober
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{"t"'))
      .map((l) => JSON.parse(l) as { ok: boolean; error?: string });
    process.stdout.write(
      `# streams ${JSON.stringify(result)}; probes ${probes.length}, failed ${probes.filter((p) => !p.ok).length}\n`,
    );
    assert.equal(result.connections, 500);
    assert.equal(result.reset, 0, `no established connection reset: ${JSON.stringify(result.errors)}`);
    assert.equal(result.mismatch, 0, 'every stream checksummed equal');
    assert.equal(result.ok, 500);
    assert.ok(probes.length >= 50, `the prober ran through the changes (${probes.length})`);
    assert.deepEqual(
      probes.filter((p) => !p.ok),
      [],
      'every prober attempt answered',
    );

    // The rules after the last change are byte-identical to a fresh apply of the final config.
    const reloaded = await snapshot(t.proxy.ns, 2001);
    const tuned = [await sysctl('net/ipv4/tcp_fin_timeout'), await sysctl('net/core/somaxconn')];
    await agent(t.proxy.ns, 'cleanup', write(doc), state);
    await nsExec(t.proxy.ns, ['ip', 'route', 'del', 'local', '10.77.0.1', 'dev', 'lo', 'table', '3333']);
    await agent(t.proxy.ns, 'apply', write(doc, 'fresh.yaml'), state);
    const fresh = await snapshot(t.proxy.ns, 2001);
    for (const k of ['nft list ruleset', 'ip rule', 'ip route show table 2001'])
      assert.equal(reloaded[k], fresh[k], `${k}: reloaded = fresh apply`);
    assert.doesNotMatch(reloaded['ip rule']!, /lookup 2000\b/, 'the old routing entries are gone');
    assert.deepEqual(
      [await sysctl('net/ipv4/tcp_fin_timeout'), await sysctl('net/core/somaxconn')],
      tuned,
      'tuning after the last change = a fresh apply (somaxconn, which left the spec, at its original)',
    );
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await agent(t.proxy.ns, 'cleanup', write(doc, 'last.yaml'), state).catch(() => undefined);
    await t.destroy();
    dir.remove();
  }
});
