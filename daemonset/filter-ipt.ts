// I/O for the iptables backends (iptables-nft and iptables-legacy), per family, mangle table only.
// Every document is fed to `<variant>-restore --noflush`, which names only our chains (OUR_CHAINS)
// and our single hook rule in PREROUTING: foreign chains and rules are never touched.
import { readFileSync } from 'node:fs';
import type { Family } from '../api/net.ts';
import type { Mutator } from './filter-nft.ts';
import { nftTableIsEmpty, parseIptablesSave, type SavedTable } from './parse.ts';
import { binaries, ENTRY_CHAIN, iptablesGateDocument, OUR_CHAINS } from './render-ipt.ts';
import { parseHookMarker, type RoutingRecord } from './owner.ts';
import { run, runOk } from './run.ts';
import type { AgentState } from './state.ts';
import type { GateMode, IptablesFamilyPlan, IptablesVariant } from './types.ts';

/**
 * Reading a legacy table by name initializes it in the kernel, and it can never be removed
 * again; so an uninitialized legacy mangle table is reported as empty without asking for it.
 */
export async function readMangle(save: string): Promise<SavedTable> {
  const legacyFamily = save.startsWith('ip6') ? 'IPv6' : 'IPv4';
  if (save.includes('-legacy-') && !legacyMangleInitialized(legacyFamily)) return parseIptablesSave('');
  return parseIptablesSave(await runOk([save, '-t', 'mangle']));
}

const ours = (t: SavedTable) => [...t.chains].filter((c) => OUR_CHAINS.has(c));
/** Hook rules: `-A PREROUTING ... -j TPFLEET-PREROUTING` lines, verbatim (never a jump to a foreign chain). */
const hooks = (t: SavedTable) =>
  (t.lines.get('PREROUTING') ?? []).filter(
    (l) => l.endsWith(` -j ${ENTRY_CHAIN}`) || l.includes(` -j ${ENTRY_CHAIN} `),
  );

/** Validates the document against the tool and kernel without committing it. */
export async function iptCheck(p: IptablesFamilyPlan): Promise<string[]> {
  // --test would initialize an untouched legacy mangle table for good (see readMangle); there
  // the apply itself is the check: it is atomic per family and rolled back on failure.
  if (p.restore.includes('-legacy-') && !legacyMangleInitialized(p.family)) return [];
  const r = await run([p.restore, '--test', '--noflush'], p.document);
  return r.code === 0 ? [] : [`${p.restore} rejected the rules (missing kernel support?): ${r.stderr.trim()}`];
}

export async function iptApply(p: IptablesFamilyPlan, mutate: Mutator): Promise<void> {
  const now = await readMangle(p.save);
  const extra: string[] = [];
  // The hook goes in with the chains, in the same transaction, and only when absent; one with another
  // comment (an older owner marker, or none) is replaced by ours in that transaction.
  const existing = hooks(now);
  if (!existing.some((l) => l.includes(`"${p.hookComment}"`)))
    extra.push(...existing.map((l) => l.replace(/^-A /, '-D ')), `-I PREROUTING 1 ${p.hookSpec}`);
  // Stages an earlier config needed and this one does not: flush, then delete (same transaction).
  const stale = ours(now).filter((c) => !p.chains.includes(c));
  const doc = p.document
    .replace(/^\*mangle$/m, ['*mangle', ...stale.map((c) => `:${c} - [0:0]`)].join('\n'))
    .replace(/^COMMIT$/m, [...extra, ...stale.map((c) => `-X ${c}`), 'COMMIT'].join('\n'));
  await mutate([p.restore, '--noflush'], doc);
}

export async function iptVerify(p: IptablesFamilyPlan): Promise<string[]> {
  const t = await readMangle(p.save);
  const problems: string[] = [];
  const v = p.family;
  for (const [chain, comments] of Object.entries(p.expected)) {
    const have = t.comments.get(chain) ?? [];
    if (!t.chains.has(chain)) problems.push(`read-back (${v}): chain ${chain} is missing`);
    else if (!p.gateChains.includes(chain) && JSON.stringify(have) !== JSON.stringify(comments)) {
      problems.push(`read-back (${v}): chain ${chain} holds [${have.join(' | ')}], expected [${comments.join(' | ')}]`);
    }
  }
  const n = hooks(t).filter((l) => l.includes(`-j ${p.hookChain}`)).length;
  if (n !== 1) problems.push(`read-back (${v}): expected 1 hook rule in PREROUTING, found ${n}`);
  return problems;
}

/** One restore document that flushes and deletes `chains` after deleting `hookLines`, re-adding `keep`. */
function rewriteDoc(declare: string[], hookLines: string[], keep: string[], del: string[]): string {
  return [
    '*mangle',
    ...declare.map((c) => `:${c} - [0:0]`),
    ...hookLines.map((l) => l.replace(/^-A /, '-D ')),
    ...keep,
    ...del.map((c) => `-X ${c}`),
    'COMMIT',
    '',
  ].join('\n');
}

/** Puts our chains back as captured before this run (removing what did not exist then). */
export async function iptRestore(p: IptablesFamilyPlan, captured: SavedTable, mutate: Mutator): Promise<void> {
  const now = await readMangle(p.save);
  const before = new Set(ours(captured));
  const all = [...new Set([...ours(now), ...before])];
  const hadHook = hooks(captured).length > 0;
  const keep = [...before].flatMap((c) => captured.lines.get(c) ?? []);
  const del = ours(now).filter((c) => !before.has(c));
  await mutate([p.restore, '--noflush'], rewriteDoc(all, hadHook ? [] : hooks(now), keep, del));
}

/** Removes our chains (by exact name, OUR_CHAINS) and our hook rule(s); no-op when none exist. */
export async function iptRemove(variant: IptablesVariant, f: Family, mutate: Mutator): Promise<void> {
  const { save, restore } = binaries(variant, f);
  const now = await readMangle(save);
  if (ours(now).length === 0 && hooks(now).length === 0) return;
  await mutate([restore, '--noflush'], rewriteDoc(ours(now), hooks(now), [], ours(now)));
}

/** The owner markers (owner.ts) on the hook rules of this variant and family; [] when its tool is missing. */
export async function iptMarkers(
  variant: IptablesVariant,
  f: Family,
): Promise<Array<{ owner: string; routing: RoutingRecord }>> {
  let t: SavedTable;
  try {
    t = await readMangle(binaries(variant, f).save);
  } catch {
    return [];
  }
  return hooks(t).flatMap((l) => {
    const m = parseHookMarker(/--comment "([^"]*)"/.exec(l)?.[1] ?? '');
    return m ? [m] : [];
  });
}

const nftFamily = (f: Family) => (f === 'IPv4' ? 'ip' : 'ip6');

export async function nftMangleExists(f: Family): Promise<boolean> {
  return (await run(['nft', 'list', 'table', nftFamily(f), 'mangle'])).code === 0;
}

export async function nftPreroutingExists(f: Family): Promise<boolean> {
  return (await run(['nft', 'list', 'chain', nftFamily(f), 'mangle', 'PREROUTING'])).code === 0;
}

/**
 * iptables-nft creates nft `table ip[6] mangle` on first use, and its base chain PREROUTING with
 * our hook rule. What did not exist before our first apply and holds nothing now (no rules, policy
 * accept) is removed: the chain, then the table. Kubelet's mangle chains (KUBE-*) often make the
 * table exist without PREROUTING, so the chain is judged on its own.
 */
export async function removeNftMangleIfOursAndEmpty(
  f: Family,
  before: AgentState['before'],
  mutate: Mutator,
): Promise<void> {
  if (before.nftPrerouting?.[f] === false) {
    const c = await run(['nft', '-j', 'list', 'chain', nftFamily(f), 'mangle', 'PREROUTING']);
    if (c.code === 0 && nftTableIsEmpty(c.stdout))
      await mutate(['nft', 'delete', 'chain', nftFamily(f), 'mangle', 'PREROUTING']);
  }
  if (before.nftMangle[f] ?? true) return;
  const r = await run(['nft', '-j', 'list', 'table', nftFamily(f), 'mangle']);
  if (r.code !== 0 || !nftTableIsEmpty(r.stdout)) return;
  await mutate(['nft', 'delete', 'table', nftFamily(f), 'mangle']);
}

export function legacyMangleInitialized(f: Family): boolean {
  try {
    return readFileSync(f === 'IPv4' ? '/proc/net/ip_tables_names' : '/proc/net/ip6_tables_names', 'utf8')
      .split('\n')
      .includes('mangle');
  } catch {
    return false; // x_tables not loaded: nothing initialized
  }
}

export async function iptWriteGate(variant: IptablesVariant, families: Family[], mode: GateMode): Promise<void> {
  for (const f of families) await runOk([binaries(variant, f).restore, '--noflush'], iptablesGateDocument(mode));
}
