// An envtest-like harness: a real etcd and a real kube-apiserver on free loopback ports, with
// generated certificates, RBAC authorization and a service-account key. One instance per test
// file (start in `before`, stop in `after`); stop() kills both processes and deletes their data.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { ensureBinaries } from './binaries.ts';
import { TestPki, type Pem } from './certs.ts';

export interface TestEnv {
  /** https://127.0.0.1:<port> */
  server: string;
  /** Path of a kubeconfig for the admin user (system:masters). */
  kubeconfigPath: string;
  kubeConfig: KubeConfig;
  dir: string;
  /** Writes a kubeconfig for `user` in `groups` (for RBAC tests) and returns its path. */
  userKubeconfig(user: string, groups?: string[]): Promise<string>;
  /** Runs the real kubectl (same pinned release) as the admin user; resolves with its stdout. */
  kubectl(args: string[]): Promise<string>;
  /** The harness CA (signs every certificate here) and service-account key pair. */
  pki: TestPki;
  /** The audit log of TestEnvOptions.auditUsers (undefined without them). */
  auditLog?: string;
  /** Process ids of etcd and kube-apiserver (e.g. to check that stop() left none). */
  pids: number[];
  stop(): Promise<void>;
}

export interface TestEnvOptions {
  readyTimeoutMs?: number;
  /**
   * Address the API server binds and is reached at, instead of 127.0.0.1: a non-loopback address
   * of this host lets processes in other network namespaces (an aggregated API server) reach it.
   */
  bindAddress?: string;
  /**
   * What a real cluster's API server has and the bare harness leaves out: the ServiceAccount
   * admission plugin (a kube-controller-manager must then create the default service accounts)
   * and the aggregation layer (front-proxy CA and client certificate, requestheader flags, and
   * routing to an APIService's endpoint IPs since no kube-proxy runs).
   */
  fullControlPlane?: boolean;
  /**
   * Users whose requests the API server writes to an audit log (JSON lines, level Metadata, at
   * TestEnv.auditLog): what a component really asks for, e.g. to prove its RBAC has no unused verb.
   */
  auditUsers?: string[];
}

/** ClusterIP of the `kubernetes` Service with --service-cluster-ip-range=10.96.0.0/24. */
export const KUBERNETES_SERVICE_IP = '10.96.0.1';

const live = new Set<ChildProcess>();
const liveDirs = new Set<string>();
// Last line of defence if a test process dies without running `after` (crash, Ctrl-C, the
// runner's SIGTERM): never leave servers or data behind. Children are unref'd so a forgotten
// stop() cannot keep the test process alive; this handler then kills them on the way out.
const killAll = () => {
  for (const c of live) c.kill('SIGKILL');
  for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
};
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    killAll();
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
  });
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * Starts a child covered by the harness's exit hook (killed if the test process exits before the
 * caller stops it with stopProcess); stdout and stderr go to `logPath`.
 */
export function startProcess(bin: string, args: string[], logPath: string): ChildProcess {
  const log = openSync(logPath, 'a');
  const child = spawn(bin, args, { stdio: ['ignore', log, log] });
  live.add(child);
  child.unref();
  child.on('exit', () => live.delete(child));
  return child;
}

/** Throwaway servers: their data is deleted next, so no graceful shutdown is owed (SIGKILL). */
export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // The child is unref'd (startProcess): waiting for its exit would not keep the event loop alive, so
  // a test process with nothing else pending exited right here, in the middle of its `after` hook,
  // and every cleanup after this call (network namespaces, veths) never ran (measured: the janitor
  // tier left its three namespaces and a host veth behind on every run).
  child.ref();
  child.kill('SIGKILL');
  await exited;
}

export function tail(path: string, lines = 30): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function kubeconfigYaml(server: string, caPem: string, user: string, pem: Pem): string {
  const b64 = (p: string) => Buffer.from(readFileSync(p)).toString('base64');
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': 'testenv',
    clusters: [
      { name: 'testenv', cluster: { server, 'certificate-authority-data': Buffer.from(caPem).toString('base64') } },
    ],
    users: [{ name: user, user: { 'client-certificate-data': b64(pem.cert), 'client-key-data': b64(pem.key) } }],
    contexts: [{ name: 'testenv', context: { cluster: 'testenv', user } }],
  });
}

async function waitReady(
  kc: KubeConfig,
  server: string,
  child: ChildProcess,
  log: string,
  timeoutMs: number,
): Promise<void> {
  const { request } = await import('node:https');
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`kube-apiserver exited (${child.exitCode}):\n${tail(log)}`);
    const opts: import('node:https').RequestOptions = { method: 'GET' };
    await kc.applyToHTTPSOptions(opts);
    const status = await new Promise<number>((resolve) => {
      const req = request(`${server}/readyz`, opts, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', (e) => {
        last = e.message;
        resolve(0);
      });
      req.setTimeout(2000, () => req.destroy(new Error('timeout')));
      req.end();
    });
    if (status === 200) return;
    last = `HTTP ${status}`;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`kube-apiserver not ready after ${timeoutMs} ms (${last}):\n${tail(log)}`);
}

function runKubectl(bin: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      err
        ? reject(new Error(`kubectl ${args.slice(2).join(' ')}: ${stderr.trim() || err.message}`, { cause: err }))
        : resolve(stdout),
    );
  });
}

/** Flags for the aggregation layer: the API server authenticates to aggregated servers as front-proxy-client. */
async function aggregatorArgs(dir: string, pki: TestPki): Promise<string[]> {
  // A CA of its own, as kubeadm does: only this CA's front-proxy-client may assert user headers.
  const front = new TestPki(join(dir, 'front-proxy'), 'tpfleet-testenv-front-proxy-ca');
  mkdirSync(front.dir);
  await front.init();
  const client = await front.client('front-proxy-client');
  // The API server's identity towards kubelets (logs, exec, port-forward, pod proxy), as kubeadm's
  // apiserver-kubelet-client: the kubelets of local-real authenticate it by the cluster CA and ask
  // the API server whether it may (webhook authorization); nothing reaches a kubelet anonymously.
  const kubelet = await pki.client('kube-apiserver-kubelet-client', ['system:masters']);
  return [
    `--kubelet-client-certificate=${kubelet.cert}`,
    `--kubelet-client-key=${kubelet.key}`,
    `--requestheader-client-ca-file=${front.caCert}`,
    '--requestheader-allowed-names=front-proxy-client',
    '--requestheader-username-headers=X-Remote-User',
    '--requestheader-group-headers=X-Remote-Group',
    '--requestheader-extra-headers-prefix=X-Remote-Extra-',
    '--requestheader-uid-headers=X-Remote-Uid',
    `--proxy-client-cert-file=${client.cert}`,
    `--proxy-client-key-file=${client.key}`,
    '--enable-aggregator-routing=true',
    // Real kubelets (the local-real provider) register their node name as a Hostname address,
    // which nothing resolves here: logs/exec reach them at their InternalIP.
    '--kubelet-preferred-address-types=InternalIP,Hostname',
  ];
}

/** Flags for an audit log of `users`' requests (JSON events; a watch is logged when its response starts). */
function auditArgs(dir: string, log: string, users: string[]): string[] {
  const policy = join(dir, 'audit-policy.yaml');
  writeFileSync(
    policy,
    stringify({
      apiVersion: 'audit.k8s.io/v1',
      kind: 'Policy',
      omitStages: ['RequestReceived'],
      rules: [{ level: 'Metadata', users }, { level: 'None' }],
    }),
  );
  return [
    `--audit-policy-file=${policy}`,
    `--audit-log-path=${log}`,
    '--audit-log-format=json',
    '--audit-log-mode=blocking',
  ];
}

export async function startTestEnv(opts: TestEnvOptions = {}): Promise<TestEnv> {
  const bin = await ensureBinaries(['kube-apiserver', 'etcd', 'kubectl']);
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-testenv-'));
  liveDirs.add(dir);
  const procs: ChildProcess[] = [];
  const stop = async () => {
    for (const p of procs.reverse()) await stopProcess(p);
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
  };
  try {
    const pki = new TestPki(dir);
    await pki.init();
    const host = opts.bindAddress ?? '127.0.0.1';
    // Pods reach the API server at the `kubernetes` Service's ClusterIP (first address of
    // --service-cluster-ip-range), so a full control plane's certificate names it, as kubeadm's does.
    const extraIps = [
      ...(host === '127.0.0.1' ? [] : [host]),
      ...(opts.fullControlPlane ? [KUBERNETES_SERVICE_IP] : []),
    ];
    const [serving, admin] = [await pki.serving(extraIps), await pki.client('tpfleet-admin', ['system:masters'])];
    const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
    const etcdUrl = `http://127.0.0.1:${etcdPort}`,
      peerUrl = `http://127.0.0.1:${peerPort}`;
    procs.push(
      startProcess(
        join(bin, 'etcd'),
        [
          '--name=testenv',
          `--data-dir=${join(dir, 'etcd')}`,
          `--listen-client-urls=${etcdUrl}`,
          `--advertise-client-urls=${etcdUrl}`,
          `--listen-peer-urls=${peerUrl}`,
          `--initial-advertise-peer-urls=${peerUrl}`,
          `--initial-cluster=testenv=${peerUrl}`,
          // Test data is thrown away: skipping fsync makes the API server several times faster on slow disks.
          '--unsafe-no-fsync',
          '--log-level=warn',
        ],
        join(dir, 'etcd.log'),
      ),
    );
    const server = `https://${host.includes(':') ? `[${host}]` : host}:${apiPort}`;
    // No controller-manager runs in the bare harness, so nothing would create the "default"
    // service accounts the ServiceAccount admission plugin insists on; envtest disables it for
    // the same reason. The full control plane has one (the caller runs it).
    const full = opts.fullControlPlane
      ? await aggregatorArgs(dir, pki)
      : ['--disable-admission-plugins=ServiceAccount'];
    const auditLog = opts.auditUsers?.length ? join(dir, 'audit.log') : undefined;
    const audit = auditLog ? auditArgs(dir, auditLog, opts.auditUsers!) : [];
    const apiserver = startProcess(
      join(bin, 'kube-apiserver'),
      [
        `--etcd-servers=${etcdUrl}`,
        `--bind-address=${host}`,
        `--advertise-address=${host}`,
        `--secure-port=${apiPort}`,
        `--cert-dir=${join(dir, 'apiserver-certs')}`,
        `--tls-cert-file=${serving.cert}`,
        `--tls-private-key-file=${serving.key}`,
        `--client-ca-file=${pki.caCert}`,
        `--service-account-key-file=${pki.saPub}`,
        `--service-account-signing-key-file=${pki.saKey}`,
        '--service-account-issuer=https://kubernetes.default.svc',
        '--authorization-mode=RBAC',
        '--service-cluster-ip-range=10.96.0.0/24',
        '--allow-privileged=true',
        // No kube-proxy routes the `kubernetes` Service here; clients use the kubeconfig's address.
        ...full,
        ...audit,
        '--endpoint-reconciler-type=none',
        '--v=1',
      ],
      join(dir, 'apiserver.log'),
    );
    procs.push(apiserver);
    const caPem = readFileSync(pki.caCert, 'utf8');
    const kubeconfigPath = join(dir, 'admin.kubeconfig');
    writeFileSync(kubeconfigPath, kubeconfigYaml(server, caPem, 'tpfleet-admin', admin), { mode: 0o600 });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    await waitReady(kubeConfig, server, apiserver, join(dir, 'apiserver.log'), opts.readyTimeoutMs ?? 90_000);
    return {
      server,
      kubeconfigPath,
      kubeConfig,
      dir,
      auditLog,
      stop,
      pki,
      pids: procs.map((p) => p.pid!),
      kubectl: (args) => runKubectl(join(bin, 'kubectl'), ['--kubeconfig', kubeconfigPath, ...args]),
      async userKubeconfig(user, groups = []) {
        const path = join(dir, `${user.replace(/[^A-Za-z0-9_-]/g, '_')}.kubeconfig`);
        writeFileSync(path, kubeconfigYaml(server, caPem, user, await pki.client(user, groups)), { mode: 0o600 });
        return path;
      },
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
