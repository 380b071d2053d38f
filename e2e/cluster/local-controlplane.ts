// The `local` provider's control plane: the harness's etcd + kube-apiserver in its full mode
// (ServiceAccount admission, aggregation layer) bound to the host side of the provider's veth,
// plus a real kube-controller-manager and kube-scheduler. Each component authenticates with a
// client certificate naming its real identity (system:kube-controller-manager,
// system:kube-scheduler), so the bootstrap RBAC of a real cluster is what authorizes them; the
// controller-manager runs each controller under its own service account as kubeadm sets it up.
import type { ChildProcess } from 'node:child_process';
import { request } from 'node:https';
import { join } from 'node:path';
import { ensureBinaries } from '../testenv/binaries.ts';
import { freePort, startProcess, startTestEnv, stopProcess, tail, type TestEnv } from '../testenv/testenv.ts';

export interface ControlPlane {
  env: TestEnv;
  procs: Map<string, ChildProcess>;
  logs: Map<string, string>;
  stop(): Promise<void>;
}

/** Resolves with the HTTP status of GET url (0 on a connection error); self-signed serving certs are expected. */
export function httpsStatus(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, { rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.setTimeout(2000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

/** Waits for a component's /healthz (always allowed without credentials) or fails with its log. */
export async function waitHealthy(
  name: string,
  port: number,
  child: ChildProcess,
  log: string,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}):\n${tail(log)}`);
    if ((await httpsStatus(`https://127.0.0.1:${port}/healthz`)) === 200) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${name} not healthy after ${timeoutMs} ms:\n${tail(log)}`);
}

/** Flags every component's secure serving shares: loopback only, delegated authn/authz via its kubeconfig. */
function servingArgs(kubeconfig: string, port: number, certDir: string): string[] {
  return [
    `--kubeconfig=${kubeconfig}`,
    `--authentication-kubeconfig=${kubeconfig}`,
    `--authorization-kubeconfig=${kubeconfig}`,
    '--bind-address=127.0.0.1',
    `--secure-port=${port}`,
    `--cert-dir=${certDir}`,
    '--leader-elect=false',
    '--v=1',
  ];
}

export async function startControlPlane(bindAddress: string): Promise<ControlPlane> {
  const bin = await ensureBinaries(['kube-apiserver', 'etcd', 'kubectl', 'kube-controller-manager', 'kube-scheduler']);
  const env = await startTestEnv({ bindAddress, fullControlPlane: true });
  const procs = new Map<string, ChildProcess>(),
    logs = new Map<string, string>();
  const stop = async () => {
    for (const p of [...procs.values()].reverse()) await stopProcess(p);
    procs.clear();
    await env.stop();
  };
  try {
    const kcmPort = await freePort(),
      schedPort = await freePort();
    const kcmConf = await env.userKubeconfig('system:kube-controller-manager');
    const schedConf = await env.userKubeconfig('system:kube-scheduler');
    const start = (name: string, args: string[]) => {
      const log = join(env.dir, `${name}.log`);
      logs.set(name, log);
      const child = startProcess(join(bin, name), args, log);
      procs.set(name, child);
      return child;
    };
    const kcm = start('kube-controller-manager', [
      ...servingArgs(kcmConf, kcmPort, join(env.dir, 'kcm-certs')),
      '--controllers=*',
      '--use-service-account-credentials=true',
      `--service-account-private-key-file=${env.pki.saKey}`,
      `--root-ca-file=${env.pki.caCert}`,
      `--cluster-signing-cert-file=${env.pki.caCert}`,
      `--cluster-signing-key-file=${env.pki.caKey}`,
      // Tests watch the HPA act: sync every 2 s instead of 15 s (the controller's only knob for it).
      '--horizontal-pod-autoscaler-sync-period=2s',
    ]);
    const sched = start('kube-scheduler', servingArgs(schedConf, schedPort, join(env.dir, 'scheduler-certs')));
    await Promise.all([
      waitHealthy('kube-controller-manager', kcmPort, kcm, logs.get('kube-controller-manager')!),
      waitHealthy('kube-scheduler', schedPort, sched, logs.get('kube-scheduler')!),
    ]);
    return { env, procs, logs, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
