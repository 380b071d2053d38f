// tpfleet node agent CLI: plan | apply | cleanup [--wait-port P] | watch  --config FILE [--dry-run] [--state-dir DIR]
// Exit codes: 0 ok, 1 apply/cleanup failed (rolled back), 2 invalid config or usage, 3 preflight refused.
// The environment is read once, here: PATH, and POD_NAME/POD_NAMESPACE (downward API) which let
// `watch` publish the tuning condition on its own pod.
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { KubeClient } from '../kube/client.ts';
import { inClusterCredentials, kubeconfigCredentials } from '../kube/credentials.ts';
import { NODE_STATE_DIR } from '../api/defaults.ts';
import { ConfigError, loadNodeConfig } from '../api/load.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { apply, cleanup, PreflightError, writeGate, type ExecOptions } from './executor.ts';
import { detectHost } from './facts.ts';
import { drainBeforeCleanup } from './leave.ts';
import { formatPlan, plan } from './plan.ts';
import { readState } from './state.ts';
import type { Backend, GateMode, HostFacts } from './types.ts';
import { AGENT_FIELD_MANAGER, podRefFromEnv, TuningPublisher, tuningTick, type PodRef } from './tuning-publish.ts';
import { policyTick, scrapeMetrics } from './policy-publish.ts';
import { trafficTick } from './traffic-publish.ts';
import { TRAFFIC_CONDITION_TYPE, TRAFFIC_PUBLISH_MS, type NodeTraffic } from '../api/traffic-condition.ts';
import { POLICY_CONDITION_TYPE, POLICY_PUBLISH_MIN_MS } from '../api/policy-condition.ts';
import type { TuningCondition } from '../api/tuning-condition.ts';
import { tuneNode, untuneNode } from './tuning-step.ts';
import { watch } from './watchdog.ts';
import { errorMessage } from '../api/errors.ts';

const USAGE = `usage: main.ts <plan|apply|cleanup|watch> --config FILE [--dry-run] [--state-dir DIR]
       [--backend nftables|iptables-nft|iptables-legacy]   (overrides detection, e.g. to force a variant)
       [--kubeconfig PATH]   (watch: API credentials for the tuning condition; default in-cluster,
                              used only when POD_NAME and POD_NAMESPACE are set)
       [--status-interval 30]   (watch: seconds between tuning status checks)
       [--wait-port PORT] [--wait-timeout 60]   (cleanup on a leaving node: set the drain gate, then
                              wait up to that many seconds for the proxy's metrics port to close)`;

class UsageError extends Error {}

interface Cli {
  cmd: string;
  config?: string;
  dryRun: boolean;
  stateDir: string;
  backend?: Backend;
  kubeconfig?: string;
  statusIntervalMs: number;
  /** cleanup: drain first (daemonset/leave.ts) while something listens on this port. */
  waitPort?: number;
  waitTimeoutMs: number;
}

/** What main() takes from the environment, parsed once at start-up. */
export interface AgentEnv {
  path: string;
  pod?: PodRef;
  /** KUBERNETES_SERVICE_HOST/PORT: where the API server is from inside the cluster. */
  api: { host?: string; port?: string };
}

export function parseEnv(env: Record<string, string | undefined>): AgentEnv {
  try {
    return {
      path: env.PATH ?? '',
      pod: podRefFromEnv(env),
      api: { host: env.KUBERNETES_SERVICE_HOST, port: env.KUBERNETES_SERVICE_PORT },
    };
  } catch (e) {
    throw new UsageError(errorMessage(e), { cause: e });
  }
}

function parseCli(argv: string[]): Cli {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      'dry-run': { type: 'boolean', default: false },
      'state-dir': { type: 'string' },
      backend: { type: 'string' },
      kubeconfig: { type: 'string' },
      'status-interval': { type: 'string', default: '30' },
      'wait-port': { type: 'string' },
      'wait-timeout': { type: 'string', default: '60' },
    },
  });
  const cmd = positionals[0];
  if (!cmd || positionals.length > 1 || !['plan', 'apply', 'cleanup', 'watch'].includes(cmd))
    throw new UsageError(USAGE);
  if (cmd !== 'cleanup' && !values.config) throw new UsageError(`--config is required for ${cmd}\n${USAGE}`);
  const b = values.backend;
  if (b !== undefined && !['nftables', 'iptables-nft', 'iptables-legacy'].includes(b))
    throw new UsageError(`--backend: unknown backend ${b}`);
  const interval = Number(values['status-interval']);
  if (!Number.isInteger(interval) || interval < 1 || interval > 3600)
    throw new UsageError('--status-interval: must be an integer number of seconds, 1-3600');
  const waitPort = values['wait-port'] === undefined ? undefined : Number(values['wait-port']);
  if (
    waitPort !== undefined &&
    (cmd !== 'cleanup' || !Number.isInteger(waitPort) || waitPort < 1 || waitPort > 65535)
  ) {
    throw new UsageError('--wait-port: a port number 1-65535, with cleanup only');
  }
  const waitTimeout = Number(values['wait-timeout']);
  if (!Number.isInteger(waitTimeout) || waitTimeout < 0 || waitTimeout > 3600)
    throw new UsageError('--wait-timeout: must be an integer number of seconds, 0-3600');
  return {
    waitPort,
    waitTimeoutMs: waitTimeout * 1000,
    cmd,
    config: values.config,
    dryRun: values['dry-run'] ?? false,
    stateDir: values['state-dir'] ?? NODE_STATE_DIR,
    backend: b as Backend | undefined,
    kubeconfig: values.kubeconfig,
    statusIntervalMs: interval * 1000,
  };
}

async function hostFacts(cli: Cli, stateDir: string): Promise<HostFacts> {
  if (cli.backend)
    return {
      detectedBackend: cli.backend,
      iptablesVariant: cli.backend === 'iptables-legacy' ? 'iptables-legacy' : 'iptables-nft',
    };
  const facts = await detectHost();
  // Once installed, `auto` sticks to the installed backend (our own rules would skew detection).
  const installed = readState(stateDir)?.backend;
  if (installed) facts.detectedBackend = installed;
  if (installed && installed !== 'nftables') facts.iptablesVariant = installed;
  return facts;
}

/** The publishers of the tuning and policy conditions, when the pod knows who it is (downward API). */
function publishers(
  cli: Cli,
  env: AgentEnv,
): { tuning: TuningPublisher; policy: TuningPublisher; traffic: TuningPublisher } | undefined {
  if (!env.pod) return undefined;
  // The lean credentials, not client-node's KubeConfig: this process runs on every intercepting node
  // for as long as it intercepts, and client-node alone costs it about 50 MB (docs/benchmarks.md).
  const creds = cli.kubeconfig ? kubeconfigCredentials(cli.kubeconfig) : inClusterCredentials(env.api);
  const client = new KubeClient(creds, AGENT_FIELD_MANAGER);
  return {
    tuning: new TuningPublisher(client, env.pod),
    policy: new TuningPublisher(client, env.pod, undefined, POLICY_CONDITION_TYPE),
    traffic: new TuningPublisher(client, env.pod, undefined, TRAFFIC_CONDITION_TYPE),
  };
}

async function runWatch(config: NodeConfig, cli: Cli, env: AgentEnv, log: Logger): Promise<void> {
  if (!readState(cli.stateDir)) throw new Error(`no state in ${cli.stateDir}: run apply before watch`);
  const ac = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => ac.abort());
  // The state is re-read on every write: a re-apply may have switched the backend meanwhile.
  const gate = async (mode: GateMode) => {
    const state = readState(cli.stateDir);
    if (!state) throw new Error(`no state in ${cli.stateDir}: nothing installed to gate`);
    await writeGate(state, mode);
  };
  // Tuning drift is only reported (never fought): at start and every interval, as a log line and,
  // with API credentials, as the pod condition the operator summarises. Ticks never overlap.
  const pub = publishers(cli, env);
  let last: TuningCondition | undefined,
    busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      last = await tuningTick({ stateDir: cli.stateDir }, pub?.tuning, log, last);
    } finally {
      busy = false;
    }
  };
  void tick();
  const drift = setInterval(() => void tick(), cli.statusIntervalMs);
  // Policy decision totals of this node's sidecar (policy-publish.ts), once a minute when changed.
  const decisions = pub
    ? setInterval(
        () => void policyTick(() => scrapeMetrics(config.proxy.metricsPort), pub.policy, log),
        POLICY_PUBLISH_MIN_MS,
      )
    : undefined;
  // Per-node traffic (traffic-publish.ts): looked at every 30 s, published on a significant change.
  let traffic: NodeTraffic | undefined,
    trafficBusy = false;
  const trafficTimer = pub
    ? setInterval(async () => {
        if (trafficBusy) return;
        trafficBusy = true;
        const backend = readState(cli.stateDir)?.backend;
        traffic = await trafficTick(() => scrapeMetrics(config.proxy.metricsPort), backend, pub.traffic, traffic, log);
        trafficBusy = false;
      }, TRAFFIC_PUBLISH_MS)
    : undefined;
  try {
    await watch({
      listenPort: config.proxy.listenPort,
      metricsPort: config.proxy.metricsPort,
      policy: config.interception.failurePolicy,
      writeGate: gate,
      log,
      signal: ac.signal,
    });
  } finally {
    clearInterval(drift);
    clearInterval(decisions);
    clearInterval(trafficTimer);
  }
}

export async function main(argv: string[], environ: Record<string, string | undefined> = process.env): Promise<number> {
  const log = pino({ name: 'tpfleet-agent', level: 'info' }, pino.destination(2));
  const out = (t: string) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`);
  try {
    const cli = parseCli(argv);
    const env = parseEnv(environ);
    const opts: ExecOptions = { stateDir: cli.stateDir, dryRun: cli.dryRun, pathVar: env.path, out, log };
    if (cli.cmd === 'cleanup') {
      if (cli.waitPort !== undefined)
        await drainBeforeCleanup({
          stateDir: cli.stateDir,
          port: cli.waitPort,
          timeoutMs: cli.waitTimeoutMs,
          dryRun: cli.dryRun,
          log,
          out,
        });
      if (!(await cleanup(opts)) && !cli.dryRun) out('nothing installed (no state file): nothing to clean up');
      untuneNode({ stateDir: cli.stateDir, dryRun: cli.dryRun }, log);
      return 0;
    }
    const config = loadNodeConfig(cli.config!);
    if (cli.cmd === 'watch') {
      await runWatch(config, cli, env, log);
      return 0;
    }
    const p = plan(config, await hostFacts(cli, cli.stateDir));
    if (cli.cmd === 'plan') {
      out(formatPlan(p));
      return 0;
    }
    await apply(config, p, opts);
    if (!cli.dryRun) {
      // The rule set and routing now in force (read back and verified), on stdout: the container's
      // log is how `kubectl tpfleet rules NODE` shows them (plugin/rules.ts), with only pods/log get.
      out(formatPlan(p));
      out(`applied (${p.backend}) and verified`);
    }
    const tuning = tuneNode(config, { stateDir: cli.stateDir, dryRun: cli.dryRun }, log);
    out(tuning ? `tuning: ${tuning.reason}: ${tuning.message}` : 'tuning: none configured');
    return 0;
  } catch (e) {
    const msg = errorMessage(e);
    process.stderr.write(`tpfleet-agent: ${msg}\n`);
    if (
      e instanceof UsageError ||
      e instanceof ConfigError ||
      (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    )
      return 2;
    if (e instanceof PreflightError) return 3;
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
