// The engine's per-connection decision hook (engine.ts onDecide), which policy code builds on:
// connections held at accept and decided on their addresses, or held until their first bytes were
// peeked (left on the socket, so forwarding carries them on), answered forward, reset, forward
// elsewhere, or "more" for bytes split over segments; a client that sends nothing first falls
// through at the hold timeout. The real sidecar without a policy holds nothing.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTopology, nsExec, privilegedSkipReason, type Topology } from '../e2e/netns.ts';
import {
  nodeConfigYaml,
  scrape,
  scratch,
  startInNs,
  startPeerServer,
  startSidecar,
  tsNode,
  type Proc,
} from '../e2e/proc.ts';
import { installTproxy } from './tproxy.testkit.ts';

const LISTEN = 15101,
  METRICS = 15190,
  A = 8080,
  B = 8081,
  ELSEWHERE = 9090;

describe('the decision hook', { skip: privilegedSkipReason() }, () => {
  let t: Topology, dir: ReturnType<typeof scratch>, host: Proc | undefined;
  const servers: Proc[] = [];

  /** The engine with the test hook (e2e/tools/engine-host.ts) in the proxy namespace. */
  async function engineHost(args: string[]): Promise<Proc> {
    await host?.stop(2000);
    host = await startInNs(t.proxy.ns, [...tsNode('e2e/tools/engine-host.ts'), '--port', String(LISTEN), ...args], {
      ready: /"ready":true/,
      stdin: true,
    });
    return host;
  }
  const decisions = (p: Proc) =>
    p
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{"decided"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  async function stats(p: Proc): Promise<Record<string, number>> {
    const from = p.output().length;
    p.child.stdin!.write('stats\n');
    for (let i = 0; i < 100 && !p.output().slice(from).includes('"stats"'); i++)
      await new Promise((r) => setTimeout(r, 20));
    return (
      JSON.parse(
        p
          .output()
          .slice(from)
          .split('\n')
          .find((l) => l.startsWith('{"stats"'))!,
      ) as { stats: Record<string, number> }
    ).stats;
  }
  const say = async (port: number, text: string, seconds = 2) => {
    const out = await nsExec(t.client.ns, [
      ...tsNode('e2e/tools/scenario.ts'),
      'client',
      '--cmd',
      'say',
      '--to',
      `${t.server.v4}:${port}`,
      '--text',
      text,
      '--seconds',
      String(seconds),
    ]);
    return JSON.parse(out.trim().split('\n').pop()!) as { got: string; error?: string };
  };
  /** What the report server answered first: the destination it saw. */
  const sawDst = (got: string): string | undefined =>
    got.startsWith('{') ? (JSON.parse(got.split('\n')[0]!) as { dst: string }).dst : undefined;

  before(async () => {
    t = await createTopology('hk');
    dir = scratch('hook');
    await installTproxy(t, LISTEN, [A, B]);
    // Report servers: the first line they send says which destination they saw; then they echo.
    servers.push(
      await startPeerServer(t.server.ns, [`${t.server.v4}:${A}`, `${t.server.v4}:${B}`, `${t.server.v4}:${ELSEWHERE}`]),
    );
  });

  after(async () => {
    await host?.stop(2000);
    for (const s of servers) await s.stop(2000);
    await t?.destroy();
    dir?.remove();
  });

  test('the sidecar without a policy holds nothing and asks nothing: the hook costs no JavaScript', async () => {
    const px = await startSidecar(
      t.proxy.ns,
      dir.file(
        's.yaml',
        nodeConfigYaml({ proxy: { listenPort: LISTEN, metricsPort: METRICS, workers: 2, logLevel: 'warn' } }),
      ),
    );
    try {
      for (let i = 0; i < 5; i++) assert.equal(sawDst((await say(A, 'hi\\n', 0.3)).got), `${t.server.v4}:${A}`);
      const m = await scrape(t.proxy.ns, METRICS);
      assert.equal(m.get('tpfleet_proxy_connections_accepted_total'), 5);
      assert.equal(m.get('tpfleet_proxy_connections_held'), 0);
    } finally {
      await px.stop(5000);
    }
  });

  test('held at accept and decided on the destination: one port reset, another forwarded', async () => {
    const p = await engineHost(['--deny-port', String(B)]);
    assert.equal(sawDst((await say(A, 'hello\\n')).got), `${t.server.v4}:${A}`);
    const denied = await say(B, 'hello\\n');
    assert.equal(denied.error, 'ECONNRESET');
    assert.equal(denied.got, '');
    assert.deepEqual(
      decisions(p).map((d) => [d.decided, d.bytes]),
      [
        ['forward', 0],
        ['reset', 0],
      ],
    );
    const s = await stats(p);
    assert.equal(s.closed_denied, 1, 'a reset verdict counts as denied, not as an error');
    assert.equal(s.hook_asked, 2);
    assert.equal(s.held, 0);
  });

  test('peek: the first bytes are seen and still forwarded; a line split over three segments is asked about again', async () => {
    const p = await engineHost(['--peek', '--elsewhere', `${t.server.v4}:${ELSEWHERE}`]);
    const plain = await say(A, 'hello there\\n');
    assert.equal(sawDst(plain.got), `${t.server.v4}:${A}`);
    assert.match(plain.got, /\nhello there\n$/, 'the peeked bytes reached the server and were echoed');
    const split = await say(A, 'elsew|her|e now\\n');
    assert.equal(sawDst(split.got), `${t.server.v4}:${ELSEWHERE}`, 'forward-to took it to the other server');
    assert.match(split.got, /\nelsewhere now\n$/);
    const asks = decisions(p).slice(1);
    assert.deepEqual(
      asks.map((d) => d.decided),
      ['more', 'more', 'forward-to'],
      'asked again as each segment arrived',
    );
    assert.deepEqual(
      asks.map((d) => d.bytes),
      [5, 8, 14],
    );
    const denied = await say(A, 'deny me\\n');
    assert.equal(denied.error, 'ECONNRESET');
    assert.equal(denied.got, '', 'nothing reached the server');
  });

  test('peek: a client that sends nothing first (server speaks first) falls through at the hold timeout', async () => {
    const p = await engineHost(['--peek', '--hold-ms', '400']);
    const t0 = Date.now();
    const quiet = await say(A, '', 2);
    assert.equal(sawDst(quiet.got), `${t.server.v4}:${A}`, 'the server was reached after the hold timeout');
    assert.ok(Date.now() - t0 >= 400);
    assert.deepEqual(
      decisions(p).map((d) => [d.decided, d.timedOut, d.bytes]),
      [['forward', true, 0]],
    );
  });
});
