// The state file: written before the first apply changes anything, so cleanup can remove exactly
// what we created (and nothing that existed before) even after the config file changed.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { routingTable, rulePriority } from '../api/fields.ts';
import { formatIssues } from '../api/load.ts';
import type { Family } from '../api/net.ts';
import { routingArgv } from './plan.ts';
import type { Backend } from './types.ts';

export interface RoutingState {
  family: Family;
  mark: number;
  mask: number;
  table: number;
  priority: number;
  ruleDel: string[];
  routeDel: string[];
  /** False when an identical rule/route existed before our first apply: then it is not ours. */
  ownsRule: boolean;
  ownsRoute: boolean;
}

export interface AgentState {
  version: 1;
  backend: Backend;
  families: Family[];
  routing: RoutingState[];
  /** The sidecar's listenPort and metricsPort of this install (preflight: its own listeners). Absent before issue 12. */
  ports?: number[];
  /** The self-test's probe link (selftest.ts, ADR 0021) is ours to remove: recorded before agent-watch creates it. */
  probeLink?: boolean;
  before: {
    /** iptables-nft: did nft `table ip mangle` / `table ip6 mangle` exist before our first apply? */
    nftMangle: Partial<Record<Family, boolean>>;
    /** iptables-nft: did its base chain PREROUTING exist in that table? (our hook rule creates it;
     *  kubelet's own mangle chains mean the table often exists without it). Absent in old state: true. */
    nftPrerouting?: Partial<Record<Family, boolean>>;
    /** iptables-legacy: was the mangle table initialized? (it cannot be removed again, see ADR 0003) */
    legacyMangle: Partial<Record<Family, boolean>>;
  };
}

const file = (dir: string) => join(dir, 'state.json');

const FAMILIES = ['IPv4', 'IPv6'] as const;
const u32 = z.number().int().min(1).max(0xffffffff);
const flags = z.partialRecord(z.enum(FAMILIES), z.boolean());
const RoutingSchema = z
  .object({
    family: z.enum(FAMILIES),
    mark: u32,
    mask: u32,
    table: routingTable,
    priority: rulePriority,
    ruleDel: z.array(z.string()),
    routeDel: z.array(z.string()),
    ownsRule: z.boolean(),
    ownsRoute: z.boolean(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if ((r.mark & ~r.mask) >>> 0 !== 0)
      ctx.addIssue({ code: 'custom', path: ['mark'], message: 'must lie within mask' });
    // The argv cleanup runs as root: only ever the exact commands we render for these numbers.
    const want = routingArgv(r.family, r.mark, r.mask, r.table, r.priority);
    for (const key of ['ruleDel', 'routeDel'] as const)
      if (JSON.stringify(r[key]) !== JSON.stringify(want[key]))
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `is not the command tpfleet renders (${want[key].join(' ')})`,
        });
  });
/**
 * What a state file may say. It steers privileged steps (cleanup runs its argv as root, in the
 * host's network namespace), and the directory is a hostPath: a file that is not exactly what
 * the agent writes is refused, naming the field, and nothing runs.
 */
const StateSchema = z
  .object({
    version: z.literal(1),
    backend: z.enum(['nftables', 'iptables-nft', 'iptables-legacy']),
    families: z.array(z.enum(FAMILIES)).min(1).max(2),
    routing: z.array(RoutingSchema).max(2),
    ports: z.array(z.number().int().min(1).max(65535)).max(2).optional(),
    probeLink: z.boolean().optional(),
    before: z.object({ nftMangle: flags, nftPrerouting: flags.optional(), legacyMangle: flags }).strict(),
  })
  .strict();

/** A state file's contents checked (StateSchema); throws naming every bad field. */
export function validateState(raw: unknown, source: string): AgentState {
  const r = StateSchema.safeParse(raw);
  if (!r.success)
    throw new Error(
      `${source}: not a tpfleet state file, refusing to act on it:\n  ${formatIssues(r.error).join('\n  ')}`,
    );
  return r.data as AgentState;
}

/** This boot's id: a state copy from another boot describes rules a reboot already removed. */
function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

function readFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

function parse(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: not JSON: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * The state in `dir`, validated; or, when that file is gone (deleted by hand, a wiped /run), the
 * copy in `copyDir` (ADR 0015) if it was written during this boot. undefined: nothing installed.
 */
export function readState(dir: string, copyDir?: string): AgentState | undefined {
  const text = readFile(file(dir));
  if (text !== undefined) return validateState(parse(text, file(dir)), file(dir));
  if (!copyDir) return undefined;
  const copy = readFile(file(copyDir));
  if (copy === undefined) return undefined;
  const c = parse(copy, file(copyDir)) as { bootId?: unknown; state?: unknown };
  if (c.bootId !== bootId()) return undefined; // from before a reboot: those rules are gone
  return validateState(c.state, `${file(copyDir)} (copy)`);
}

function writeAtomic(dir: string, text: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file(dir)}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file(dir));
}

/** Atomic replace (write + rename) so a crash never leaves a torn state file; the copy too. */
export function writeState(dir: string, s: AgentState, copyDir?: string): void {
  writeAtomic(dir, `${JSON.stringify(s, null, 2)}\n`);
  if (copyDir) writeAtomic(copyDir, `${JSON.stringify({ bootId: bootId(), state: s }, null, 2)}\n`);
}

export function removeState(dir: string, copyDir?: string): void {
  rmSync(file(dir), { force: true });
  if (copyDir) rmSync(file(copyDir), { force: true });
}
