// Reload in place (issue 15, ADR 0014): agent-watch learns of a new NodeConfig from the API (a watch
// on its fleet's one ConfigMap) and applies it on the running node: the rules and routing in one
// transaction with read-back and rollback (executor.ts, exactly as a fresh apply would leave them),
// the net.* sysctls of tuning when they changed (ADR 0020), then the live file the sidecar reloads from
// (sidecar/reload.ts). It reports the hash it enforces as a pod condition
// (api/reload.ts). A change it cannot apply leaves the last good config in force — everything of the
// failed attempt undone — and is reported as Refused, naming the changed fields. A change whose pod
// hash differs from this pod's is not applied: the rollout replaces this pod.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { errorMessage } from '../api/errors.ts';
import { parseNodeConfigText } from '../api/load.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import {
  changedFields,
  configCondition,
  POD_HASH_ANNOTATION,
  restartChanges,
  shortHash,
  type NodeConfigReport,
} from '../api/reload.ts';

export const LIVE_FILE = 'nodeconfig.yaml';

/** The config in force, as the sidecar reads it: written whole and renamed into place. */
export function writeLive(dir: string, text: string): void {
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${LIVE_FILE}.tmp`);
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, join(dir, LIVE_FILE));
}

export function readLive(dir: string): string | undefined {
  try {
    return readFileSync(join(dir, LIVE_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** What applying a config takes on this node (main.ts binds the executor and the tuning step). */
export interface NodeApplier {
  /**
   * Rules and routing for this config and, when `changed` names a tuning field, its in-place tuning;
   * throws on any failure (the Reloader then applies the last good config with the same `changed`).
   */
  apply(config: NodeConfig, changed: readonly string[]): Promise<void>;
  /** After a successful apply: the watchdog's gate as it was (the rule document recreates its chains). */
  reassertGate(): Promise<void>;
}

export interface ReloaderOptions {
  liveDir: string;
  /** This pod's hash (POD_HASH, downward API); undefined: every change is tried in place. */
  podHash?: string;
  node: NodeApplier;
  publish: (r: NodeConfigReport) => Promise<void>;
  log: Logger;
  now?: () => number;
}

interface InForce {
  text: string;
  hash: string;
  config: NodeConfig;
}

/** Serializes reloads: one at a time, and only the newest pending document is applied next. */
export class Reloader {
  private current: InForce;
  private pending?: { text: string; podHash?: string };
  private running?: Promise<void>;
  private refused?: { hash: string; message: string };
  /** Milliseconds from a document's arrival to its enforcement, per applied change (tests, logs). */
  readonly durations: number[] = [];

  constructor(private readonly o: ReloaderOptions) {
    const text = readLive(o.liveDir);
    if (text === undefined) throw new Error(`no live config in ${o.liveDir}: run apply --live-dir first`);
    this.current = { text, hash: shortHash(text), config: parseNodeConfigText(text, join(o.liveDir, LIVE_FILE)) };
  }

  get hash(): string {
    return this.current.hash;
  }
  get config(): NodeConfig {
    return this.current.config;
  }

  /** The report for what is in force now. */
  report(): NodeConfigReport {
    return this.refused ? { hash: this.current.hash, refused: this.refused } : { hash: this.current.hash };
  }

  /** A ConfigMap as the API shows it (watch event or get); resolves when it is handled. */
  offer(cm: { data?: Record<string, string>; metadata?: { annotations?: Record<string, string> } }): Promise<void> {
    const text = cm.data?.[LIVE_FILE];
    if (text === undefined) return this.running ?? Promise.resolve();
    this.pending = { text, podHash: cm.metadata?.annotations?.[POD_HASH_ANNOTATION] };
    if (!this.running) this.running = this.drain().finally(() => (this.running = undefined));
    return this.running;
  }

  private async drain(): Promise<void> {
    while (this.pending) {
      const next = this.pending;
      this.pending = undefined;
      await this.handle(next.text, next.podHash);
    }
  }

  private async handle(text: string, podHash: string | undefined): Promise<void> {
    const hash = shortHash(text),
      start = (this.o.now ?? Date.now)();
    if (hash === this.current.hash) {
      this.refused = undefined;
      return this.o.publish(this.report());
    }
    if (this.o.podHash && podHash && podHash !== this.o.podHash) {
      this.o.log.info({ hash, podHash }, 'config change needs a new pod: the rollout replaces this one');
      return;
    }
    let next: NodeConfig;
    try {
      next = parseNodeConfigText(text, 'ConfigMap');
      const changed = changedFields(this.current.config, next);
      const restart = restartChanges(this.current.config, next, changed);
      if (restart.length > 0) throw new Error(`${restart.join(', ')}: cannot change without a new pod`);
      await this.applyOrRestore(next, changed);
    } catch (e) {
      const message = errorMessage(e);
      this.refused = { hash, message };
      this.o.log.error(
        { hash, inForce: this.current.hash, err: message },
        'config change refused; the last good config stays',
      );
      return this.o.publish(this.report());
    }
    writeLive(this.o.liveDir, text);
    this.current = { text, hash, config: next };
    this.refused = undefined;
    const ms = (this.o.now ?? Date.now)() - start;
    this.durations.push(ms);
    this.o.log.info({ hash, ms }, 'config reloaded in place');
    return this.o.publish(this.report());
  }

  /** The new config, or on failure the last good one again (the node is never left half-way). */
  private async applyOrRestore(next: NodeConfig, changed: string[]): Promise<void> {
    const fields = changed.slice(0, 8).join(', ') + (changed.length > 8 ? `, … (${changed.length} fields)` : '');
    try {
      await this.o.node.apply(next, changed);
    } catch (e) {
      try {
        await this.o.node.apply(this.current.config, changed);
      } catch (again) {
        this.o.log.error({ err: errorMessage(again) }, 'restoring the last good config failed too');
      }
      throw new Error(`changing ${fields}: ${errorMessage(e)}`, { cause: e });
    } finally {
      await this.o.node.reassertGate();
    }
  }
}

export { configCondition };
