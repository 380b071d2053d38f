// Test helpers for the egress-policy tests: TLS and plaintext nginx in the server namespace of an
// e2e/netns.ts topology (one self-signed certificate for several names), the sidecar started with a
// policy behind minimal TPROXY rules, and curl/openssl clients in the client namespace. argv only.
import path from 'node:path';
import { nsExec, nsSpawn, sh, waitFor, type Topology } from '../e2e/netns.ts';
import { nodeConfigYaml, type Proc, type scratch, startInNs, startSidecar } from '../e2e/proc.ts';

export const LISTEN = 15101,
  METRICS = 15190;
export const HTTPS = 443,
  HTTP = 80;
/** Names the test certificate carries (nginx answers every name with it; the policy tells them apart). */
export const CERT_NAMES = ['a.example.com', 'b.example.com', 'example.com', 'a.b.example.com', 'blocked.example.com'];

export type Scratch = ReturnType<typeof scratch>;

/** nginx on HTTPS and HTTP in the server namespace: `/` answers "ok <host>" so a client sees where it got. */
export async function startWebServer(t: Topology, dir: Scratch): Promise<Proc> {
  const key = path.join(dir.dir, 'key.pem'),
    crt = path.join(dir.dir, 'cert.pem');
  const san = CERT_NAMES.map((n) => `DNS:${n}`).join(',');
  await sh([
    'openssl',
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    crt,
    '-days',
    '1',
    '-subj',
    '/CN=tpfleet-egress-test',
    '-addext',
    `subjectAltName=${san}`,
  ]);
  const d = dir.dir;
  const conf = dir.file(
    'nginx.conf',
    `worker_processes 1;
daemon off;
pid ${d}/nginx.pid;
error_log ${d}/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${d}/nb; proxy_temp_path ${d}/np; fastcgi_temp_path ${d}/nf; uwsgi_temp_path ${d}/nu; scgi_temp_path ${d}/ns;
  server {
    listen ${t.server.v4}:${HTTP};
    listen ${t.server.v4}:${HTTPS} ssl;
    ssl_certificate ${crt};
    ssl_certificate_key ${key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { return 200 "ok $host\\n"; }
    location /whoami { return 200 "$remote_addr\\n"; }
  }
}
`,
  );
  const p = await startInNs(t.server.ns, ['nginx', '-c', conf]);
  await waitFor('nginx to answer', async () =>
    (await nsExec(t.server.ns, ['curl', '-s', `http://${t.server.v4}:${HTTP}/`], { allowFail: true })).startsWith('ok'),
  );
  return p;
}

/** The sidecar with `policy` (the NodeConfig section, api/policy.ts PolicyConfig) and debug logs. */
export function startPolicySidecar(
  t: Topology,
  dir: Scratch,
  name: string,
  policy: object,
  env?: Record<string, string>,
  keepClientIp = true,
): Promise<Proc> {
  const file = dir.file(
    `${name}.yaml`,
    nodeConfigYaml({
      proxy: { listenPort: LISTEN, metricsPort: METRICS, workers: 2, keepClientIp, logLevel: 'debug' },
      policy,
    }),
  );
  return startSidecar(t.proxy.ns, file, METRICS, env);
}

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** argv in namespace `ns`, stdin from `input`: its exit code and output (never throws on a failure). */
export function runIn(ns: string, argv: string[], input = ''): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const p = nsSpawn(ns, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    p.stdout!.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin!.end(input);
  });
}

/** curl in the client namespace with the URL's name resolved to the server (--resolve); body on stdout. */
export function curl(t: Topology, url: string, extra: string[] = []): Promise<Ran> {
  const u = new URL(url);
  const port = u.port || (u.protocol === 'https:' ? '443' : '80');
  return runIn(t.client.ns, [
    'curl',
    '-sSk',
    '--max-time',
    '5',
    '--resolve',
    `${u.hostname}:${port}:${t.server.v4}`,
    ...extra,
    url,
  ]);
}

/** The sidecar's audit lines (JSON objects with log: "audit") printed since `from`. */
export function auditLines(p: Proc, from = 0): Record<string, unknown>[] {
  return p
    .output()
    .slice(from)
    .split('\n')
    .filter((l) => l.includes('"log":"audit"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
