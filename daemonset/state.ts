// The state file: written before the first apply changes anything, so cleanup can remove exactly
// what we created (and nothing that existed before) even after the config file changed.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Family } from '../api/net.ts';
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

export function readState(dir: string): AgentState | undefined {
  let text: string;
  try {
    text = readFileSync(file(dir), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const s = JSON.parse(text) as AgentState;
  if (s.version !== 1) throw new Error(`${file(dir)}: unsupported state version ${String(s.version)}`);
  return s;
}

/** Atomic replace (write + rename) so a crash never leaves a torn state file. */
export function writeState(dir: string, s: AgentState): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file(dir)}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file(dir));
}

export function removeState(dir: string): void {
  rmSync(file(dir), { force: true });
}
