// tpfleet sidecar: the forwarding proxy behind the node agent's TPROXY rules.
//   sidecar/main.ts --config FILE [--template TOKEN]   (the NodeConfig YAML; see sidecar/README.md)
// TOKEN: the operator's hash of the pod template. The status endpoints are also served at the
// loopback address derived from it (api/probe-address.ts), where the pod's probes go, and
// /readyz?template=TOKEN answers ready only from the sidecar started with it (status.ts: two pods
// share the status port during a rollout).
// Exit codes: 0 after a drain, 1 on a runtime failure (listener, metrics port, CPU pinning), 2 on
// bad usage or config (the message names the field), including a tuning.affinity plan that leaves
// no CPU for the workers on this node.
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { ConfigError, loadNodeConfig } from '../api/load.ts';
import { readNodeFacts } from '../host/facts.ts';
import { createLogger } from './log.ts';
import { planWorkerPinning } from './pinning.ts';
import { runPrimary, WORKER_ENV } from './primary.ts';
import { type Settings, settingsFrom, type WorkerSettings } from './settings.ts';
import { runWorker } from './worker.ts';
import { errorMessage } from '../api/errors.ts';

const USAGE = 'usage: sidecar/main.ts --config FILE [--template TOKEN]';
const TEMPLATE = /^[0-9a-f]{8,64}$/;

async function main(): Promise<void> {
  if (cluster.isWorker) {
    // Settings were validated by the primary; this is the only place a worker reads them.
    const settings = JSON.parse(process.env[WORKER_ENV] ?? 'null') as WorkerSettings;
    return runWorker(settings, cluster.worker?.id ?? 0);
  }
  let configPath: string | undefined, template: string | undefined;
  try {
    ({ config: configPath, template } = parseArgs({
      options: { config: { type: 'string' }, template: { type: 'string' } },
      strict: true,
    }).values);
  } catch (e) {
    fail(`${errorMessage(e)}\n${USAGE}`);
  }
  if (!configPath) fail(`--config is required\n${USAGE}`);
  if (template !== undefined && !TEMPLATE.test(template))
    fail(`--template must be 8 to 64 lowercase hex digits, got ${JSON.stringify(template)}\n${USAGE}`);
  let settings: Settings;
  try {
    const cfg = loadNodeConfig(configPath);
    // Node facts (the same reader and planner as the node agent's) only when pinning is asked for.
    const pinning =
      cfg.tuning.affinity.mode === 'off'
        ? null
        : planWorkerPinning(cfg.tuning, readNodeFacts('/', cfg.tuning.affinity.interfaces), configPath);
    settings = { ...settingsFrom(cfg, undefined, pinning), template: template ?? null };
  } catch (e) {
    if (e instanceof ConfigError) fail(e.message);
    throw e;
  }
  const log = createLogger(settings.logLevel, { role: 'primary' });
  try {
    await runPrimary(settings, log);
  } catch (e) {
    log.fatal({ err: errorMessage(e) }, 'cannot start');
    process.exit(1);
  }
}

function fail(message: string): never {
  process.stderr.write(`tpfleet-sidecar: ${message}\n`);
  process.exit(2);
}

await main();
