// tpfleet node agent CLI: plan | apply | cleanup [--wait-port P] | watch | selftest | janitor  --config FILE [--dry-run] [--state-dir DIR]
// Exit codes: 0 ok, 1 apply/cleanup failed (rolled back), 2 invalid config or usage, 3 preflight refused.
// The environment is read once, here: PATH, and POD_NAME/POD_NAMESPACE (downward API) which let
// `watch` publish the tuning condition on its own pod.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { KubeClient } from '../kube/client.ts';
import { inClusterCredentials, kubeconfigCredentials } from '../kube/credentials.ts';
import { NODE_STATE_DIR } from '../api/defaults.ts';
import { MAX_LEAVE_WAIT_S } from '../api/fields.ts';
import { ConfigError, loadNodeConfig, parseNodeConfigText } from '../api/load.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { apply, PreflightError, writeGate, type ExecOptions } from './executor.ts';
import { cleanupOwned, markedOwners } from './recover.ts';
import { OWNER_KEY } from './owner.ts';
import { withStateLock } from './lock.ts';
import { detectHost } from './facts.ts';
import { drainBeforeCleanup } from './leave.ts';
import { janitorPass, ownerKey } from './janitor.ts';
import { GROUP, PLURAL, VERSION } from '../api/transparentproxy.ts';
import { setTimeout as sleep } from 'node:timers/promises';
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
import { DATAPATH_CONDITION_TYPE } from '../api/selftest.ts';
import { runOk } from './run.ts';
import { runSelfTests, selfTest, type ProbeLinkOptions } from './selftest.ts';
import { errorMessage } from '../api/errors.ts';
import { CONFIG_CONDITION_TYPE } from '../api/reload.ts';
import { readLive, writeLive } from './reload.ts';
import { applyNode, reloadOnce, startReload, type NodeOptions, type ReloadTarget } from './reload-run.ts';

const USAGE = `usage: main.ts <plan|apply|cleanup|watch|reload|selftest|janitor> --config FILE [--dry-run] [--state-dir DIR]
       [--backend nftables|iptables-nft|iptables-legacy]   (overrides detection, e.g. to force a variant)
       [--kubeconfig PATH]   (watch: API credentials for the tuning condition; default in-cluster,
                              used only when POD_NAME and POD_NAMESPACE are set)
       [--status-interval 30]   (watch: seconds between tuning status checks; janitor: between passes)
       [--selftest-interval 30]   (watch: seconds between datapath self-tests once one passed, ADR 0021)
       selftest --config FILE   (one datapath self-test: prints the condition, exit 1 when it fails)
       [--owner NAMESPACE.NAME]   (apply/reload/watch: written as the owner marker into the rules;
                              cleanup: with no state left, removes what that owner's markers name)
       [--once]   (janitor: one pass, then exit; --state-dir is the state root, default /run/tpfleet)
       [--state-copy-dir DIR]   (apply/cleanup: keep a copy of the state there, used when state.json
                              is lost; janitor: the root of those copies)
       [--live-dir DIR]   (apply: write the applied config there for the sidecar; watch: the config in
                              force, reloaded in place when --configmap changes)
       [--configmap NAME]   (watch: the fleet's ConfigMap in POD_NAMESPACE, watched through the API)
       [--sysctl-root DIR]   (watch/reload: DIR/proc/sys/net is the writable host /proc/sys/net that
                              in-place tuning writes; default /)
       reload --config FILE --live-dir DIR   (what watch does for one new document: in place, or refused
                              with the last good config left in force; exit 1 when refused)
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
  /** watch: between datapath self-tests once one passed. */
  selftestIntervalMs: number;
  /** cleanup: drain first (daemonset/leave.ts) while something listens on this port. */
  waitPort?: number;
  waitTimeoutMs: number;
  /** janitor: one pass only. */
  once: boolean;
  /** A copy of the state outside /run (janitor: the root of the copies). */
  stateCopyDir?: string;
  liveDir?: string;
  configMap?: string;
  /** watch/reload: the root of the writable /proc/sys/net mount for in-place tuning (ADR 0020). */
  sysctlRoot?: string;
  /** The TransparentProxy as `<namespace>.<name>`: the owner marker (owner.ts). */
  owner?: string;
}

/** What main() takes from the environment, parsed once at start-up. */
export interface AgentEnv {
  path: string;
  pod?: PodRef;
  /** KUBERNETES_SERVICE_HOST/PORT: where the API server is from inside the cluster. */
  api: { host?: string; port?: string };
  /** POD_HASH (downward API, the pod template's tpfleet.io/pod-hash): changes with another one roll this pod. */
  podHash?: string;
  /** TPFLEET_TEST_LOCK_DELAY_MS (tests only, 0-10000): apply/cleanup wait this long holding the state lock. */
  testLockDelayMs?: number;
}

function testDelay(text: string | undefined): number | undefined {
  if (!text) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 10_000) throw new Error('TPFLEET_TEST_LOCK_DELAY_MS: 0-10000');
  return n;
}

export function parseEnv(env: Record<string, string | undefined>): AgentEnv {
  try {
    return {
      path: env.PATH ?? '',
      pod: podRefFromEnv(env),
      api: { host: env.KUBERNETES_SERVICE_HOST, port: env.KUBERNETES_SERVICE_PORT },
      podHash: env.POD_HASH || undefined,
      testLockDelayMs: testDelay(env.TPFLEET_TEST_LOCK_DELAY_MS),
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
      'selftest-interval': { type: 'string', default: '30' },
      'wait-port': { type: 'string' },
      'wait-timeout': { type: 'string', default: '60' },
      once: { type: 'boolean', default: false },
      'state-copy-dir': { type: 'string' },
      'live-dir': { type: 'string' },
      'sysctl-root': { type: 'string' },
      configmap: { type: 'string' },
      owner: { type: 'string' },
    },
  });
  const cmd = positionals[0];
  if (
    !cmd ||
    positionals.length > 1 ||
    !['plan', 'apply', 'cleanup', 'watch', 'reload', 'selftest', 'janitor'].includes(cmd)
  )
    throw new UsageError(USAGE);
  if (values.once && cmd !== 'janitor') throw new UsageError('--once: with janitor only');
  if (cmd !== 'cleanup' && cmd !== 'janitor' && !values.config)
    throw new UsageError(`--config is required for ${cmd}\n${USAGE}`);
  const b = values.backend;
  if (b !== undefined && !['nftables', 'iptables-nft', 'iptables-legacy'].includes(b))
    throw new UsageError(`--backend: unknown backend ${b}`);
  const interval = Number(values['status-interval']);
  if (!Number.isInteger(interval) || interval < 1 || interval > 3600)
    throw new UsageError('--status-interval: must be an integer number of seconds, 1-3600');
  const selftestInterval = Number(values['selftest-interval']);
  if (!Number.isInteger(selftestInterval) || selftestInterval < 1 || selftestInterval > 3600)
    throw new UsageError('--selftest-interval: must be an integer number of seconds, 1-3600');
  const waitPort = values['wait-port'] === undefined ? undefined : Number(values['wait-port']);
  if (
    waitPort !== undefined &&
    (cmd !== 'cleanup' || !Number.isInteger(waitPort) || waitPort < 1 || waitPort > 65535)
  ) {
    throw new UsageError('--wait-port: a port number 1-65535, with cleanup only');
  }
  const waitTimeout = Number(values['wait-timeout']);
  // The bound covers every leave pod the operator renders (api/fields.ts: the largest drain + margin).
  if (!Number.isInteger(waitTimeout) || waitTimeout < 0 || waitTimeout > MAX_LEAVE_WAIT_S)
    throw new UsageError(`--wait-timeout: must be an integer number of seconds, 0-${MAX_LEAVE_WAIT_S}`);
  if (values.owner !== undefined && !OWNER_KEY.test(values.owner))
    throw new UsageError('--owner: must be <namespace>.<name> of a TransparentProxy');
  if (cmd === 'reload' && !values['live-dir']) throw new UsageError('reload: --live-dir is required');
  if (values.configmap !== undefined && (cmd !== 'watch' || !values['live-dir']))
    throw new UsageError('--configmap: with watch and --live-dir only');
  return {
    once: values.once ?? false,
    stateCopyDir: values['state-copy-dir'],
    liveDir: values['live-dir'],
    sysctlRoot: values['sysctl-root'],
    configMap: values.configmap,
    owner: values.owner,
    waitPort,
    waitTimeoutMs: waitTimeout * 1000,
    cmd,
    config: values.config,
    dryRun: values['dry-run'] ?? false,
    stateDir: values['state-dir'] ?? NODE_STATE_DIR,
    backend: b as Backend | undefined,
    kubeconfig: values.kubeconfig,
    statusIntervalMs: interval * 1000,
    selftestIntervalMs: selftestInterval * 1000,
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

interface Publishers {
  client: KubeClient;
  tuning: TuningPublisher;
  policy: TuningPublisher;
  config: TuningPublisher;
  traffic: TuningPublisher;
  datapath: TuningPublisher;
}

/** The publishers of the tuning, policy, config and traffic conditions, when the pod knows who it is (downward API). */
function publishers(cli: Cli, env: AgentEnv): Publishers | undefined {
  if (!env.pod) return undefined;
  // The lean credentials, not client-node's KubeConfig: this process runs on every intercepting node
  // for as long as it intercepts, and client-node alone costs it about 50 MB (docs/benchmarks.md).
  const creds = cli.kubeconfig ? kubeconfigCredentials(cli.kubeconfig) : inClusterCredentials(env.api);
  const client = new KubeClient(creds, AGENT_FIELD_MANAGER);
  return {
    client,
    tuning: new TuningPublisher(client, env.pod),
    policy: new TuningPublisher(client, env.pod, undefined, POLICY_CONDITION_TYPE),
    config: new TuningPublisher(client, env.pod, undefined, CONFIG_CONDITION_TYPE),
    traffic: new TuningPublisher(client, env.pod, undefined, TRAFFIC_CONDITION_TYPE),
    datapath: new TuningPublisher(client, env.pod, undefined, DATAPATH_CONDITION_TYPE),
  };
}

const nodeOpts = (cli: Cli, env: AgentEnv): NodeOptions => ({
  stateDir: cli.stateDir,
  stateCopyDir: cli.stateCopyDir,
  pathVar: env.path,
  facts: () => hostFacts(cli, cli.stateDir),
  sysctlRoot: cli.sysctlRoot,
  owner: cli.owner,
});

/** The datapath self-test on this node (selftest.ts): the probe link only once a state records it. */
const probeOptions = (config: NodeConfig, cli: Cli, log: Logger): ProbeLinkOptions => ({
  families: config.interception.ipFamilies,
  sysctlRoot: cli.sysctlRoot ?? '/',
  mutate: async (argv) => {
    await runOk(argv);
  },
  dryRun: false,
  recorded: () => readState(cli.stateDir, cli.stateCopyDir)?.probeLink === true,
  lock: (fn) => withStateLock(cli.stateDir, log, fn),
});

/** What the reload loop needs; undefined without a live dir, a ConfigMap name or API credentials. */
function reloadTarget(cli: Cli, env: AgentEnv, pub: Publishers | undefined): ReloadTarget | undefined {
  if (!cli.liveDir || !cli.configMap || !pub || !env.pod) return undefined;
  return {
    liveDir: cli.liveDir,
    configMap: cli.configMap,
    podHash: env.podHash,
    client: pub.client,
    namespace: env.pod.namespace,
    publisher: pub.config,
  };
}

async function runWatch(config: NodeConfig, cli: Cli, env: AgentEnv, log: Logger): Promise<void> {
  if (!readState(cli.stateDir)) throw new Error(`no state in ${cli.stateDir}: run apply before watch`);
  const ac = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => ac.abort());
  // The state is re-read on every write: a re-apply may have switched the backend meanwhile. Gate
  // writes and reloads take turns (a reload's rule document recreates the gate chains empty).
  let turn = Promise.resolve(),
    mode: GateMode = 'pass';
  const locked = <T>(fn: () => Promise<T>): Promise<T> => {
    const r = turn.then(fn);
    turn = r.then(
      () => undefined,
      () => undefined,
    );
    return r;
  };
  const writeMode = async (m: GateMode) => {
    const state = readState(cli.stateDir);
    if (!state) throw new Error(`no state in ${cli.stateDir}: nothing installed to gate`);
    await writeGate(state, m);
    mode = m;
  };
  const gate = (m: GateMode) => locked(() => writeMode(m));
  // Tuning drift is only reported (never fought): at start and every interval, as a log line and,
  // with API credentials, as the pod condition the operator summarises. Ticks never overlap.
  const pub = publishers(cli, env);
  const reloading = startReload(reloadTarget(cli, env, pub), log, ac.signal, {
    apply: (c, changed) => locked(() => applyNode(c, nodeOpts(cli, env), log, changed)),
    reassertGate: () => (mode === 'pass' ? Promise.resolve() : writeMode(mode)),
  });
  // The pod's readiness gate (ADR 0021): a probe through the rules in force, at start and on an interval.
  let healthy: () => void = () => undefined;
  const started = new Promise<void>((r) => (healthy = r));
  const selftests = runSelfTests({
    ...probeOptions(config, cli, log),
    publish: pub ? (c) => pub.datapath.publish(c) : undefined,
    proxyDown: () => (mode === 'pass' ? undefined : `gate ${mode}`),
    started,
    log,
    signal: ac.signal,
    intervalMs: cli.selftestIntervalMs,
  });
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
      onHealth: (h) => h === 'healthy' && healthy(),
      log,
      signal: ac.signal,
    });
  } finally {
    clearInterval(drift);
    clearInterval(decisions);
    clearInterval(trafficTimer);
    ac.abort();
    await reloading;
    await selftests;
  }
}

/**
 * apply and cleanup hold the state directory lock (lock.ts) the janitor takes before it cleans an
 * owner, so a pass never removes what an apply in progress writes. Not in dry-run (changes nothing).
 */
async function stateLocked(cli: Cli, env: AgentEnv, log: Logger, fn: () => Promise<void>): Promise<void> {
  if (cli.dryRun) return fn();
  await withStateLock(cli.stateDir, log, async () => {
    if (env.testLockDelayMs) {
      log.info({ ms: env.testLockDelayMs }, 'test: holding the state directory lock before the work');
      await sleep(env.testLockDelayMs);
    }
    await fn();
  });
}

/** Removes exactly what the state in `stateDir` says we installed, and restores its tuning. */
async function cleanupDir(opts: ExecOptions, log: Logger): Promise<void> {
  await cleanupOwned(opts);
  untuneNode({ stateDir: opts.stateDir, dryRun: opts.dryRun }, log);
}

/** The node janitor (janitor.ts): a pass at start and every --status-interval, until SIGTERM. */
async function runJanitor(cli: Cli, env: AgentEnv, opts: ExecOptions, log: Logger): Promise<void> {
  const creds = cli.kubeconfig ? kubeconfigCredentials(cli.kubeconfig) : inClusterCredentials(env.api);
  const client = new KubeClient(creds, AGENT_FIELD_MANAGER);
  const pass = () =>
    janitorPass({
      root: cli.stateDir,
      copyRoot: cli.stateCopyDir,
      liveOwners: async () => {
        const list = await client.list(`/apis/${GROUP}/${VERSION}/${PLURAL}`);
        return new Set(list.items.map((o) => ownerKey(o.metadata.namespace ?? '', o.metadata.name)));
      },
      markedOwners,
      lock: (dir, fn) => withStateLock(dir, log, fn),
      clean: (stateDir, stateCopyDir, owner) => cleanupDir({ ...opts, stateDir, stateCopyDir, owner }, log),
      log,
    });
  const cleaned = await pass();
  if (cli.once) {
    opts.out(cleaned.length ? `janitor: cleaned ${cleaned.join(', ')}` : 'janitor: nothing to clean');
    return;
  }
  const ac = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => ac.abort());
  while (!ac.signal.aborted) {
    await sleep(cli.statusIntervalMs, undefined, { signal: ac.signal }).catch(() => undefined);
    if (!ac.signal.aborted) await pass();
  }
}

export async function main(argv: string[], environ: Record<string, string | undefined> = process.env): Promise<number> {
  const log = pino({ name: 'tpfleet-agent', level: 'info' }, pino.destination(2));
  const out = (t: string) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`);
  try {
    const cli = parseCli(argv);
    const env = parseEnv(environ);
    const opts: ExecOptions = {
      stateDir: cli.stateDir,
      stateCopyDir: cli.cmd === 'janitor' ? undefined : cli.stateCopyDir,
      dryRun: cli.dryRun,
      pathVar: env.path,
      out,
      log,
      owner: cli.owner,
    };
    if (cli.cmd === 'janitor') {
      await runJanitor(cli, env, opts, log);
      return 0;
    }
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
      // The drain above runs unlocked (it may take the drain timeout); the removal is locked.
      await stateLocked(cli, env, log, async () => {
        if (!(await cleanupOwned(opts)) && !cli.dryRun) out('nothing installed (no state file): nothing to clean up');
        untuneNode({ stateDir: cli.stateDir, dryRun: cli.dryRun }, log);
      });
      return 0;
    }
    if (cli.cmd === 'reload') return await reloadOnce(nodeOpts(cli, env), cli.liveDir!, cli.config!, log, out);
    // watch: the config in force is the live one (the ConfigMap mount lags behind reloads).
    const live = cli.cmd === 'watch' && cli.liveDir ? readLive(cli.liveDir) : undefined;
    const config = live !== undefined ? parseNodeConfigText(live, 'live config') : loadNodeConfig(cli.config!);
    if (cli.cmd === 'watch') {
      await runWatch(config, cli, env, log);
      return 0;
    }
    if (cli.cmd === 'selftest') {
      const c = await selfTest(probeOptions(config, cli, log));
      out(JSON.stringify(c));
      return c.status === 'True' ? 0 : 1;
    }
    if (cli.cmd === 'plan') {
      out(formatPlan(plan(config, await hostFacts(cli, cli.stateDir), cli.owner)));
      return 0;
    }
    await stateLocked(cli, env, log, async () => {
      const p = plan(config, await hostFacts(cli, cli.stateDir), cli.owner);
      await apply(config, p, opts);
      if (!cli.dryRun) {
        // The rule set and routing now in force (read back and verified), on stdout: the container's
        // log is how `kubectl tpfleet rules NODE` shows them (plugin/rules.ts), with only pods/log get.
        out(formatPlan(p));
        out(`applied (${p.backend}) and verified`);
      }
      const tuning = tuneNode(config, { stateDir: cli.stateDir, dryRun: cli.dryRun }, log);
      out(tuning ? `tuning: ${tuning.reason}: ${tuning.message}` : 'tuning: none configured');
      // What the sidecar starts from and agent-watch reloads from (daemonset/reload.ts).
      if (cli.liveDir && !cli.dryRun) writeLive(cli.liveDir, readFileSync(cli.config!, 'utf8'));
    });
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
