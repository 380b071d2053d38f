// Reload in place (issue 15, ADR 0014): the sidecar reads its config from the node's live file
// (written whole and renamed into place by the node agent, daemonset/reload.ts) and, when it
// changes, applies what can change without touching a listener or an open connection: the
// engine's timeouts and limits (engine.setOptions, every thread within one loop turn), the log
// level, and the egress policy (a new table generation; connections keep the decision they got).
// A change of a restart field (api/reload.ts) is not applied: the pod hash changed with it, and the
// rollout replaces this pod. The agent validated the document before writing it; one that does
// not parse here is refused and logged, and the config in force stays.
import { readFileSync, watch as fsWatch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { errorMessage } from '../api/errors.ts';
import { parseNodeConfigText } from '../api/load.ts';
import type { NodeConfig } from '../api/nodeconfig.ts';
import { changedFields, restartFieldsIn, shortHash } from '../api/reload.ts';
import type { Logger } from './log.ts';
import type { LiveOptions } from './engine.ts';
import { liveOptions } from './settings.ts';
import type { PolicyConfig } from '../api/policy.ts';

/** What a reload changes in the running process (proxy.ts binds it to the engine, the logger, egress). */
export interface ReloadTarget {
  setOptions(o: LiveOptions): void;
  setLogLevel(level: NodeConfig['proxy']['logLevel']): void;
  setPolicy(p: PolicyConfig): Promise<void>;
}

export type ReloadResult = 'applied' | 'unchanged' | 'refused';

export class ConfigReloader {
  private text: string;
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private busy: Promise<unknown> = Promise.resolve();
  readonly counts: Record<ReloadResult, number> = { applied: 0, unchanged: 0, refused: 0 };

  constructor(
    private readonly path: string,
    private config: NodeConfig,
    private readonly target: ReloadTarget,
    private readonly log: Logger,
    /** Engine options the process forces whatever the config says (the hook, TPFLEET_ENGINE_SPLICE). */
    private readonly forced: Partial<LiveOptions> = {},
  ) {
    this.text = readFileSync(path, 'utf8');
  }

  get hash(): string {
    return shortHash(this.text);
  }

  /**
   * Watches the file's directory (the file is replaced by a rename, so its inode changes) and, as a
   * backstop for a missed inotify event, looks at it every `pollMs`.
   */
  start(pollMs = 2_000): void {
    const name = basename(this.path);
    try {
      this.watcher = fsWatch(dirname(this.path), (_e, f) => {
        if (!f || f === name) void this.check();
      });
      this.watcher.unref();
    } catch (e) {
      this.log.warn({ err: errorMessage(e) }, 'cannot watch the config directory; polling it');
    }
    this.timer = setInterval(() => void this.check(), pollMs);
    this.timer.unref();
  }

  stop(): void {
    this.watcher?.close();
    clearInterval(this.timer);
  }

  /** Reads the file and applies it when it changed; one check at a time. */
  check(): Promise<ReloadResult> {
    const r = this.busy.then(() => this.once());
    this.busy = r.catch(() => undefined);
    return r;
  }

  private async once(): Promise<ReloadResult> {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (e) {
      this.log.warn({ err: errorMessage(e) }, 'config file unreadable; the config in force stays');
      return this.count('refused');
    }
    if (text === this.text) return 'unchanged';
    let next: NodeConfig;
    try {
      next = parseNodeConfigText(text, this.path);
    } catch (e) {
      this.text = text; // logged once, not on every poll
      this.log.error({ err: errorMessage(e) }, 'new config refused; the config in force stays');
      return this.count('refused');
    }
    const changed = changedFields(this.config, next);
    const restart = restartFieldsIn(changed);
    this.text = text;
    if (restart.length > 0) {
      this.log.warn(
        { fields: restart },
        'config change needs a new pod: not applied here (the rollout replaces this pod)',
      );
      return this.count('refused');
    }
    this.target.setOptions({ ...liveOptions(next), ...this.forced });
    this.target.setLogLevel(next.proxy.logLevel);
    await this.target.setPolicy(next.policy);
    this.config = next;
    this.log.child({}, { level: 'info' }).info({ hash: this.hash, fields: changed.slice(0, 20) }, 'config reloaded');
    return this.count('applied');
  }

  private count(r: ReloadResult): ReloadResult {
    this.counts[r]++;
    return r;
  }
}

/** Prometheus text of the reload counter (label result: the closed set above, without unchanged). */
export function renderReloadMetrics(prefix: string, r: ConfigReloader | undefined): string {
  const c = r?.counts ?? { applied: 0, refused: 0 };
  return [
    `# HELP ${prefix}config_reloads_total Config changes seen in the live file: applied in place, or refused (the config in force stayed).`,
    `# TYPE ${prefix}config_reloads_total counter`,
    `${prefix}config_reloads_total{result="applied"} ${c.applied}`,
    `${prefix}config_reloads_total{result="refused"} ${c.refused}`,
    '',
  ].join('\n');
}
