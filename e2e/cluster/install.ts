// Installs the product the way users do: `helm install` of charts/tpfleet with the images the
// suite built. Where pods do not really run (kwok nodes), the operator Deployment the chart made is
// run as a process instead, with the Deployment's own args and the chart's ServiceAccount token,
// so the chart's flags and RBAC are what is exercised, not an admin shortcut.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { freePort } from '../testenv/testenv.ts';
import { helm, kubectl, kubectlJson, waitFor } from './kube.ts';
import type { BuiltImage, Cluster } from './provider.ts';

const repoRoot = join(import.meta.dirname, '..', '..');
export const CHART = join(repoRoot, 'charts', 'tpfleet');
export const RELEASE = 'tpfleet';
export const NAMESPACE = 'tpfleet-system';

export interface Installed {
  namespace: string;
  /** Where TransparentProxies (and so their DaemonSets) live: the chart's privileged namespace. */
  fleetNamespace: string;
  nodeImage: string;
  /** The operator's log (process mode) for failure messages. */
  operatorLog?: string;
  uninstall(): Promise<void>;
}

function split(ref: string): { repository: string; tag: string } {
  const i = ref.lastIndexOf(':');
  return { repository: ref.slice(0, i), tag: ref.slice(i + 1) };
}

/** The chart values this suite installs with: the freshly built images, never pulled. */
export function suiteValues(images: { operator: BuiltImage; node: BuiltImage }): Record<string, unknown> {
  const op = split(images.operator.ref),
    node = split(images.node.ref);
  return {
    operator: { image: { ...op, pullPolicy: 'Never' }, cleanupTimeout: '2m', logLevel: 'debug' },
    // The DaemonSet's pull policy is the TransparentProxy's (spec.proxy.imagePullPolicy, default
    // IfNotPresent): a loaded image with a non-latest tag is never pulled.
    node: { image: node },
  };
}

/** `over` merged into `base`: objects key by key, anything else (arrays included) replaced. */
export function mergeValues(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isObj(b) && isObj(v) ? mergeValues(b, v) : v;
  }
  return out;
}

/** `values`: chart values over suiteValues(), e.g. a short operator.cleanupTimeout for one test file. */
export async function installChart(
  c: Cluster,
  images: { operator: BuiltImage; node: BuiltImage },
  values: Record<string, unknown> = {},
): Promise<Installed> {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-install-'));
  const valuesFile = join(dir, 'values.yaml');
  writeFileSync(valuesFile, stringify(mergeValues(suiteValues(images), values)));
  // The documented user path (docs/helm.md): the release namespace enforces `restricted`, which
  // --create-namespace cannot label, so it is made first; the operator pod must pass it.
  await kubectl(c, ['create', 'namespace', NAMESPACE]);
  await kubectl(c, ['label', 'namespace', NAMESPACE, 'pod-security.kubernetes.io/enforce=restricted']);
  await helm(c, [
    'install',
    RELEASE,
    CHART,
    '--namespace',
    NAMESPACE,
    '--values',
    valuesFile,
    '--wait',
    '--timeout',
    '3m',
  ]);
  const live = parse(
    await helm(c, ['get', 'values', RELEASE, '--namespace', NAMESPACE, '--all', '--output', 'yaml']),
  ) as { fleetNamespace?: { name?: string } };
  const fleetNamespace = live.fleetNamespace?.name ?? 'tpfleet-fleet';
  let proc: ChildProcess | undefined;
  let operatorLog: string | undefined;
  if (!c.capabilities.runsPods) ({ proc, log: operatorLog } = await runOperatorAsProcess(c, dir));
  await admissionAnswers(c, fleetNamespace);
  return {
    namespace: NAMESPACE,
    fleetNamespace,
    nodeImage: images.node.ref,
    operatorLog,
    async uninstall() {
      if (proc && proc.exitCode === null) {
        const exited = new Promise((r) => proc!.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      await helm(c, ['uninstall', RELEASE, '--namespace', NAMESPACE, '--wait', '--timeout', '2m']);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * `helm install --wait` returns once the operator is Ready, which includes its webhook serving;
 * the Service's endpoints still reach kube-proxy (or the registration's URL the process) a moment
 * later, and until then the API server gets "connection refused" (failurePolicy Fail: the apply is
 * refused). A user's first apply can meet the same second; the suite waits for a server-side
 * dry-run to be admitted, so a webhook that never answers still fails here, naming the reason.
 */
export async function admissionAnswers(c: Cluster, namespace: string): Promise<void> {
  const probe = JSON.stringify({
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'admission-probe', namespace },
    spec: { interception: { ports: [{ port: 80 }] } },
  });
  await waitFor(
    'the admission webhook to admit a server-side dry run',
    async () => {
      await kubectl(c, ['create', '--dry-run=server', '-f', '-'], probe);
      return true;
    },
    60_000,
  );
}

interface Deployment {
  spec: { template: { spec: { serviceAccountName: string; containers: { name: string; args?: string[] }[] } } };
}

/** Runs operator/main.ts with the chart Deployment's args, as the chart's ServiceAccount. */
async function runOperatorAsProcess(c: Cluster, dir: string): Promise<{ proc: ChildProcess; log: string }> {
  const deployments = await kubectlJson<{ items: (Deployment & { metadata: { name: string } })[] }>(c, [
    'get',
    'deployments',
    '-n',
    NAMESPACE,
    '-l',
    `app.kubernetes.io/instance=${RELEASE}`,
  ]);
  const d = deployments.items[0];
  if (!d) throw new Error(`helm install made no operator Deployment in ${NAMESPACE}`);
  const pod = d.spec.template.spec;
  const container = pod.containers.find((x) => x.name === 'operator') ?? pod.containers[0]!;
  const token = (
    await kubectl(c, ['create', 'token', pod.serviceAccountName, '-n', NAMESPACE, '--duration', '2h'])
  ).trim();
  // Same cluster and CA as the admin kubeconfig; the credentials are the ServiceAccount's.
  const admin = parse(readFileSync(c.kubeconfigPath, 'utf8')) as { clusters: { cluster: Record<string, string> }[] };
  const kubeconfig = join(dir, 'operator.kubeconfig');
  writeFileSync(
    kubeconfig,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'operator',
      clusters: [{ name: 'c', cluster: admin.clusters[0]!.cluster }],
      users: [{ name: 'operator', user: { token } }],
      contexts: [{ name: 'operator', context: { cluster: 'c', user: 'operator', namespace: NAMESPACE } }],
    }),
    { mode: 0o600 },
  );
  // The in-cluster bind addresses would collide on a shared host: --bind and --webhook-bind are
  // replaced, and with no pod behind the webhook's Service the registration points at the process.
  const port = await freePort(),
    webhookPort = await freePort();
  const args = (container.args ?? []).filter((a) => !/^--(bind|webhook-bind|webhook-hosts)=/.test(a));
  args.push(`--webhook-bind=127.0.0.1:${webhookPort}`, '--webhook-hosts=127.0.0.1');
  const webhookConfig = args.find((a) => a.startsWith('--webhook-config='))?.slice('--webhook-config='.length);
  if (webhookConfig)
    await kubectl(c, [
      'patch',
      'validatingwebhookconfiguration',
      webhookConfig,
      '--type=json',
      `-p=${JSON.stringify([
        { op: 'remove', path: '/webhooks/0/clientConfig/service' },
        {
          op: 'add',
          path: '/webhooks/0/clientConfig/url',
          value: `https://127.0.0.1:${webhookPort}/validate-transparentproxy`,
        },
      ])}`,
    ]);
  const log = join(dir, 'operator.log');
  const out = openSync(log, 'a');
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(repoRoot, 'operator', 'main.ts'),
      ...args,
      '--bind',
      `127.0.0.1:${port}`,
      '--kubeconfig',
      kubeconfig,
    ],
    { cwd: repoRoot, stdio: ['ignore', out, out] },
  );
  process.once('exit', () => proc.kill('SIGKILL'));
  await waitFor(
    'the operator process to become ready',
    async () => {
      if (proc.exitCode !== null)
        throw new Error(`operator exited ${proc.exitCode}: ${readFileSync(log, 'utf8').slice(-2000)}`);
      const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
      return r?.ok ? true : undefined;
    },
    60_000,
  );
  return { proc, log };
}
