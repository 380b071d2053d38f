// tpfleet operator. Runs against any kubeconfig (--kubeconfig, else $KUBECONFIG/~/.kube/config,
// else in-cluster). Flags are parsed once here; nothing else reads the environment.
import { homedir, hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { defaultKubeconfig, inClusterCredentials, kubeconfigCredentials } from '../kube/credentials.ts';
import { pino } from 'pino';
import { boundedMs, type DurationField } from '../api/fields.ts';
import { Controller } from './controller.ts';
import { KubeClient, type WriteVerb } from '../kube/client.ts';
import { LeaderElector } from './leader.ts';
import { OperatorMetrics } from './metrics.ts';
import { FIELD_MANAGER } from './render/names.ts';
import { startServer } from './server.ts';
import { errorMessage } from '../api/errors.ts';
import { imageRepositoryPrefixes, tenancy } from './tenancy.ts';
import { startAdmission, type RunningAdmission } from './webhook/run.ts';

const USAGE = `usage: tpfleet-operator [--kubeconfig PATH] [--image IMAGE] [--bind HOST:PORT]
  [--cleanup-timeout 5m] [--resync 10m] [--workers 2] [--log-level info]
  [--leader-elect true|false] [--lease-namespace NS] [--lease-name NAME] [--lease-duration 15s] [--identity ID]
  tenancy (docs/adr/0016): [--namespaces tpfleet-fleet,...|*] [--allowed-images PREFIX,...] [--allow-control-plane false]
  admission webhook: [--webhook true|false] [--webhook-bind 0.0.0.0:9443] [--webhook-config NAME]
  [--webhook-secret NS/NAME] [--webhook-hosts DNS,...] [--webhook-cert-validity 720h] [--webhook-ca-validity 8760h]
  [--webhook-cert-check 1m]
  fault injection (tests): [--crash-after-writes N] SIGKILLs itself instead of sending write N+1`;

function fail(message: string): never {
  process.stderr.write(`tpfleet-operator: ${message}\n${USAGE}\n`);
  process.exit(2);
}

/** A duration flag in milliseconds, within its bounds (api/fields.ts DURATION_BOUNDS). */
function ms(flag: string, field: DurationField, text: string): number {
  const v = boundedMs(field, text);
  if (typeof v === 'string') fail(`--${flag}: ${v}`);
  return v;
}

const OPTIONS = {
  kubeconfig: { type: 'string' },
  image: { type: 'string', default: 'ghcr.io/tpfleet/tpfleet-node:0.1.0' },
  bind: { type: 'string', default: '0.0.0.0:8080' },
  'cleanup-timeout': { type: 'string', default: '5m' },
  resync: { type: 'string', default: '10m' },
  workers: { type: 'string', default: '2' },
  'log-level': { type: 'string', default: 'info' },
  'leader-elect': { type: 'string', default: 'true' },
  'lease-namespace': { type: 'string', default: 'tpfleet-system' },
  'lease-name': { type: 'string', default: 'tpfleet-operator' },
  'lease-duration': { type: 'string', default: '15s' },
  identity: { type: 'string', default: `${hostname()}-${process.pid}` },
  namespaces: { type: 'string', default: 'tpfleet-fleet' },
  'allowed-images': { type: 'string' },
  'allow-control-plane': { type: 'string', default: 'false' },
  webhook: { type: 'string', default: 'true' },
  'webhook-bind': { type: 'string', default: '0.0.0.0:9443' },
  'webhook-config': { type: 'string', default: 'tpfleet-operator' },
  'webhook-secret': { type: 'string', default: 'tpfleet-system/tpfleet-operator-webhook-tls' },
  'webhook-hosts': { type: 'string', default: 'tpfleet-operator-webhook.tpfleet-system.svc' },
  'webhook-cert-validity': { type: 'string', default: '720h' },
  'webhook-ca-validity': { type: 'string', default: '8760h' },
  'webhook-cert-check': { type: 'string', default: '1m' },
  'crash-after-writes': { type: 'string' },
  help: { type: 'boolean', default: false },
} as const;

function parseFlags() {
  try {
    return parseArgs({ options: OPTIONS, strict: true });
  } catch (e) {
    fail(errorMessage(e));
  }
}

function parse() {
  const { values } = parseFlags();
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const m = /^(.*):(\d+)$/.exec(values.bind);
  if (!m) fail(`--bind: "${values.bind}" is not HOST:PORT`);
  const wb = /^(.*):(\d+)$/.exec(values['webhook-bind']);
  if (!wb) fail(`--webhook-bind: "${values['webhook-bind']}" is not HOST:PORT`);
  const secret = /^([a-z0-9-]{1,63})\/([a-z0-9.-]{1,253})$/.exec(values['webhook-secret']);
  if (!secret) fail(`--webhook-secret: "${values['webhook-secret']}" is not NAMESPACE/NAME`);
  for (const f of ['leader-elect', 'allow-control-plane', 'webhook'] as const)
    if (!['true', 'false'].includes(values[f])) fail(`--${f}: must be true or false`);
  const list = (text: string) =>
    text
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
  const workers = Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 32) fail('--workers: must be an integer 1-32');
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace'].includes(values['log-level']))
    fail('--log-level: unknown level');
  const crash = values['crash-after-writes'];
  if (crash !== undefined && !/^\d+$/.test(crash)) fail('--crash-after-writes: must be a non-negative integer');
  const namespaces = list(values.namespaces);
  if (!namespaces.length) fail('--namespaces: name at least one namespace, or * for every namespace');
  return {
    tenancy: tenancy({
      namespaces,
      allowedImages: values['allowed-images'] ? list(values['allowed-images']) : imageRepositoryPrefixes(values.image),
      allowControlPlane: values['allow-control-plane'] === 'true',
    }),
    admission:
      values.webhook === 'true'
        ? {
            host: wb[1] ?? '0.0.0.0',
            port: Number(wb[2]),
            webhookConfig: values['webhook-config'] || undefined,
            secret: { namespace: secret[1] ?? '', name: secret[2] ?? '' },
            hosts: list(values['webhook-hosts']),
            validityMs: ms('webhook-cert-validity', 'certValidity', values['webhook-cert-validity']),
            caValidityMs: ms('webhook-ca-validity', 'caValidity', values['webhook-ca-validity']),
            checkMs: ms('webhook-cert-check', 'certCheck', values['webhook-cert-check']),
          }
        : undefined,
    crashAfterWrites: crash === undefined ? undefined : Number(crash),
    kubeconfig: values.kubeconfig,
    image: values.image,
    host: m[1] ?? '0.0.0.0',
    port: Number(m[2]),
    cleanupTimeoutMs: ms('cleanup-timeout', 'cleanupTimeout', values['cleanup-timeout']),
    resyncMs: ms('resync', 'resync', values.resync),
    workers,
    logLevel: values['log-level'],
    leaderElect: values['leader-elect'] === 'true',
    lease: {
      namespace: values['lease-namespace'],
      name: values['lease-name'],
      identity: values.identity,
      leaseDurationSec: Math.max(1, Math.round(ms('lease-duration', 'leaseDuration', values['lease-duration']) / 1000)),
    },
  };
}

async function main(): Promise<void> {
  const flags = parse();
  const log = pino({ level: flags.logLevel, base: { component: 'operator' } });
  // The lean credentials (kube/credentials.ts), not client-node's KubeConfig: importing that was
  // 18 MiB of the operator's RSS (docs/benchmarks.md, "Operator at fleet scale").
  const file = flags.kubeconfig ?? defaultKubeconfig(process.env.KUBECONFIG, homedir());
  const kc = file
    ? kubeconfigCredentials(file, { exec: true })
    : inClusterCredentials({ host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT });
  const metrics = new OperatorMetrics();
  let writes = 0;
  const counted = (verb: WriteVerb) => {
    // A crash at an exact point of a reconcile, for the restart tests: no cleanup, no lease release.
    if (flags.crashAfterWrites !== undefined && ++writes > flags.crashAfterWrites) process.kill(process.pid, 'SIGKILL');
    metrics.write(verb);
  };
  // Lease and admission (every replica serves it) write through this one...
  const client = new KubeClient(kc, FIELD_MANAGER, counted);
  let elector: LeaderElector | undefined;
  // ...reconciles through this one, fenced: past the lease's renew deadline (leader.ts) no write
  // leaves this process, even one already decided by a reconcile that was paused.
  const fenced = new KubeClient(kc, FIELD_MANAGER, (verb) => {
    if (elector && !elector.holds()) throw new Error(`not leading (lease not renewed in time): ${verb} refused`);
    counted(verb);
  });
  const controller = new Controller({
    client: fenced,
    log,
    metrics,
    workers: flags.workers,
    resyncMs: flags.resyncMs,
    settings: { defaultImage: flags.image, cleanupTimeoutMs: flags.cleanupTimeoutMs, tenancy: flags.tenancy },
  });
  let admission: RunningAdmission | undefined;
  const server = await startServer(flags.host, flags.port, metrics.registry, {
    healthy: () => !controller.queue.isShutDown,
    // Ready only once admission answers too (when it is on): with failurePolicy Fail, a replica that
    // is Ready behind the webhook's Service but not yet listening refuses every `kubectl apply`.
    ready: () => controller.synced && (!flags.admission || admission !== undefined),
  });
  const address = server.address();
  log.info({ server: client.server, listen: typeof address === 'object' ? address?.port : address }, 'starting');
  elector = flags.leaderElect
    ? new LeaderElector(
        client,
        {
          ...flags.lease,
          onStartedLeading: () => {
            metrics.leader.set(1);
            controller.startWorkers();
          },
          // Half-done work must not continue beside the new leader: exit and let the pod restart.
          onStoppedLeading: () => {
            metrics.leader.set(0);
            process.exit(1);
          },
        },
        log,
      )
    : undefined;
  let stopping = false;
  const shutdown = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'shutting down');
    await controller.stop();
    await admission?.stop();
    await elector?.stop();
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  await controller.startCaches();
  log.info('caches synced');
  // Every replica serves admission, from its caches: once they are synced, before any lease.
  if (flags.admission) admission = await startAdmission(client, flags.admission, () => controller.view(), log);
  if (elector) elector.start();
  else controller.startWorkers();
}

main().catch((e: Error) => {
  process.stderr.write(`tpfleet-operator: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
