// Egress policy through the real sidecar in network namespaces (docs/egress.md): TLS SNI and HTTP Host
// rules against nginx with a certificate for several names, reached by curl and openssl s_client;
// wildcards; a ClientHello one byte per segment; a server-speaks-first protocol falling through after
// the peek timeout; the audit log and its cap under a flood; the per-rule metrics.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTopology, privilegedSkipReason, waitFor, type Topology } from '../e2e/netns.ts';
import { type Proc, scrape, scratch, startPeerServer, tsNode } from '../e2e/proc.ts';
import {
  auditLines,
  curl,
  HTTP,
  HTTPS,
  LISTEN,
  METRICS,
  runIn,
  type Scratch,
  startPolicySidecar,
  startWebServer,
} from './egress.testkit.ts';
import { installTproxy } from './tproxy.testkit.ts';

const GREETER = 2525,
  FAST_GREETER = 2526,
  RATE_LIMITED = 2527,
  OPEN_LIMITED = 2528;

const POLICY = {
  defaultAction: 'Deny',
  peek: { timeout: '2s' },
  audit: { enabled: true, maxLinesPerSecond: 1000 },
  rules: [
    // Address-only and first: decided at accept, no waiting for bytes the server sends first.
    { name: 'fast-greeter', match: { ports: [{ port: FAST_GREETER }] }, action: 'Allow' },
    {
      name: 'rate-limited',
      match: { ports: [{ port: RATE_LIMITED }] },
      action: 'Allow',
      limits: { connectionsPerSecond: 5, burst: 5 },
    },
    {
      name: 'open-limited',
      match: { ports: [{ port: OPEN_LIMITED }] },
      action: 'Allow',
      limits: { openConnections: 2 },
    },
    { name: 'deny-blocked', match: { serverNames: ['blocked.example.com'] }, action: 'Deny' },
    {
      name: 'example-subdomains',
      match: { serverNames: ['*.example.com'], ports: [{ port: HTTPS }] },
      action: 'Allow',
    },
    { name: 'web-host', match: { hosts: ['web.example.org', '*.example.net'] }, action: 'Allow' },
    // After rules that need a name: a client that sends nothing reaches it when the peek times out.
    { name: 'greeter', match: { ports: [{ port: GREETER }] }, action: 'Allow' },
  ],
};

describe('egress policy: SNI and Host rules in the engine', { skip: privilegedSkipReason() }, () => {
  let t: Topology, dir: Scratch, web: Proc | undefined, greeters: Proc | undefined, px: Proc | undefined;
  const metric = async (series: string) => (await scrape(t.proxy.ns, METRICS)).get(series) ?? 0;
  const decisions = (rule: string, action: string) =>
    metric(`tpfleet_proxy_policy_decisions_total{rule="${rule}",action="${action}"}`);

  before(async () => {
    t = await createTopology('eg');
    dir = scratch('egress');
    await installTproxy(t, LISTEN, [HTTP, HTTPS, GREETER, FAST_GREETER, RATE_LIMITED, OPEN_LIMITED]);
    web = await startWebServer(t, dir);
    greeters = await startPeerServer(
      t.server.ns,
      [GREETER, FAST_GREETER, RATE_LIMITED, OPEN_LIMITED].map((p) => `${t.server.v4}:${p}`),
    );
    px = await startPolicySidecar(t, dir, 'policy', POLICY);
  });

  after(async () => {
    await px?.stop(2000);
    await greeters?.stop(2000);
    await web?.stop(2000);
    await t?.destroy();
    dir?.remove();
  });

  test('an allowed SNI passes (TLS 1.3 and 1.2, curl and openssl s_client); nothing is terminated', async () => {
    const r = await curl(t, `https://a.example.com/`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ok a.example.com\n');
    for (const version of ['-tls1_3', '-tls1_2']) {
      const s = await runIn(t.client.ns, [
        'openssl',
        's_client',
        '-connect',
        `${t.server.v4}:${HTTPS}`,
        '-servername',
        'b.example.com',
        version,
        '-brief',
      ]);
      assert.equal(s.code, 0, s.stderr);
      // The certificate is the server's own: the proxy read the ClientHello and passed it on.
      assert.match(s.stderr, /CONNECTION ESTABLISHED/);
      assert.match(s.stderr, new RegExp(`Protocol version: TLSv1\\.${version.endsWith('3') ? 3 : 2}`));
      assert.match(s.stderr, /Peer certificate: CN = tpfleet-egress-test/);
    }
    assert.ok((await decisions('example-subdomains', 'allow')) >= 3);
  });

  test('a denied SNI is reset, counted under its rule and in the audit log', async () => {
    const from = px!.output().length;
    const before = await decisions('deny-blocked', 'deny');
    const r = await curl(t, 'https://blocked.example.com/');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /reset by peer/, r.stderr);
    assert.equal(await decisions('deny-blocked', 'deny'), before + 1);
    await waitFor('the audit line', async () => auditLines(px!, from).length > 0);
    const [line] = auditLines(px!, from);
    assert.deepEqual(
      { sni: line!.sni, rule: line!.rule, action: line!.action, result: line!.result, bytesDown: line!.bytesDown },
      { sni: 'blocked.example.com', rule: 'deny-blocked', action: 'Deny', result: 'denied', bytesDown: 0 },
    );
    assert.match(String(line!.client), new RegExp(`^${t.client.v4.replaceAll('.', '\\.')}:\\d+$`));
    assert.equal(line!.destination, `${t.server.v4}:${HTTPS}`);
  });

  test('*.example.com matches one more label only: not example.com, not a.b.example.com', async () => {
    for (const name of ['example.com', 'a.b.example.com']) {
      const r = await curl(t, `https://${name}/`);
      assert.notEqual(r.code, 0, `${name} must not pass: ${r.stdout}`);
      assert.match(r.stderr, /reset by peer/, `${name}: ${r.stderr}`);
    }
    assert.ok((await decisions('default', 'deny')) >= 2, 'the default action decided them');
  });

  test('a ClientHello sent one byte per TCP segment is reassembled and matched', async () => {
    const before = await decisions('example-subdomains', 'allow');
    const out = await runIn(t.client.ns, [
      ...tsNode('sidecar/testdata/split-hello.ts'),
      t.server.v4,
      String(HTTPS),
      'a.example.com',
    ]);
    const r = JSON.parse(out.stdout) as { ok: boolean; helloBytes: number };
    assert.equal(r.ok, true, out.stdout + out.stderr);
    assert.ok(r.helloBytes > 200, `a real ClientHello (${r.helloBytes} bytes, as many segments)`);
    assert.equal(await decisions('example-subdomains', 'allow'), before + 1);
  });

  test('Host rules on plaintext HTTP: exact and wildcard pass, another Host is reset', async () => {
    for (const host of ['web.example.org', 'api.example.net']) {
      const r = await curl(t, `http://${host}/`);
      assert.equal(r.code, 0, `${host}: ${r.stderr}`);
      assert.equal(r.stdout, `ok ${host}\n`);
    }
    const denied = await curl(t, 'http://other.example.org/');
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /reset by peer|Empty reply/, denied.stderr);
    assert.ok((await decisions('web-host', 'allow')) >= 2);
  });

  test('a server-speaks-first protocol works: after the peek timeout, and at once under an address-only rule', async () => {
    // Time from the TCP connect to the server's first bytes, measured inside the client.
    const FIRST_BYTES = `const s = require('net').connect(+process.argv[2], process.argv[1]);
      let t0; s.on('connect', () => (t0 = Date.now()));
      s.on('data', (d) => { console.log(JSON.stringify({ ok: d.length > 0, ms: Date.now() - t0 })); s.destroy(); });
      s.on('error', (e) => console.log(JSON.stringify({ ok: false, error: e.code })));`;
    const greet = async (port: number) => {
      const r = await runIn(t.client.ns, [process.execPath, '-e', FIRST_BYTES, t.server.v4, String(port)]);
      const out = JSON.parse(r.stdout) as { ok: boolean; ms: number };
      return { r: out, ms: out.ms };
    };
    const fast = await greet(FAST_GREETER);
    const slow = await greet(GREETER);
    assert.equal(fast.r.ok, true, JSON.stringify(fast));
    assert.equal(slow.r.ok, true, JSON.stringify(slow));
    // peek.timeout is 2 s here: the greeter waited for it, the address-only rule did not.
    assert.ok(slow.ms >= 1900, `the greeting came ${slow.ms} ms after connect, with a 2 s peek timeout`);
    assert.ok(fast.ms < 1000, `the address-only rule waited ${fast.ms} ms`);
    assert.equal(await decisions('greeter', 'allow'), 1);
    assert.equal(await decisions('fast-greeter', 'allow'), 1);
    assert.ok((await metric('tpfleet_proxy_policy_no_name_total')) >= 1);
  });

  /** N connections one after another, each kept open (keep) or closed once the server greeted. */
  const SEQUENTIAL = `const net = require('net'); const [host, port, n, keep] = process.argv.slice(1);
    (async () => { let ok = 0, reset = 0; const open = [];
      for (let i = 0; i < +n; i++) await new Promise((done) => {
        const s = net.connect(+port, host);
        s.once('data', () => { ok++; if (keep === 'keep') open.push(s); else s.destroy(); done(); });
        s.once('error', () => { reset++; done(); });
      });
      console.log(JSON.stringify({ ok, reset })); for (const s of open) s.destroy(); })();`;
  const sequential = async (port: number, n: number, keep: boolean) =>
    JSON.parse(
      (
        await runIn(t.client.ns, [
          process.execPath,
          '-e',
          SEQUENTIAL,
          t.server.v4,
          String(port),
          String(n),
          keep ? 'keep' : 'close',
        ])
      ).stdout,
    ) as { ok: number; reset: number };

  test('per-source limits: beyond the token bucket or the open count the client is reset and counted', async () => {
    const rate = await sequential(RATE_LIMITED, 12, false);
    // burst 5 at 5/s: the first five pass; the bucket may refill by one while the twelve are made.
    assert.ok(rate.ok >= 5 && rate.ok <= 6, JSON.stringify(rate));
    assert.equal(rate.ok + rate.reset, 12);
    assert.equal(await decisions('rate-limited', 'limited'), rate.reset);
    const open = await sequential(OPEN_LIMITED, 5, true);
    assert.deepEqual(open, { ok: 2, reset: 3 }, 'two open connections at most');
    assert.equal(await decisions('open-limited', 'limited'), 3);
    // The open count falls as connections close: after the two are gone, one more passes.
    await waitFor('the open count to drop', async () => (await sequential(OPEN_LIMITED, 1, false)).ok === 1);
    assert.ok((await metric('tpfleet_proxy_connections_closed_total{result="limited"}')) >= 3 + rate.reset);
  });

  test('the policy metrics show the rules in force', async () => {
    assert.equal(await metric('tpfleet_proxy_policy_rules'), POLICY.rules.length);
    assert.equal(await metric('tpfleet_proxy_policy_install_errors_total'), 0);
  });
});

describe('the audit log cap under a flood of short connections', { skip: privilegedSkipReason() }, () => {
  let t: Topology, dir: Scratch, web: Proc | undefined, px: Proc | undefined;
  const CAP = 50;

  before(async () => {
    t = await createTopology('ea');
    dir = scratch('egress-audit');
    await installTproxy(t, LISTEN, [HTTP]);
    web = await startWebServer(t, dir);
    px = await startPolicySidecar(t, dir, 'audit', {
      audit: { enabled: true, maxLinesPerSecond: CAP },
      rules: [{ name: 'web', match: { hosts: ['web.example.org'] }, action: 'Allow' }],
    });
  });

  after(async () => {
    await px?.stop(2000);
    await web?.stop(2000);
    await t?.destroy();
    dir?.remove();
  });

  test('10,000 connections: lines written stay under the cap per second; the rest are counted as suppressed', async () => {
    const from = px!.output().length;
    const t0 = Date.now();
    const accepted = async () =>
      (await scrape(t.proxy.ns, METRICS)).get('tpfleet_proxy_connections_accepted_total') ?? 0;
    // Back-to-back wrk runs until 10,000 connections went through (one run does on an idle machine).
    for (let run = 0; run < 4 && (await accepted()) < 10_000; run++) {
      const w = await runIn(t.client.ns, [
        'wrk',
        '-t2',
        '-c32',
        '-d5s',
        '-H',
        'Connection: close',
        '-H',
        'Host: web.example.org',
        `http://${t.server.v4}:${HTTP}/`,
      ]);
      assert.equal(w.code, 0, w.stderr);
    }
    const seconds = (Date.now() - t0) / 1000;
    await waitFor(
      'every connection closed',
      async () => (await scrape(t.proxy.ns, METRICS)).get('tpfleet_proxy_connections_active') === 0,
    );
    const m = await scrape(t.proxy.ns, METRICS);
    const written = m.get('tpfleet_proxy_audit_lines_total{result="written"}') ?? 0;
    const suppressed = m.get('tpfleet_proxy_audit_lines_total{result="suppressed"}') ?? 0;
    const closed = [...m]
      .filter(([k]) => k.startsWith('tpfleet_proxy_connections_closed_total'))
      .reduce((a, [, v]) => a + v, 0);
    assert.ok(closed >= 10_000, `only ${closed} connections in ${seconds.toFixed(1)} s`);
    assert.equal(written + suppressed, closed, 'every connection is either written or counted');
    // The cap holds per second of the engine's clock: a flood of S seconds touches at most ceil(S) + 1 of them.
    assert.ok(written <= CAP * (Math.ceil(seconds) + 1), `${written} lines in ${seconds.toFixed(1)} s, cap ${CAP}/s`);
    await waitFor('the written lines to be printed', async () => auditLines(px!, from).length === written);
    // Every connection that sent its request names its Host (wrk may also open one that sends nothing).
    const lines = auditLines(px!, from).filter((l) => Number(l.bytesUp) > 0);
    assert.ok(lines.length >= written - 64, `${lines.length} of ${written} lines carry a request`);
    for (const l of lines) assert.equal(l.host, 'web.example.org', JSON.stringify(l));
  });
});
