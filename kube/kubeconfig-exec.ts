// A kubeconfig user's exec credential plugin (client.authentication.k8s.io ExecCredential, what
// cloud kubeconfigs use: gke-gcloud-auth-plugin, aws eks get-token, kubelogin...), run the way
// client-go runs it: the command (relative to the kubeconfig's directory when it has a slash, else
// looked up in PATH) with the user's args and env plus KUBERNETES_EXEC_INFO, its stdout an
// ExecCredential whose status holds a token or a client certificate and key. The answer is reused
// until EXPIRY_MARGIN_MS before its expirationTimestamp; one without expiry is reused for
// NO_EXPIRY_REUSE_MS (client-go keeps it until a 401, which this client does not watch for).
// Concurrent requests share one run.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

export interface ExecConfig {
  apiVersion?: string;
  command?: string;
  args?: string[];
  env?: { name: string; value: string }[] | null;
}

export interface ExecResult {
  token?: string;
  cert?: Buffer;
  key?: Buffer;
}

const EXPIRY_MARGIN_MS = 10_000;
const NO_EXPIRY_REUSE_MS = 5 * 60_000;
const RUN_TIMEOUT_MS = 60_000;
const run = promisify(execFile);

/** Returns a function giving the plugin's current credential (running it when none is valid). */
export function execCredentials(
  cfg: ExecConfig,
  base: string,
  file: string,
  now = Date.now,
): () => Promise<ExecResult> {
  const command = cfg.command;
  if (!command) throw new Error(`${file}: user.exec has no command`);
  const apiVersion = cfg.apiVersion ?? 'client.authentication.k8s.io/v1';
  const bin = command.includes('/') ? path.resolve(base, command) : command;
  const env = { ...process.env, ...Object.fromEntries((cfg.env ?? []).map((e) => [e.name, e.value])) };
  env.KUBERNETES_EXEC_INFO = JSON.stringify({ apiVersion, kind: 'ExecCredential', spec: { interactive: false } });
  let cached: { result: ExecResult; until: number } | undefined;
  let pending: Promise<ExecResult> | undefined;
  const fetch = async (): Promise<ExecResult> => {
    let stdout: string;
    try {
      ({ stdout } = await run(bin, cfg.args ?? [], { env, timeout: RUN_TIMEOUT_MS, maxBuffer: 1 << 20 }));
    } catch (e) {
      const x = e as Error & { code?: unknown; stderr?: string };
      const why = x.stderr?.trim() || x.message;
      throw new Error(`${file}: exec plugin ${command} failed (${String(x.code ?? 'error')}): ${why.slice(0, 500)}`);
    }
    let status: {
      token?: string;
      clientCertificateData?: string;
      clientKeyData?: string;
      expirationTimestamp?: string;
    };
    try {
      status = (JSON.parse(stdout) as { status?: typeof status }).status ?? {};
    } catch {
      throw new Error(`${file}: exec plugin ${command} did not print an ExecCredential (JSON)`);
    }
    const result: ExecResult = {};
    if (status.token) result.token = status.token;
    if (status.clientCertificateData && status.clientKeyData) {
      result.cert = Buffer.from(status.clientCertificateData);
      result.key = Buffer.from(status.clientKeyData);
    }
    if (!result.token && !result.cert)
      throw new Error(`${file}: exec plugin ${command} returned neither a token nor a client certificate`);
    const expiry = status.expirationTimestamp ? Date.parse(status.expirationTimestamp) : Number.NaN;
    cached = {
      result,
      until: Number.isNaN(expiry) ? now() + NO_EXPIRY_REUSE_MS : expiry - EXPIRY_MARGIN_MS,
    };
    return result;
  };
  return async () => {
    if (cached && now() < cached.until) return cached.result;
    pending ??= fetch().finally(() => {
      pending = undefined;
    });
    return pending;
  };
}
