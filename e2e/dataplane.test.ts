// End to end in real network namespaces, for both backends: the node agent's rules steer client → server
// traffic crossing the proxy namespace into the tpfleet sidecar, which forwards it to the original
// destination. What a user would check: the server sees the address it was asked for, the client's own
// address when keeping is on (the proxy's otherwise), excluded traffic bypasses the proxy, large transfers
// arrive intact, many concurrent connections complete, the fail policy holds when the proxy dies, and
// nothing is left behind.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { createTopology, nsExec, privilegedSkipReason, waitFor, type Topology } from './netns.ts';
import {
  agent,
  nodeConfigYaml,
  peer,
  scratch,
  scrape,
  startInNs,
  startPeerServer,
  startSidecar,
  startWatchdog,
  tsNode,
  type Proc,
} from './proc.ts';

const skip = privilegedSkipReason();
const LISTEN = 15101,
  METRICS = 15190,
  PORT = 8080,
  OTHER_PORT = 9090;

/** What a user would diff to see that we left nothing: rules of every backend, policy routing. */
async function hostSnapshot(ns: string): Promise<string> {
  const parts = await Promise.all([
    nsExec(ns, ['nft', 'list', 'ruleset']),
    nsExec(ns, ['iptables-save'], { allowFail: true }),
    nsExec(ns, ['ip6tables-save'], { allowFail: true }),
    nsExec(ns, ['ip', 'rule']),
    nsExec(ns, ['ip', '-6', 'rule']),
    nsExec(ns, ['ip', 'route', 'show', 'table', 'all']),
    nsExec(ns, ['ip', '-6', 'route', 'show', 'table', 'all']),
  ]);
  // iptables-save prints a timestamp and packet counters; neither is state we own.
  return parts
    .join('\n---\n')
    .replace(/^# .*$/gm, '')
    .replace(/\[\d+:\d+\]/g, '[c]');
}

const ip = (hostport: unknown) => String(hostport).replace(/^\[?(.*?)\]?:\d+$/, '$1');
const accepted = async (t: Topology) =>
  (await scrape(t.proxy.ns, METRICS)).get('tpfleet_proxy_connections_accepted_total') ?? 0;

for (const backend of ['nftables', 'iptables'] as const) {
  describe(`data path through the sidecar (${backend})`, { skip }, () => {
    let t: Topology;
    let dir: ReturnType<typeof scratch>;
    let server: Proc;
    let sidecar: Proc | undefined;
    let pristine: string;
    let excludedIp: string;
    const state = () => path.join(dir.dir, 'state');

    const config = (over: { keepClientIp?: boolean; failurePolicy?: string } = {}) =>
      nodeConfigYaml({
        interception: {
          backend,
          failurePolicy: over.failurePolicy ?? 'FailClosed',
          ports: [{ port: PORT }],
          destinations: {
            include: [`${t.server.v4.replace(/\.\d+$/, '.0')}/24`, `${t.server.v6.replace(/::\d+$/, '::')}/64`],
            exclude: [`${excludedIp}/32`],
          },
        },
        proxy: {
          listenPort: LISTEN,
          metricsPort: METRICS,
          keepClientIp: over.keepClientIp ?? true,
          workers: 2,
          logLevel: 'warn',
        },
      });

    async function install(over: Parameters<typeof config>[0] = {}): Promise<string> {
      const cfg = dir.file('config.yaml', config(over));
      await agent(t.proxy.ns, 'apply', cfg, state());
      await sidecar?.stop();
      sidecar = await startSidecar(t.proxy.ns, cfg);
      return cfg;
    }

    before(async () => {
      t = await createTopology(backend === 'nftables' ? 'dn' : 'di');
      dir = scratch(`e2e-${backend}`);
      excludedIp = t.server.v4.replace(/\.2$/, '.3');
      await nsExec(t.server.ns, ['ip', 'addr', 'add', `${excludedIp}/24`, 'dev', 'eth0']);
      server = await startPeerServer(t.server.ns, [`0.0.0.0:${PORT}`, `[::]:${PORT}`, `0.0.0.0:${OTHER_PORT}`]);
      pristine = await hostSnapshot(t.proxy.ns);
      await install();
    });

    after(async () => {
      await sidecar?.stop();
      await server?.stop();
      await t?.destroy();
      dir?.remove();
    });

    test('the server sees the original destination and the client address (IPv4 and IPv6)', async () => {
      const n0 = await accepted(t);
      for (const [dst, src] of [
        [t.server.v4, t.client.v4],
        [t.server.v6, t.client.v6],
      ] as const) {
        const to = dst.includes(':') ? `[${dst}]:${PORT}` : `${dst}:${PORT}`;
        const r = (await peer(t.client.ns, ['probe', '--to', to])) as {
          ok: boolean;
          saw: { dst: string; src: string };
        };
        assert.equal(r.ok, true, JSON.stringify(r));
        assert.equal(r.saw.dst, to, 'the server was reached at the address the client asked for');
        assert.equal(ip(r.saw.src), src, 'with keepClientIp the server sees the client itself');
      }
      assert.equal((await accepted(t)) - n0, 2, 'both connections went through the sidecar');
    });

    test('excluded CIDRs and ports bypass the proxy', async () => {
      const n0 = await accepted(t);
      for (const to of [`${excludedIp}:${PORT}`, `${t.server.v4}:${OTHER_PORT}`]) {
        const r = (await peer(t.client.ns, ['probe', '--to', to])) as { ok: boolean; saw: { src: string } };
        assert.equal(r.ok, true, JSON.stringify(r));
        assert.equal(ip(r.saw.src), t.client.v4);
      }
      assert.equal(await accepted(t), n0, 'the sidecar counted none of them');
    });

    test('100 MB each way with half-close arrives intact', async () => {
      const m0 = await scrape(t.proxy.ns, METRICS);
      const r = await peer(t.client.ns, ['transfer', '--to', `${t.server.v4}:${PORT}`, '--bytes', String(100e6)]);
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.received, 100e6);
      assert.equal(r.receivedSha, r.sentSha);
      const m1 = await scrape(t.proxy.ns, METRICS);
      const key = 'tpfleet_proxy_bytes_total{direction="client_to_upstream"}';
      assert.ok((m1.get(key) ?? 0) - (m0.get(key) ?? 0) >= 100e6, 'the bytes were counted by the sidecar');
    });

    test('1,000 concurrent connections all complete', async () => {
      const n0 = await accepted(t);
      const r = await peer(t.client.ns, [
        'many',
        '--to',
        `${t.server.v4}:${PORT}`,
        '--count',
        '1000',
        '--timeout',
        '20000',
      ]);
      assert.deepEqual(r, { ok: 1000, failed: 0, errors: {} });
      assert.equal((await accepted(t)) - n0, 1000);
    });

    test('without keepClientIp the server sees the proxy address', async () => {
      await install({ keepClientIp: false });
      const r = (await peer(t.client.ns, ['probe', '--to', `${t.server.v4}:${PORT}`])) as {
        ok: boolean;
        saw: { dst: string; src: string };
      };
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.saw.dst, `${t.server.v4}:${PORT}`);
      assert.equal(ip(r.saw.src), t.proxy.serverSide.v4);
      await install();
    });

    for (const policy of ['FailClosed', 'FailOpen'] as const) {
      test(`${policy}: when the sidecar is killed, new connections are ${policy === 'FailOpen' ? 'sent direct' : 'dropped'} within 2 s`, async () => {
        const cfg = await install({ failurePolicy: policy });
        const watchdog = await startWatchdog(t.proxy.ns, cfg, state());
        // One attempt every 100 ms for 5 s, each timestamped inside the client namespace.
        const poller = await startInNs(
          t.client.ns,
          [
            ...tsNode('e2e/tools/peer.ts'),
            'poll',
            '--to',
            `${t.server.v4}:${PORT}`,
            '--every',
            '100',
            '--timeout',
            '400',
            '--count',
            '50',
          ],
          { ready: /"ok":true/ },
        );
        try {
          await sleep(500);
          const killedAt = Date.now();
          sidecar!.child.kill('SIGKILL');
          await sidecar!.stop();
          sidecar = undefined;
          await waitFor('the poller', async () => poller.output().includes('"done":true'), 15_000);
          const attempts = poller
            .output()
            .split('\n')
            .filter((l) => l.startsWith('{"t"'))
            .map((l) => JSON.parse(l) as { t: number; ok: boolean });
          const afterKill = attempts.filter((a) => a.t > killedAt);
          assert.ok(afterKill.length >= 30, 'the poller kept trying after the kill');
          if (policy === 'FailOpen') {
            const firstOk = afterKill.find((a) => a.ok);
            assert.ok(firstOk, 'traffic went direct after the proxy died');
            assert.ok(firstOk.t - killedAt < 2000, `direct after ${firstOk.t - killedAt} ms`);
            const late = afterKill
              .filter((a) => a.t - killedAt > 2000 && !a.ok)
              .map((a) => ({ ...a, t: a.t - killedAt }));
            assert.deepEqual(late, [], 'and stays direct');
            // A connection that went direct during the bypass must survive the proxy's return:
            // TPROXY only takes new connections, so its mid-flow packets keep going direct.
            const flow = await startInNs(
              t.client.ns,
              [
                ...tsNode('e2e/tools/peer.ts'),
                'chat',
                '--to',
                `${t.server.v4}:${PORT}`,
                '--count',
                '30',
                '--every',
                '100',
                '--timeout',
                '2000',
              ],
              { ready: /"ready":true/ },
            );
            await install({ failurePolicy: policy });
            const backAt = Date.now();
            await waitFor(
              'the proxy to carry new connections again',
              async () => {
                const n = await accepted(t);
                return (
                  (await peer(t.client.ns, ['probe', '--to', `${t.server.v4}:${PORT}`])).ok === true &&
                  (await accepted(t)) > n
                );
              },
              5000,
            );
            await waitFor('the long-lived flow to finish', async () => /"rounds"/.test(flow.output()), 10_000);
            const result = JSON.parse(flow.output().trim().split('\n').pop()!) as {
              ok: boolean;
              rounds: number;
              error?: string;
            };
            assert.deepEqual(
              { ok: result.ok, rounds: result.rounds },
              { ok: true, rounds: 30 },
              `the bypassed flow broke ${Date.now() - backAt} ms after recovery: ${result.error}`,
            );
          } else {
            assert.deepEqual(
              afterKill.filter((a) => a.ok),
              [],
              'FailClosed: no connection got through while the proxy was down',
            );
          }
        } finally {
          await poller.stop();
          await watchdog.stop();
        }
        await install();
      });
    }

    test('cleanup leaves the node exactly as it was', async () => {
      await sidecar?.stop();
      sidecar = undefined;
      await agent(t.proxy.ns, 'cleanup', path.join(dir.dir, 'config.yaml'), state());
      assert.equal(await hostSnapshot(t.proxy.ns), pristine);
      const r = (await peer(t.client.ns, ['probe', '--to', `${t.server.v4}:${PORT}`])) as {
        ok: boolean;
        saw: { src: string };
      };
      assert.equal(r.ok, true, 'after cleanup traffic flows directly again');
      assert.equal(ip(r.saw.src), t.client.v4);
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
