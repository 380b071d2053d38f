// The agent's reload entry points (main.ts binds them): the watch loop over the fleet's ConfigMap,
// the one-shot `reload` command, and the node step a reload applies (`apply`'s rule step).
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { errorMessage } from '../api/errors.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { configCondition, type NodeConfigReport } from '../api/reload.ts';
import type { KubeClient } from '../kube/client.ts';
import { watchConfigMap } from './configmap-watch.ts';
import { apply } from './executor.ts';
import { plan } from './plan.ts';
import { LIVE_FILE, Reloader, type NodeApplier } from './reload.ts';
import type { TuningPublisher } from './tuning-publish.ts';
import { retuneNode } from './tuning-step.ts';
import type { HostFacts } from './types.ts';

export interface NodeOptions {
  stateDir: string;
  /** The state copy outside /run (ADR 0015), kept as apply keeps it. */
  stateCopyDir?: string;
  pathVar: string;
  facts: () => Promise<HostFacts>;
  /** Where the writable /proc/sys/net mount lives (agent-watch: /host, ADR 0020); default '/'. */
  sysctlRoot?: string;
  /** `<namespace>.<name>`: the owner marker written into the rules (owner.ts). */
  owner?: string;
}

/**
 * Rules and routing for a config on this node (apply's rule step), then, when a tuning field changed,
 * the in-place retune of its net.* sysctls (the other tuning fields are restart fields). reload.ts
 * undoes both on failure by applying the last good config the same way.
 */
export async function applyNode(
  config: NodeConfig,
  o: NodeOptions,
  log: Logger,
  changed: readonly string[] = [],
): Promise<void> {
  const p = plan(config, await o.facts(), o.owner);
  await apply(config, p, {
    stateDir: o.stateDir,
    stateCopyDir: o.stateCopyDir,
    dryRun: false,
    pathVar: o.pathVar,
    out: (t) => log.info(t),
    log,
  });
  if (changed.some((c) => c === 'tuning' || c.startsWith('tuning.')))
    retuneNode(config, { stateDir: o.stateDir, root: o.sysctlRoot ?? '/' }, log);
}

/** `reload`: one document through the Reloader, as watch takes one from the ConfigMap; exit 1 when refused. */
export async function reloadOnce(
  o: NodeOptions,
  liveDir: string,
  file: string,
  log: Logger,
  out: (t: string) => void,
): Promise<number> {
  let report: NodeConfigReport | undefined;
  const reloader = new Reloader({
    liveDir,
    node: { apply: (c, changed) => applyNode(c, o, log, changed), reassertGate: async () => undefined },
    log,
    publish: async (r) => {
      report = r;
    },
  });
  const before = reloader.hash;
  await reloader.offer({ data: { [LIVE_FILE]: readFileSync(file, 'utf8') } });
  out(JSON.stringify({ before, ...report, ms: reloader.durations[0] }));
  if (report?.refused) process.stderr.write(`tpfleet-agent: refused: ${report.refused.message}\n`);
  return report?.refused ? 1 : 0;
}

export interface ReloadTarget {
  liveDir: string;
  configMap: string;
  podHash?: string;
  client: KubeClient;
  namespace: string;
  publisher: TuningPublisher;
}

/** The in-place reload loop: until `signal` aborts; nothing without a target (no API, no live dir). */
export async function startReload(
  t: ReloadTarget | undefined,
  log: Logger,
  signal: AbortSignal,
  node: NodeApplier,
): Promise<void> {
  if (!t) return;
  let reloader: Reloader;
  try {
    reloader = makeReloader(t, log, node);
  } catch (e) {
    // e.g. a pod whose init predates --live-dir: it keeps running what it applied; the next rollout fixes it.
    log.error({ err: errorMessage(e) }, 'no live config: reload in place is off for this pod');
    return;
  }
  await watchConfigMap({
    client: t.client,
    namespace: t.namespace,
    name: t.configMap,
    onObject: (cm) => reloader.offer(cm),
    log,
    signal,
  });
}

function makeReloader(t: ReloadTarget, log: Logger, node: NodeApplier): Reloader {
  return new Reloader({
    liveDir: t.liveDir,
    podHash: t.podHash,
    node,
    log,
    publish: async (r) => {
      try {
        await t.publisher.publish(configCondition(r));
      } catch (e) {
        log.warn({ err: errorMessage(e) }, 'config condition not published');
      }
    },
  });
}
