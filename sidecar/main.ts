// tpfleet sidecar: the forwarding proxy behind the node agent's TPROXY rules.
//   sidecar/main.ts --config FILE [--template TOKEN]   (the NodeConfig YAML; see sidecar/README.md)
// TOKEN: the operator's hash of the pod template. The status endpoints are also served at the
// loopback address derived from it (api/probe-address.ts), where the pod's probes go, and
// /readyz?template=TOKEN answers ready only from the sidecar started with it (status.ts: two pods
// share the status port during a rollout).
// Exit codes: 0 after a drain, 1 on a runtime failure (listener, metrics port, CPU pinning, an engine
// thread that failed or stopped turning), 2 on bad usage or config (the message names the field),
// including a tuning.affinity plan that leaves no CPU for the workers on this node.
// The environment is read once, here: TPFLEET_ENGINE_FAULT (tests only, engine.ts parseFault) and
// TPFLEET_ENGINE_SPLICE=off (benchmarks only: the engine copies every byte, ADR 0011) and
// TPFLEET_CREDENTIALS_DIR (tests only: where the upstreams' Secrets are, instead of CREDENTIALS_DIR).
import { parseArgs } from 'node:util';
import { errorMessage } from '../api/errors.ts';
import { ConfigError, loadNodeConfig } from '../api/load.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { CREDENTIALS_DIR } from '../api/policy.ts';
import { readNodeFacts } from '../host/facts.ts';
import { parseFault } from './engine.ts';
import { createLogger } from './log.ts';
import { planWorkerPinning } from './pinning.ts';
import { runProxy } from './proxy.ts';
import { type Settings, settingsFrom } from './settings.ts';

const USAGE = 'usage: sidecar/main.ts --config FILE [--template TOKEN]';
const TEMPLATE = /^[0-9a-f]{8,64}$/;

function fail(message: string): never {
  process.stderr.write(`tpfleet-sidecar: ${message}\n`);
  process.exit(2);
}

function parse(): {
  settings: Settings;
  fault: ReturnType<typeof parseFault>;
  reload: { path: string; config: NodeConfig };
} {
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
  try {
    const cfg = loadNodeConfig(configPath);
    // Node facts (the same reader and planner as the node agent's) only when pinning is asked for.
    const pinning =
      cfg.tuning.affinity.mode === 'off'
        ? null
        : planWorkerPinning(cfg.tuning, readNodeFacts('/', cfg.tuning.affinity.interfaces), configPath);
    const settings = settingsFrom(cfg, undefined, pinning, template ?? null);
    if (process.env.TPFLEET_ENGINE_SPLICE === 'off') settings.live.splice = false;
    return {
      settings,
      fault: parseFault(process.env.TPFLEET_ENGINE_FAULT),
      reload: { path: configPath, config: cfg },
    };
  } catch (e) {
    if (e instanceof ConfigError) fail(e.message);
    throw e;
  }
}

const { settings, fault, reload } = parse();
await runProxy(settings, createLogger(settings.logLevel, { role: 'sidecar' }), {
  fault,
  credentialsDir: process.env.TPFLEET_CREDENTIALS_DIR ?? CREDENTIALS_DIR,
  // Its own logger, at info whatever proxy.logLevel says: policy.audit.enabled turns it on and off.
  audit: createLogger('info', { role: 'sidecar', log: 'audit' }),
  // The file is watched: a config the node agent reloads in place reaches this process (reload.ts).
  reload,
});
