// The node janitor (ADR 0015): nothing tpfleet installs on a node outlives its TransparentProxy.
// The chart runs `tpfleet-agent janitor` on every Linux node, in the operator's namespace, so it
// survives what strands a fleet's own pods: the operator down or uninstalled while a deletion's
// finalizer is removed by hand, the TransparentProxy's namespace deleted (its DaemonSet goes with
// it and no cleanup pod can start in a terminating namespace), a crash between apply and cleanup.
//
// Each pass, in this order (the order closes the race with a new object):
//   1. list the state directories under the state root: each is `<namespace>.<name>`, the one
//      hostPath the operator mounts for that object (operator/render/daemonset.ts), so the
//      directory name is the owner marker we wrote; and the owners the rule sets' own markers name
//      (owner.ts), so a node whose state copies and directories are all gone is still recognised;
//   2. list the live TransparentProxies (one cluster-wide LIST); a directory seen in step 1 belongs
//      to an object created before step 2 started, so a live owner is always in the list;
//   3. every owner that is not live gets, under its state directory lock (lock.ts) and after a
//      second LIST, the exact cleanup a deletion runs (rules, routes, tuning restore, from its
//      validated state file, or from its markers when no state is left).
// An object being deleted is still live: its finalizer's cleanup pods do the work. A failed LIST
// ends the pass with nothing done: never act on missing information.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { errorMessage } from '../api/errors.ts';
import { OWNER_KEY } from './owner.ts';

/** `<namespace>.<name>` (owner.ts). */
const OWNER_DIR = OWNER_KEY;

/** The owner directories under `root` (other entries are not ours and are left alone). */
export function ownerDirs(root: string): string[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return names.filter((n) => OWNER_DIR.test(n) && statSync(join(root, n)).isDirectory()).sort();
}

/** The owner key of a live object, as its state directory is named. */
export const ownerKey = (namespace: string, name: string) => `${namespace}.${name}`;

/** Pure: the directories to clean, given those found and the live owners. */
export const orphans = (dirs: readonly string[], live: ReadonlySet<string>): string[] =>
  dirs.filter((d) => !live.has(d));

/** Owner directories under `root` that hold a state file: an empty one (a pod's hostPath) has nothing to clean. */
export function stateDirs(root: string): string[] {
  return ownerDirs(root).filter((d) => existsSync(join(root, d, 'state.json')));
}

export interface JanitorPass {
  root: string;
  /** Where the state copies live (`<copyRoot>/<owner>`), if any: an owner with only a copy left counts. */
  copyRoot?: string;
  /** Owner keys of every live TransparentProxy; throws when the API cannot say. */
  liveOwners: () => Promise<Set<string>>;
  /** Owners the node's rule sets name in their markers (owner.ts): found even with no state directory left. */
  markedOwners?: () => Promise<string[]>;
  /** The exact cleanup of one owner (main.ts: rules, routes, tuning; by its markers when no state is left). */
  clean: (stateDir: string, copyDir: string | undefined, owner: string) => Promise<void>;
  /** Runs `fn` holding the owner's state directory lock (lock.ts), which apply and cleanup also take. */
  lock?: <T>(stateDir: string, fn: () => Promise<T>) => Promise<T>;
  log: Logger;
}

/**
 * One pass; returns the owners whose leftovers were removed. Never throws. Each orphan is cleaned
 * under its state directory lock, after a second LIST made while holding it: an apply of a new
 * object of that name either finished before (its owner is then in that LIST and kept) or waits
 * until the cleanup is done and then installs on a clean node. Directories stay (a pod may have
 * mounted one already); only their state goes.
 */
export async function janitorPass(o: JanitorPass): Promise<string[]> {
  let dirs: string[], live: Set<string>;
  try {
    const marked = (await o.markedOwners?.()) ?? [];
    dirs = [...new Set([...stateDirs(o.root), ...(o.copyRoot ? stateDirs(o.copyRoot) : []), ...marked])].sort();
    if (dirs.length === 0) return [];
    live = await o.liveOwners();
  } catch (e) {
    o.log.warn({ err: errorMessage(e) }, 'janitor: cannot tell the live owners; nothing done this pass');
    return [];
  }
  const cleaned: string[] = [];
  const lock = o.lock ?? (<T>(_: string, fn: () => Promise<T>) => fn());
  for (const d of orphans(dirs, live)) {
    const dir = join(o.root, d);
    const copy = o.copyRoot ? join(o.copyRoot, d) : undefined;
    try {
      const done = await lock(dir, async () => {
        if ((await o.liveOwners()).has(d)) return false; // created meanwhile: its apply is done, keep it
        await o.clean(dir, copy, d);
        return true;
      });
      if (!done) continue;
      cleaned.push(d);
      o.log.info({ owner: d }, 'janitor: removed what a gone TransparentProxy left on this node');
    } catch (e) {
      o.log.error({ owner: d, err: errorMessage(e) }, 'janitor: cleanup failed; retried next pass');
    }
  }
  return cleaned;
}
