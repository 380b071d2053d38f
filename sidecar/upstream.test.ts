// Forward rules through real upstream proxies in their own network namespace: tinyproxy (HTTP CONNECT,
// with and without Basic auth) and dante (SOCKS5, with and without RFC 1929 username/password), the
// credentials read from files as a mounted Secret delivers them and re-read when they change; wrong
// credentials give a counted error and a reset, not a hang. PROXY protocol v1 and v2 towards a real
// HAProxy (accept-proxy) that reports the client address it read.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, nsExec, privilegedSkipReason, sh, waitFor, type Topology } from '../e2e/netns.ts';
import { REPO, type Proc, scrape, scratch, startInNs } from '../e2e/proc.ts';
import {
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

const PROXY_V1 = 9001,
  PROXY_V2 = 9002;
const USER = 'tpfuser',
  PASSWORD = 'corr3ct-horse';

/** A fourth namespace behind the proxy node, for the upstream proxies (10.X.3.2, routed by the node). */
async function upstreamNamespace(t: Topology): Promise<{ ns: string; v4: string; destroy(): Promise<void> }> {
  const octet = t.client.v4.split('.')[1]!;
  const ns = `${t.prefix}-up`,
    v4 = `10.${octet}.3.2`,
    gw = `10.${octet}.3.1`;
  await sh(['ip', 'netns', 'add', ns]);
  await nsExec(ns, ['ip', 'link', 'set', 'lo', 'up']);
  await sh([
    'ip',
    'link',
    'add',
    `${t.prefix.slice(0, 8)}up`,
    'netns',
    ns,
    'type',
    'veth',
    'peer',
    'name',
    'to-up',
    'netns',
    t.proxy.ns,
  ]);
  await nsExec(ns, ['ip', 'link', 'set', `${t.prefix.slice(0, 8)}up`, 'name', 'eth0']);
  await nsExec(ns, ['ip', 'addr', 'add', `${v4}/24`, 'dev', 'eth0']);
  await nsExec(ns, ['ip', 'link', 'set', 'eth0', 'up']);
  await nsExec(t.proxy.ns, ['ip', 'addr', 'add', `${gw}/24`, 'dev', 'to-up']);
  await nsExec(t.proxy.ns, ['ip', 'link', 'set', 'to-up', 'up']);
  await nsExec(ns, ['ip', 'route', 'add', 'default', 'via', gw]);
  // CONNECT and SOCKS5 carry the name the client asked for; the upstream resolves it. `ip netns exec`
  // bind-mounts /etc/netns/<ns>/hosts over /etc/hosts for processes of this namespace.
  const created = !existsSync('/etc/netns');
  mkdirSync(`/etc/netns/${ns}`, { recursive: true });
  writeFileSync(
    `/etc/netns/${ns}/hosts`,
    `${t.server.v4} a.example.com b.example.com via-connect.test via-auth.test via-wrong.test via-socks.test via-socks-auth.test\n`,
  );
  return {
    ns,
    v4,
    destroy: async () => {
      rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
      if (created) rmSync('/etc/netns', { recursive: true, force: true }); // as we found the host
      await sh(['ip', 'netns', 'del', ns], { allowFail: true });
    },
  };
}

function tinyproxyConf(dir: Scratch, name: string, listen: string, port: number, auth: boolean): string {
  return dir.file(
    `${name}.conf`,
    [
      `Port ${port}`,
      `Listen ${listen}`,
      'Timeout 30',
      'LogLevel Info',
      'MaxClients 64',
      `PidFile "${dir.dir}/${name}.pid"`,
      ...(auth ? [`BasicAuth ${USER} ${PASSWORD}`] : []),
      '',
    ].join('\n'),
  );
}

/** dante's sockd.conf; username: RFC 1929 against the passwd/shadow its private mount namespace sees. */
function danteConf(dir: Scratch, name: string, listen: string, port: number, auth: boolean): string {
  return dir.file(
    `${name}.conf`,
    `logoutput: stderr
internal: ${listen} port = ${port}
external: ${listen}
clientmethod: none
socksmethod: ${auth ? 'username' : 'none'}
user.privileged: root
user.unprivileged: nobody
client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }
socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect }
`,
  );
}

/** passwd and shadow files with the test user added (the host's own stay untouched: bind-mounted privately). */
async function userFiles(dir: Scratch): Promise<{ passwd: string; shadow: string }> {
  const { readFileSync } = await import('node:fs');
  const hash = (await sh(['openssl', 'passwd', '-6', '-salt', 'tpfleetsalt', PASSWORD])).trim();
  const passwd = dir.file(
    'passwd',
    `${readFileSync('/etc/passwd', 'utf8')}${USER}:x:64999:65534::/nonexistent:/usr/sbin/nologin\n`,
  );
  const shadow = dir.file('shadow', `${readFileSync('/etc/shadow', 'utf8')}${USER}:${hash}:19000:0:99999:7:::\n`);
  return { passwd, shadow };
}

function credentials(root: string, secret: string, username: string, password: string): void {
  mkdirSync(path.join(root, secret), { recursive: true });
  // As the kubelet writes a Secret volume: one file per key.
  writeFileSync(path.join(root, secret, 'username'), username);
  writeFileSync(path.join(root, secret, 'password'), password);
}

describe('Forward through upstream proxies; PROXY protocol', { skip: privilegedSkipReason() }, () => {
  let t: Topology, up: Awaited<ReturnType<typeof upstreamNamespace>>, dir: Scratch;
  const procs: Proc[] = [];
  let px: Proc | undefined;
  let creds: string;
  const metric = async (series: string) => (await scrape(t.proxy.ns, METRICS)).get(series) ?? 0;

  before(async () => {
    t = await createTopology('eu');
    up = await upstreamNamespace(t);
    dir = scratch('egress-up');
    creds = path.join(dir.dir, 'credentials');
    credentials(creds, 'corp-creds', USER, PASSWORD);
    credentials(creds, 'wrong-creds', USER, 'not-the-password');
    await installTproxy(t, LISTEN, [HTTP, HTTPS, PROXY_V1, PROXY_V2]);
    procs.push(await startWebServer(t, dir));
    procs.push(await startInNs(up.ns, ['tinyproxy', '-d', '-c', tinyproxyConf(dir, 'tp', up.v4, 3128, false)]));
    procs.push(await startInNs(up.ns, ['tinyproxy', '-d', '-c', tinyproxyConf(dir, 'tpa', up.v4, 3129, true)]));
    procs.push(await startInNs(up.ns, ['danted', '-f', danteConf(dir, 'socks', up.v4, 1080, false)]));
    const u = await userFiles(dir);
    procs.push(
      await startInNs(up.ns, [
        'unshare',
        '-m',
        '--propagation',
        'private',
        'sh',
        path.join(REPO, 'sidecar/testdata/with-users.sh'),
        u.passwd,
        u.shadow,
        'danted',
        '-f',
        danteConf(dir, 'socksa', up.v4, 1081, true),
      ]),
    );
    procs.push(
      await startInNs(t.server.ns, ['haproxy', '-db', '-f', dir.file('haproxy.cfg', haproxyConf(t.server.v4))]),
    );
    for (const port of [3128, 3129, 1080, 1081])
      await waitFor(`upstream on ${port}`, async () =>
        (await nsExec(up.ns, ['ss', '-ltnH', `sport = :${port}`])).includes('LISTEN'),
      );
    await waitFor('haproxy', async () =>
      (await nsExec(t.server.ns, ['ss', '-ltnH', `sport = :${PROXY_V2}`])).includes('LISTEN'),
    );
    px = await startPolicySidecar(
      t,
      dir,
      'upstreams',
      {
        upstreams: [
          { name: 'corp', type: 'HTTPConnect', address: `${up.v4}:3128` },
          {
            name: 'corp-auth',
            type: 'HTTPConnect',
            address: `${up.v4}:3129`,
            credentialsSecret: { name: 'corp-creds' },
          },
          {
            name: 'corp-wrong',
            type: 'HTTPConnect',
            address: `${up.v4}:3129`,
            credentialsSecret: { name: 'wrong-creds' },
          },
          { name: 'socks', type: 'SOCKS5', address: `${up.v4}:1080` },
          { name: 'socks-auth', type: 'SOCKS5', address: `${up.v4}:1081`, credentialsSecret: { name: 'corp-creds' } },
          { name: 'socks-wrong', type: 'SOCKS5', address: `${up.v4}:1081`, credentialsSecret: { name: 'wrong-creds' } },
          // A name no node can resolve: its Forward rules must deny, never go direct.
          { name: 'ghost', type: 'HTTPConnect', address: 'ghost.invalid:3128' },
        ],
        rules: [
          { name: 'tls-connect', match: { serverNames: ['a.example.com'] }, action: 'Forward', upstream: 'corp' },
          { name: 'tls-socks', match: { serverNames: ['b.example.com'] }, action: 'Forward', upstream: 'socks-auth' },
          { name: 'connect', match: { hosts: ['via-connect.test'] }, action: 'Forward', upstream: 'corp' },
          { name: 'connect-auth', match: { hosts: ['via-auth.test'] }, action: 'Forward', upstream: 'corp-auth' },
          { name: 'connect-wrong', match: { hosts: ['via-wrong.test'] }, action: 'Forward', upstream: 'corp-wrong' },
          { name: 'socks', match: { hosts: ['via-socks.test'] }, action: 'Forward', upstream: 'socks' },
          { name: 'socks-auth', match: { hosts: ['via-socks-auth.test'] }, action: 'Forward', upstream: 'socks-auth' },
          {
            name: 'socks-wrong',
            match: { hosts: ['via-socks-wrong.test'] },
            action: 'Forward',
            upstream: 'socks-wrong',
          },
          { name: 'via-ghost', match: { hosts: ['via-ghost.test'] }, action: 'Forward', upstream: 'ghost' },
          { name: 'pp1', match: { ports: [{ port: PROXY_V1 }] }, action: 'Allow', proxyProtocol: 'v1' },
          { name: 'pp2', match: { ports: [{ port: PROXY_V2 }] }, action: 'Allow', proxyProtocol: 'v2' },
        ],
      },
      { TPFLEET_CREDENTIALS_DIR: creds },
      false, // PROXY protocol is for destinations that cannot see the client address otherwise
    );
  });

  after(async () => {
    await px?.stop(2000);
    for (const p of procs.reverse()) await p.stop(2000);
    await up?.destroy();
    await t?.destroy();
    dir?.remove();
  });

  const whoami = (host: string, scheme = 'http') => curl(t, `${scheme}://${host}/whoami`);

  for (const [host, rule] of [
    ['via-connect.test', 'connect'],
    ['via-auth.test', 'connect-auth'],
    ['via-socks.test', 'socks'],
    ['via-socks-auth.test', 'socks-auth'],
  ] as const) {
    test(`Host ${host} goes through its upstream: the destination sees the upstream's address`, async () => {
      const r = await whoami(host);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${up.v4}\n`);
      assert.equal(await metric(`tpfleet_proxy_policy_decisions_total{rule="${rule}",action="forward"}`), 1);
    });
  }

  test("TLS through CONNECT and through SOCKS5 with auth: the certificate is the server's own", async () => {
    for (const host of ['a.example.com', 'b.example.com']) {
      const r = await whoami(host, 'https');
      assert.equal(r.code, 0, `${host}: ${r.stderr}`);
      assert.equal(r.stdout, `${up.v4}\n`);
    }
  });

  for (const [host, kind] of [
    ['via-wrong.test', 'HTTP CONNECT (407)'],
    ['via-socks-wrong.test', 'SOCKS5 (auth failure)'],
  ] as const) {
    test(`wrong credentials for ${kind}: a counted error and a reset, not a hang`, async () => {
      const before = await metric('tpfleet_proxy_errors_total{reason="upstream_proxy"}');
      const t0 = Date.now();
      const r = await whoami(host);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /reset by peer|Empty reply/, r.stderr);
      assert.ok(Date.now() - t0 < 3000, `answered after ${Date.now() - t0} ms`);
      assert.equal(await metric('tpfleet_proxy_errors_total{reason="upstream_proxy"}'), before + 1);
    });
  }

  test('an upstream whose name does not resolve: its Forward rule denies (fail closed), nothing goes direct', async () => {
    const r = await whoami('via-ghost.test');
    assert.notEqual(r.code, 0, `carried: ${r.stdout}`);
    assert.match(r.stderr, /reset by peer|Empty reply/, r.stderr);
    assert.equal(await metric('tpfleet_proxy_policy_decisions_total{rule="via-ghost",action="deny"}'), 1);
    assert.match(px!.output(), /upstream unusable: its Forward rules deny until it is/);
  });

  test('a rotated Secret applies without a restart: new connections use the new credentials', async () => {
    const pid = px!.child.pid;
    credentials(creds, 'corp-creds', USER, 'rotated-away');
    await waitFor('the policy to be reinstalled', async () => (await whoami('via-auth.test')).code !== 0, 10_000, 500);
    credentials(creds, 'corp-creds', USER, PASSWORD);
    await waitFor('the right password again', async () => (await whoami('via-auth.test')).code === 0, 10_000, 500);
    assert.equal(px!.child.pid, pid);
    assert.equal(px!.child.exitCode, null);
  });

  for (const [port, version] of [
    [PROXY_V1, 'v1'],
    [PROXY_V2, 'v2'],
  ] as const) {
    test(`PROXY protocol ${version}: HAProxy (accept-proxy) reads the client's address`, async () => {
      const r = await runIn(t.client.ns, ['curl', '-sS', '--max-time', '5', `http://${t.server.v4}:${port}/`]);
      assert.equal(r.code, 0, r.stderr);
      // keepClientIp is off: without the header HAProxy would see the node's address.
      assert.equal(r.stdout, `${t.client.v4}\n`);
    });
  }
});

function haproxyConf(server: string): string {
  return `global
  maxconn 256
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend pp
  bind ${server}:${PROXY_V1} accept-proxy
  bind ${server}:${PROXY_V2} accept-proxy
  http-request return status 200 content-type text/plain lf-string "%[src]\\n"
`;
}
