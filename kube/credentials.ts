// API credentials without @kubernetes/client-node, for the node agent and the operator: the agent's
// watch process runs on every node for as long as the node intercepts, and client-node costs about
// 50 MB unbundled (docs/benchmarks.md, "at rest"), 18 MiB of the operator's bundle. Two sources:
//   - in-cluster: the projected service-account token (re-read for every request: the kubelet rotates it),
//     the cluster CA, and KUBERNETES_SERVICE_HOST/PORT;
//   - a kubeconfig file (tests, running by hand): the current context's server, CA, and a bearer token or
//     a client certificate, inline (*-data) or as files; for the operator also an exec credential plugin
//     (kubeconfig-exec.ts: cloud kubeconfigs). Auth providers (removed from kubectl in 1.26) and basic
//     auth (removed from kube-apiserver in 1.19) are refused with a message.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type * as https from 'node:https';
import { parse } from 'yaml';
import { execCredentials, type ExecConfig } from './kubeconfig-exec.ts';

/** What KubeClient needs: where the API server is, and how to authenticate one request to it. */
export interface ApiCredentials {
  readonly server: string;
  applyToHTTPSOptions(opts: https.RequestOptions): Promise<void>;
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** The pod's own service account (the mount the DaemonSet gives agent-watch). */
export function inClusterCredentials(api: { host?: string; port?: string }, dir = SERVICE_ACCOUNT_DIR): ApiCredentials {
  const { host, port } = api;
  if (!host || !port) {
    throw new Error(
      'not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (use --kubeconfig)',
    );
  }
  const ca = readFileSync(path.join(dir, 'ca.crt'));
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    async applyToHTTPSOptions(opts) {
      opts.ca = ca;
      const token = readFileSync(path.join(dir, 'token'), 'utf8').trim();
      opts.headers = { ...opts.headers, Authorization: `Bearer ${token}` };
    },
  };
}

/**
 * The kubeconfig used when none is named, in kubectl's order: $KUBECONFIG, else ~/.kube/config when
 * it exists; undefined: in-cluster. Several files in $KUBECONFIG (kubectl merges them) are refused.
 */
export function defaultKubeconfig(env: string | undefined, home: string): string | undefined {
  const files = (env ?? '').split(path.delimiter).filter(Boolean);
  if (files.length > 1)
    throw new Error(`KUBECONFIG lists ${files.length} files; merging them is not supported: name one (--kubeconfig)`);
  if (files[0]) return files[0];
  const file = path.join(home, '.kube', 'config');
  return existsSync(file) ? file : undefined;
}

interface Named {
  name: string;
}
interface Kubeconfig {
  'current-context'?: string;
  contexts?: { name: string; context?: { cluster?: string; user?: string } }[];
  clusters?: { name: string; cluster?: Record<string, string | boolean | undefined> }[];
  users?: { name: string; user?: Record<string, unknown> }[];
}

const pick = <T extends Named>(list: T[] | undefined, name: string | undefined, what: string, file: string): T => {
  const found = list?.find((x) => x.name === name);
  if (!found) throw new Error(`${file}: no ${what} named ${JSON.stringify(name)}`);
  return found;
};

/** data (base64) or a file path relative to the kubeconfig's directory; undefined when neither is set. */
function material(data: unknown, file: unknown, base: string): Buffer | undefined {
  if (typeof data === 'string' && data) return Buffer.from(data, 'base64');
  if (typeof file === 'string' && file) return readFileSync(path.resolve(base, file));
  return undefined;
}

export interface KubeconfigOptions {
  /** Run the user's exec credential plugin (the operator); the agent refuses it (default false). */
  exec?: boolean;
}

/** The current context of a kubeconfig file, read once (tests, running the agent or the operator by hand). */
export function kubeconfigCredentials(file: string, o: KubeconfigOptions = {}): ApiCredentials {
  const kc = parse(readFileSync(file, 'utf8')) as Kubeconfig;
  const base = path.dirname(file);
  const ctx = pick(kc.contexts, kc['current-context'], 'context', file).context ?? {};
  const cluster = pick(kc.clusters, ctx.cluster, 'cluster', file).cluster ?? {};
  const user = pick(kc.users, ctx.user, 'user', file).user ?? {};
  for (const unsupported of [...(o.exec ? [] : ['exec']), 'auth-provider', 'username']) {
    if (user[unsupported] !== undefined)
      throw new Error(
        `${file}: user.${unsupported} is not supported${unsupported === 'exec' ? ' by the node agent' : ''} (use a token, a client certificate${o.exec ? ' or an exec plugin' : ''})`,
      );
  }
  const exec = user.exec === undefined ? undefined : execCredentials(user.exec as ExecConfig, base, file);
  if (typeof cluster.server !== 'string') throw new Error(`${file}: the cluster has no server`);
  const ca = material(cluster['certificate-authority-data'], cluster['certificate-authority'], base);
  const cert = material(user['client-certificate-data'], user['client-certificate'], base);
  const key = material(user['client-key-data'], user['client-key'], base);
  const token = typeof user.token === 'string' ? user.token : undefined;
  const insecure = cluster['insecure-skip-tls-verify'] === true;
  return {
    server: cluster.server,
    async applyToHTTPSOptions(opts) {
      if (ca) opts.ca = ca;
      if (cert && key) Object.assign(opts, { cert, key });
      if (insecure) opts.rejectUnauthorized = false;
      if (token) opts.headers = { ...opts.headers, Authorization: `Bearer ${token}` };
      if (exec) {
        const c = await exec();
        if (c.cert && c.key) Object.assign(opts, { cert: c.cert, key: c.key });
        if (c.token) opts.headers = { ...opts.headers, Authorization: `Bearer ${c.token}` };
      }
    },
  };
}
