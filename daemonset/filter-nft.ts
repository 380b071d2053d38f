// I/O for the nftables backend: apply, read back, roll back and remove our table `inet tpfleet`.
// Only our own table is ever named in a command, so foreign tables are never touched.
import { parseNftTableJson } from './parse.ts';
import { NFT_TABLE, nftGateDocument } from './render-nft.ts';
import { parseOwnerMarker, parseRoutingComment, type RoutingRecord } from './owner.ts';
import { run, runOk, type Argv } from './run.ts';
import type { GateMode, NftPlan } from './types.ts';

/** Runs (or, in dry-run, prints) a command that changes the host. */
export type Mutator = (argv: Argv, input?: string) => Promise<void>;

const NFT_APPLY = ['nft', '-f', '-'];

/** Our table as `nft list` text (reloadable), or null when it does not exist. */
export async function nftCapture(): Promise<string | null> {
  const r = await run(['nft', 'list', 'table', 'inet', NFT_TABLE]);
  return r.code === 0 ? r.stdout : null;
}

/** Kernel/tool support check: nft -c validates the whole transaction without committing it. */
export async function nftCheck(p: NftPlan): Promise<string[]> {
  const r = await run(['nft', '-c', '-f', '-'], p.document);
  return r.code === 0 ? [] : [`nft rejected the rules (missing kernel support?): ${r.stderr.trim()}`];
}

export async function nftApply(p: NftPlan, mutate: Mutator): Promise<void> {
  await mutate(NFT_APPLY, p.document);
}

export async function nftVerify(p: NftPlan): Promise<string[]> {
  const r = await run(['nft', '-j', 'list', 'table', 'inet', NFT_TABLE]);
  if (r.code !== 0) return [`read-back: table inet ${NFT_TABLE} is missing: ${r.stderr.trim()}`];
  const got = parseNftTableJson(r.stdout);
  const problems: string[] = [];
  for (const [chain, comments] of Object.entries(p.expected)) {
    const have = got.chains.get(chain);
    if (!have) problems.push(`read-back: chain ${chain} is missing`);
    else if (!p.gateChains.includes(chain) && JSON.stringify(have) !== JSON.stringify(comments)) {
      problems.push(`read-back: chain ${chain} holds [${have.join(' | ')}], expected [${comments.join(' | ')}]`);
    }
  }
  for (const s of p.sets) if (!got.sets.has(s)) problems.push(`read-back: set ${s} is missing`);
  return problems;
}

/** Puts our table back as captured before this run (or removes it if it did not exist). */
export async function nftRestore(captured: string | null, mutate: Mutator): Promise<void> {
  if (captured === null) return nftRemove(mutate);
  await mutate(NFT_APPLY, `table inet ${NFT_TABLE} {}\ndelete table inet ${NFT_TABLE}\n${captured}`);
}

/** The owner and routing our table's markers name (owner.ts); undefined without our table or its marker. */
export async function nftMarker(): Promise<{ owner: string; routing: RoutingRecord[] } | undefined> {
  const text = await nftCapture();
  if (text === null) return undefined;
  const owner = parseOwnerMarker(/^\tcomment "([^"]*)"$/m.exec(text)?.[1]);
  if (!owner) return undefined;
  const chain = /\n\tchain prerouting \{\n\t\tcomment "([^"]*)"/.exec(text)?.[1];
  return { owner, routing: parseRoutingComment(chain) };
}

export async function nftRemove(mutate: Mutator): Promise<void> {
  if ((await nftCapture()) === null) return;
  await mutate(['nft', 'delete', 'table', 'inet', NFT_TABLE]);
}

export async function nftWriteGate(mode: GateMode): Promise<void> {
  await runOk(NFT_APPLY, nftGateDocument(mode));
}
