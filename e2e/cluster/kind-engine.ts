// The container engine under the kind provider: Docker (kind's default) when a Docker daemon
// answers, else rootful podman (KIND_EXPERIMENTAL_PROVIDER=podman), as configured by
// scripts/bootstrap.sh (README, "kind with podman"). kind on podman changes the host: podman's
// network "kind" (a bridge, netavark's iptables chains, an aardvark-dns resolver) and the host's
// forwarding sysctls. hostState() records what of that the host shows; restoreHost() puts back what
// this run changed and says what, if anything, still differs. Every command is an argv array.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';

export interface Engine {
  readonly name: 'docker' | 'podman';
  /** Environment for kind (KIND_EXPERIMENTAL_PROVIDER for podman). */
  readonly env: NodeJS.ProcessEnv;
}

export function run(
  bin: string,
  args: readonly string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      args,
      { maxBuffer: 64 << 20, timeout: opts.timeoutMs ?? 600_000, env: opts.env ?? process.env },
      (err, stdout, stderr) =>
        err ? reject(new Error(`${bin} ${args.join(' ')}: ${(stderr || err.message).trim()}`)) : resolve(stdout),
    );
  });
}

const firstLine = (e: unknown) => {
  const m = (e as Error).message;
  return (m.split('\n').find((l) => /cannot connect|not found|ENOENT|error/i.test(l)) ?? m).trim();
};

/** Docker if its daemon answers, else podman if installed and set up for kind; or why neither. */
export async function detectEngine(): Promise<Engine | string> {
  let docker: string;
  try {
    await run('docker', ['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 20_000 });
    return { name: 'docker', env: process.env };
  } catch (e) {
    docker = firstLine(e).replace(/^docker info --format \{\{\.ServerVersion\}\}: /, '');
  }
  let info: { host?: { networkBackend?: string } };
  try {
    info = JSON.parse(await run('podman', ['info', '--format', 'json'], { timeoutMs: 60_000 })) as typeof info;
  } catch (e) {
    return `no Docker engine (${docker}) and no podman here (${firstLine(e)})`;
  }
  // kind resolves its nodes by name (the control plane endpoint): podman's DNS comes with netavark.
  if (info.host?.networkBackend !== 'netavark') {
    return `podman uses the ${info.host?.networkBackend ?? 'unknown'} network backend; kind's nodes need netavark's DNS (scripts/bootstrap.sh sets it in containers.conf)`;
  }
  // kind bind-mounts the host's /lib/modules into every node; podman, unlike Docker, does not create a missing source.
  if (!existsSync('/lib/modules'))
    return 'kind mounts /lib/modules, which this host lacks (scripts/bootstrap.sh creates it)';
  return { name: 'podman', env: { ...process.env, KIND_EXPERIMENTAL_PROVIDER: 'podman' } };
}

/** Sysctls podman's networks set on the host (netavark turns forwarding on for its bridges). */
export const HOST_SYSCTLS = [
  'net/ipv4/ip_forward',
  'net/ipv4/conf/all/forwarding',
  'net/ipv4/conf/default/forwarding',
  'net/ipv6/conf/all/forwarding',
  'net/ipv6/conf/default/forwarding',
] as const;

/** Interfaces podman makes: its bridges and the host ends of its veths. */
const PODMAN_LINK = /^(podman\d+|cni-podman\d+|veth[0-9a-f]*)$/;

export interface HostState {
  /**
   * Normalised text: firewall rules of every backend, podman's links and their routes, the
   * forwarding sysctls, podman networks, engine processes. Other interfaces (and their routes) are
   * other tiers' business (local-real makes its own, under the same cluster lock).
   */
  text: string;
  sysctls: Record<string, string>;
  /** Per-interface forwarding (ipv4/ipv6 conf/<if>/forwarding): writing the global switch resets it. */
  ifaceForwarding: Record<string, string>;
  networks: string[];
  /** `nft -j list ruleset`, to tell netavark's additions from what was there. */
  nft: NftObject[];
}

/** One object of `nft -j list ruleset` (table, chain or rule; metainfo dropped). */
export type NftObject =
  | { table: { family: string; name: string } }
  | { chain: { family: string; table: string; name: string; hook?: string } }
  | { rule: { family: string; table: string; chain: string; handle: number; expr: unknown[] } };

export async function nftObjects(): Promise<NftObject[]> {
  const j = JSON.parse(await run('nft', ['-j', 'list', 'ruleset'])) as { nftables: Record<string, unknown>[] };
  return j.nftables.filter((o) => 'table' in o || 'chain' in o || 'rule' in o) as NftObject[];
}

/** netavark names every chain it makes NETAVARK_* or NETAVARK-*. */
const isNetavark = (name: string) => /^NETAVARK[-_]/.test(name);
const ruleKey = (r: { family: string; table: string; chain: string; expr: unknown[] }) =>
  `${r.family} ${r.table} ${r.chain} ${JSON.stringify(r.expr).replace(/"counter":\{"packets":\d+,"bytes":\d+\}/g, '"counter":{}')}`;
const jumpsToNetavark = (expr: unknown[]) => /"(jump|goto)":\{"target":"NETAVARK[-_]/.test(JSON.stringify(expr));

/**
 * The nft commands (argv) that remove what netavark added since `before`: its chains (NETAVARK*)
 * and the rules jumping to them, and a table it created when nothing else is left in it. netavark
 * keeps these after its last network is gone (podman recreates them on next use).
 */
export function netavarkCleanup(before: readonly NftObject[], now: readonly NftObject[]): string[][] {
  const tables = new Set(before.flatMap((o) => ('table' in o ? [`${o.table.family} ${o.table.name}`] : [])));
  const chains = new Set(
    before.flatMap((o) => ('chain' in o ? [`${o.chain.family} ${o.chain.table} ${o.chain.name}`] : [])),
  );
  const rules = new Set(before.flatMap((o) => ('rule' in o ? [ruleKey(o.rule)] : [])));
  const cmds: string[][] = [];
  const dropTables = new Set<string>();
  for (const o of now) {
    if (!('table' in o)) continue;
    const t = `${o.table.family} ${o.table.name}`;
    if (tables.has(t)) continue;
    const inT = now.filter(
      (x) =>
        ('chain' in x && `${x.chain.family} ${x.chain.table}` === t) ||
        ('rule' in x && `${x.rule.family} ${x.rule.table}` === t),
    );
    const ours = inT.every((x) =>
      'chain' in x
        ? isNetavark(x.chain.name) || !!x.chain.hook
        : 'rule' in x && (isNetavark(x.rule.chain) || jumpsToNetavark(x.rule.expr)),
    );
    if (ours) {
      dropTables.add(t);
      cmds.push(['delete', 'table', o.table.family, o.table.name]);
    }
  }
  const kept = now.filter(
    (o) =>
      !('table' in o
        ? dropTables.has(`${o.table.family} ${o.table.name}`)
        : 'chain' in o
          ? dropTables.has(`${o.chain.family} ${o.chain.table}`)
          : dropTables.has(`${o.rule.family} ${o.rule.table}`)),
  );
  for (const o of kept) {
    if ('rule' in o && !isNetavark(o.rule.chain) && jumpsToNetavark(o.rule.expr) && !rules.has(ruleKey(o.rule))) {
      cmds.push(['delete', 'rule', o.rule.family, o.rule.table, o.rule.chain, 'handle', String(o.rule.handle)]);
    }
  }
  const added = kept.flatMap((o) =>
    'chain' in o && isNetavark(o.chain.name) && !chains.has(`${o.chain.family} ${o.chain.table} ${o.chain.name}`)
      ? [o.chain]
      : [],
  );
  for (const c of added) cmds.push(['flush', 'chain', c.family, c.table, c.name]);
  for (const c of added) cmds.push(['delete', 'chain', c.family, c.table, c.name]);
  return cmds;
}

/** Rules without what changes by itself: packet counters, generation comments, timestamps. */
export function normaliseRules(text: string): string {
  return text
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[]').replace(/counter packets \d+ bytes \d+/g, 'counter'))
    .join('\n')
    .trim();
}

const optional = (p: Promise<string>) => p.catch((e: Error) => `(${e.message.split('\n')[0]})`);

/** The host's network state as kind on podman could change it; run before create and after delete. */
export async function hostState(): Promise<HostState> {
  const sysctls = Object.fromEntries(HOST_SYSCTLS.map((k) => [k, readFileSync(`/proc/sys/${k}`, 'utf8').trim()]));
  const networks = (await optional(run('podman', ['network', 'ls', '--format', '{{.Name}}'])))
    .split('\n')
    .filter(Boolean)
    .sort();
  const links = (await run('ip', ['-o', 'link', 'show']))
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(':')[1]!.trim().replace(/@.*/, ''))
    .filter((l) => PODMAN_LINK.test(l))
    .sort();
  const onPodman = (routes: string) =>
    routes
      .split('\n')
      .filter((l) => / dev (podman\d+|cni-podman\d+|veth[0-9a-f]*)\b/.test(l))
      .join('\n');
  const engineProcs = (await optional(run('ps', ['-e', '-o', 'comm='])))
    .split('\n')
    .map((s) => s.trim())
    .filter((p) => ['conmon', 'aardvark-dns', 'netavark', 'slirp4netns'].includes(p))
    .sort();
  const parts: [string, string][] = [
    ['iptables-nft', normaliseRules(await optional(run('iptables-nft-save', [])))],
    ['ip6tables-nft', normaliseRules(await optional(run('ip6tables-nft-save', [])))],
    ['iptables-legacy', normaliseRules(await optional(run('iptables-legacy-save', [])))],
    ['ip6tables-legacy', normaliseRules(await optional(run('ip6tables-legacy-save', [])))],
    ['nft', normaliseRules(await optional(run('nft', ['list', 'ruleset'])))],
    ['links', links.join('\n')],
    ['routes', onPodman(await run('ip', ['route', 'show', 'table', 'all']))],
    ['routes6', onPodman(await run('ip', ['-6', 'route', 'show', 'table', 'all']))],
    [
      'sysctls',
      Object.entries(sysctls)
        .map(([k, v]) => `${k}=${v}`)
        .join('\n'),
    ],
    ['podman networks', networks.join('\n')],
    ['engine processes', engineProcs.join('\n')],
  ];
  return {
    text: parts.map(([k, v]) => `== ${k}\n${v}`).join('\n'),
    sysctls,
    ifaceForwarding: ifaceForwarding(),
    networks,
    nft: await nftObjects(),
  };
}

function ifaceForwarding(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const fam of ['ipv4', 'ipv6']) {
    for (const dev of readdirSync(`/proc/sys/net/${fam}/conf`)) {
      if (dev === 'all' || dev === 'default') continue;
      try {
        out[`net/${fam}/conf/${dev}/forwarding`] = readFileSync(
          `/proc/sys/net/${fam}/conf/${dev}/forwarding`,
          'utf8',
        ).trim();
      } catch {
        /* gone */
      }
    }
  }
  return out;
}

/** The lines of `after` that differ from `before`, for an error message. */
export function stateDiff(before: string, after: string): string {
  const b = new Set(before.split('\n')),
    a = new Set(after.split('\n'));
  const gone = before
    .split('\n')
    .filter((l) => !a.has(l) && !l.startsWith('== '))
    .map((l) => `- ${l}`);
  const added = after
    .split('\n')
    .filter((l) => !b.has(l) && !l.startsWith('== '))
    .map((l) => `+ ${l}`);
  return [...gone, ...added].join('\n');
}

/**
 * After `kind delete cluster` on podman: removes podman's network "kind" when this run made it
 * (kind never removes it) and what netavark left in the firewall, puts back the forwarding
 * sysctls it turned on, and returns what still differs from `before` (empty when the host is as it was).
 */
export async function restoreHost(before: HostState): Promise<string> {
  if (!before.networks.includes('kind'))
    await run('podman', ['network', 'rm', '--force', 'kind']).catch(() => undefined);
  for (const argv of netavarkCleanup(before.nft, await nftObjects())) await run('nft', argv);
  // Writing the global forwarding switch sets every interface's: afterwards each interface gets
  // back its value from before create, or, for one made meanwhile by someone else, its value now.
  const current = ifaceForwarding();
  let wrote = false;
  for (const [k, v] of Object.entries(before.sysctls)) {
    if (readFileSync(`/proc/sys/${k}`, 'utf8').trim() !== v) {
      writeFileSync(`/proc/sys/${k}`, v);
      wrote = true;
    }
  }
  if (wrote) {
    for (const [k, v] of Object.entries(current)) {
      const dev = k.split('/')[3]!;
      const want = PODMAN_LINK.test(dev) ? undefined : (before.ifaceForwarding[k] ?? v);
      try {
        if (want !== undefined && readFileSync(`/proc/sys/${k}`, 'utf8').trim() !== want)
          writeFileSync(`/proc/sys/${k}`, want);
      } catch {
        /* gone */
      }
    }
  }
  // aardvark-dns exits a moment after its last network is gone.
  for (let i = 0; i < 50; i++) {
    const now = await hostState();
    if (now.text === before.text) return '';
    if (i === 49) return stateDiff(before.text, now.text);
    await new Promise((r) => setTimeout(r, 200));
  }
  return '';
}
