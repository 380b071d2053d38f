// Egress policy under TypeScript control (docs/egress.md). The engine decides each connection from a
// compiled table (policy.ts, native/src/policy.c); this module builds that table from the NodeConfig,
// resolves the upstream proxies' host names, reads their credentials from the mounted Secrets, installs
// the table and re-installs it when a credential file or a resolved address changes (a rotated Secret
// applies without a restart), and names rules and upstreams for the audit log and the metrics.
//
// Fail closed: a Forward rule whose upstream cannot be resolved acts as Deny (under its own name, so
// the audit log and the metrics show it) until the name resolves; nothing is ever sent direct instead.
// A table the engine refuses keeps the one in force (the node never runs a half-parsed policy).
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import type { PolicyConfig } from '../api/policy.ts';
import { errorMessage } from '../api/errors.ts';
import type { Engine } from './engine.ts';
import type { Logger } from './log.ts';
import { type CompiledPolicy, compilePolicy, fnv1a, type ResolvedUpstream } from './policy.ts';

/** How often credential files and upstream names are looked at again. */
export const POLL_MS = 2_000;
const ACTIONS = ['allow', 'deny', 'forward', 'limited'] as const;

type Upstream = PolicyConfig['upstreams'][number];
export type Lookup = (host: string) => Promise<{ address: string; family: number }>;

/** username and password of a mounted Secret, or why they cannot be read. */
export function readCredentials(dir: string, secret: string): { username: string; password: string } | string {
  try {
    const read = (key: string) => readFileSync(path.join(dir, secret, key), 'utf8').replace(/\r?\n$/, '');
    return { username: read('username'), password: read('password') };
  } catch (e) {
    return `credentials of Secret ${secret} not readable under ${dir}: ${errorMessage(e)}`;
  }
}

function splitAddress(text: string): { host: string; port: number } {
  const i = text.lastIndexOf(':');
  const host = text.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(text.slice(i + 1)) };
}

/** One upstream with its address resolved and credentials read; a string says why it cannot be used. */
async function resolveUpstream(u: Upstream, dir: string, resolve: Lookup): Promise<ResolvedUpstream | string> {
  const { host, port } = splitAddress(u.address);
  if (port < 1 || port > 65535) return `upstream ${u.name}: port ${port} out of range`;
  let address = host,
    family = isIP(host);
  if (family === 0) {
    try {
      ({ address, family } = await resolve(host));
    } catch (e) {
      return `upstream ${u.name}: cannot resolve ${host}: ${errorMessage(e)}`;
    }
  }
  const creds = u.credentialsSecret ? readCredentials(dir, u.credentialsSecret.name) : undefined;
  if (typeof creds === 'string') return `upstream ${u.name}: ${creds}`;
  return {
    name: u.name,
    type: u.type,
    address: { family: family === 6 ? 6 : 4, address, port },
    connectTimeoutMs: u.connectTimeout,
    ...creds,
  };
}

export interface EgressOptions {
  credentialsDir: string;
  resolve?: Lookup;
  pollMs?: number;
}

/** Names of the table of one generation (the engine's events carry indexes into it). */
interface Generation {
  rules: string[];
  upstreams: string[];
}

export class EgressControl {
  private readonly generations = new Map<number, Generation>();
  /** Rule names by the engine's counter key (FNV-1a of the name), for every rule this process installed. */
  private readonly keyNames = new Map<bigint, string>([[0n, 'default']]);
  private fingerprint = '';
  private timer: NodeJS.Timeout | undefined;
  private installErrors = 0;
  private inForce = 0;
  private engine: Engine | undefined;
  /** The table start() built, installed by the engine before its listeners open (generation 1). */
  private first: { compiled: CompiledPolicy; rules: number; problems: string[] } | undefined;

  constructor(
    private cfg: PolicyConfig,
    private readonly log: Logger,
    private readonly opts: EgressOptions,
  ) {}

  /** Whether the config has a policy at all: without one nothing is installed and nothing is polled. */
  get enabled(): boolean {
    return this.cfg.rules.length > 0 || this.cfg.defaultAction === 'Deny';
  }

  /** The first table, for Engine.start (undefined: no policy). Resolves the upstreams first. */
  async initial(): Promise<Uint8Array | undefined> {
    if (!this.enabled) return undefined;
    const built = await this.build();
    this.first = built;
    return built.compiled.blob;
  }

  /** The engine runs, with the initial table as generation 1: name it, poll for changes. */
  attach(engine: Engine): void {
    this.engine = engine;
    if (!this.first) return;
    this.installed(1, this.first);
    if (this.cfg.upstreams.length === 0) return; // nothing can change under a policy without upstreams
    this.timer = setInterval(() => void this.refresh(), this.opts.pollMs ?? POLL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * A reloaded policy (sidecar/reload.ts): installed as a new generation; open connections keep the
   * decision they got. No policy any more: the table is removed. Upstream polling follows the config.
   */
  async update(cfg: PolicyConfig): Promise<void> {
    if (!this.engine) throw new Error('update before attach');
    this.cfg = cfg;
    if (!this.enabled) {
      this.stop();
      if (this.fingerprint !== '') this.engine.setPolicy(null);
      this.fingerprint = '';
      this.inForce = 0;
      return;
    }
    await this.refresh();
    if (cfg.upstreams.length === 0) this.stop();
    else if (!this.timer) {
      this.timer = setInterval(() => void this.refresh(), this.opts.pollMs ?? POLL_MS);
      this.timer.unref();
    }
  }

  /** Resolves, reads and compiles; installs only when what goes into the table changed. */
  async refresh(): Promise<void> {
    if (!this.engine) return;
    let built: Awaited<ReturnType<EgressControl['build']>>;
    try {
      built = await this.build();
      if (built.fingerprint === this.fingerprint) return;
      this.installed(this.engine.setPolicy(built.compiled.blob), built);
    } catch (e) {
      this.installErrors++;
      this.log.error({ err: errorMessage(e) }, 'the engine refused the egress policy; the one in force stays');
    }
  }

  private async build(): Promise<{ compiled: CompiledPolicy; rules: number; problems: string[]; fingerprint: string }> {
    const resolve = this.opts.resolve ?? ((h: string) => lookup(h));
    const results = await Promise.all(
      this.cfg.upstreams.map((u) => resolveUpstream(u, this.opts.credentialsDir, resolve)),
    );
    const usable = results.filter((r): r is ResolvedUpstream => typeof r !== 'string');
    const problems = results.filter((r): r is string => typeof r === 'string');
    const names = new Set(usable.map((u) => u.name));
    // Fail closed: Forward to an upstream we cannot use is Deny, never direct.
    const rules = this.cfg.rules.map((r) =>
      r.action === 'Forward' && !names.has(r.upstream ?? '')
        ? { ...r, action: 'Deny' as const, upstream: undefined }
        : r,
    );
    const compiled = compilePolicy({ ...this.cfg, rules }, usable);
    // The policy itself is part of it: a reloaded policy with the same upstreams is a new table.
    return { compiled, rules: rules.length, problems, fingerprint: JSON.stringify([this.cfg, usable, problems]) };
  }

  private installed(
    generation: number,
    b: { compiled: CompiledPolicy; rules: number; problems: string[]; fingerprint?: string },
  ): void {
    this.generations.set(generation, { rules: b.compiled.ruleNames, upstreams: b.compiled.upstreamNames });
    // Events of older generations may still arrive; keep a few.
    for (const g of this.generations.keys()) if (g < generation - 4) this.generations.delete(g);
    for (const n of b.compiled.ruleNames) this.keyNames.set(fnv1a(n), n);
    if (b.fingerprint !== undefined) this.fingerprint = b.fingerprint;
    this.inForce = b.rules;
    for (const p of b.problems) this.log.error({ problem: p }, 'upstream unusable: its Forward rules deny until it is');
    this.log.info({ generation, rules: b.rules, upstreams: b.compiled.upstreamNames }, 'egress policy installed');
  }

  /** The rule and upstream names of a closed connection's decision. */
  describe(generation: number, rule: number, upstream: number): { rule: string; upstream?: string } {
    if (rule === -2) return { rule: 'none' };
    if (rule === -1) return { rule: 'default' };
    const g = this.generations.get(generation);
    return { rule: g?.rules[rule] ?? `#${rule}`, upstream: upstream === 255 ? undefined : g?.upstreams[upstream] };
  }

  /** Prometheus text of the policy's own families (labels: rule names from the spec, the closed action set). */
  renderMetrics(prefix: string): string {
    const lines = [
      `# HELP ${prefix}policy_rules Policy rules in force on this node.`,
      `# TYPE ${prefix}policy_rules gauge`,
      `${prefix}policy_rules ${this.inForce}`,
      `# HELP ${prefix}policy_install_errors_total Policies the engine refused (the previous one stayed in force).`,
      `# TYPE ${prefix}policy_install_errors_total counter`,
      `${prefix}policy_install_errors_total ${this.installErrors}`,
    ];
    if (!this.enabled || !this.engine) return `${lines.join('\n')}\n`;
    const { keys, counts } = this.engine.ruleCounters();
    lines.push(
      `# HELP ${prefix}policy_decisions_total Connections decided, by policy rule (its name, or default) and action.`,
      `# TYPE ${prefix}policy_decisions_total counter`,
    );
    keys.forEach((key, i) => {
      const rule = this.keyNames.get(key);
      if (rule === undefined) return;
      for (const [j, a] of ACTIONS.entries())
        lines.push(`${prefix}policy_decisions_total{rule="${rule}",action="${a}"} ${counts[i * ACTIONS.length + j]}`);
    });
    return `${lines.join('\n')}\n`;
  }
}
