// The engine behind every tuning write: a kernel value in a file (/proc/sys/..., /proc/irq/N/...,
// /sys/class/net/<if>/queues/...) that tpfleet takes ownership of.
//
// Invariants (the state file, <stateDir>/tuning.json, is the only memory):
//  - the ORIGINAL value of a file is recorded and persisted BEFORE the first write to it; a later
//    apply never replaces it (so re-applying, or applying a new plan, still restores the pre-tpfleet value);
//  - `applied` is what the kernel read back after our write (it may round, e.g. powers of two);
//  - drift = the current value is not `applied`: reported, never silently overwritten;
//  - restore writes `original` back, verifies it, and forgets the entry; an entry changed by someone
//    else since (drift) is left alone unless forced, and reported;
//  - a file the kernel lacks is reported as missing and never owned; a refused write is reported
//    with the kernel's error and not owned unless the value changed anyway.
// Writes go through fs (no shell). /proc/sys/net/* and /sys/class/net are per network namespace:
// the state records the netns it was made in and refuses to act in another one.
import { existsSync, mkdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseCpuList, parseCpuMask, sameCpus } from '../../host/cpulist.ts';
import type { Compare, Write } from '../../host/write.ts';
import { errorMessage } from '../../api/errors.ts';

import { foreignEntry } from './record.ts';

export type { Compare, Write } from '../../host/write.ts';

interface Entry {
  path: string;
  compare: Compare;
  group: Write['group'];
  original: string;
  applied: string | null;
  guard?: string;
}
interface State {
  version: 1;
  netns: string | null;
  entries: Record<string, Entry>;
}

export interface Change {
  key: string;
  from: string;
  to: string;
}
export interface Mismatch {
  key: string;
  want: string;
  got: string | null;
}
export interface Failure {
  key: string;
  want: string;
  error: string;
}

export interface ApplyReport {
  dryRun: boolean;
  /** Written and verified (dry run: would be written). */
  changed: Change[];
  /** Already at the wanted value (still owned, so drift is watched). */
  unchanged: string[];
  /** The kernel rounded or clamped the value: `got` is what it kept. */
  adjusted: Mismatch[];
  /** Not present on this kernel / in this netns / device. */
  missing: string[];
  /** Write refused by the kernel. */
  failed: Failure[];
  /** Changed by someone else since our last apply; left as found (see overwriteDrift). */
  drift: Mismatch[];
  /** Owned before, no longer in the plan: restored. */
  released: RestoreReport;
}

export interface RestoreReport {
  restored: Change[];
  /** Entries of the record tpfleet could not have written (tampered): never touched, dropped. */
  refused: { key: string; path: string; reason: string }[];
  skippedDrift: Mismatch[];
  missing: string[];
  failed: Failure[];
}
export interface DriftReport {
  checked: number;
  drift: Mismatch[];
}

export interface EngineOptions {
  stateDir: string;
  root?: string;
  dryRun?: boolean;
  overwriteDrift?: boolean;
  /**
   * Only paths under this prefix are written or restored (applyWrites): agent-watch's in-place
   * retune can write /proc/sys/net only (ADR 0020). Owned entries outside it stay as they are.
   */
  scope?: string;
}

const STATE_FILE = 'tuning.json';

// ---- file access ----------------------------------------------------------------------------

type ReadResult = { text: string } | { missing: true } | { error: string };

function readValue(root: string, path: string, guard?: string): ReadResult {
  if (guard !== undefined && !existsSync(join(root, guard))) return { missing: true };
  try {
    return { text: readFileSync(join(root, path), 'utf8').trim() };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // ENOENT: no such key/device; EINVAL/ENOENT on read also means "not applicable" (xps_cpus on a single-queue NIC).
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return { missing: true };
    return { error: err.message };
  }
}

function writeValue(root: string, path: string, value: string): string | undefined {
  try {
    writeFileSync(join(root, path), `${value}\n`);
    return undefined;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return err.message;
  }
}

export function sameValue(compare: Compare, a: string, b: string): boolean {
  if (compare === 'words') return a.trim().split(/\s+/).join(' ') === b.trim().split(/\s+/).join(' ');
  const parse = compare === 'cpulist' ? parseCpuList : parseCpuMask;
  const x = parse(a),
    y = parse(b);
  return typeof x !== 'string' && typeof y !== 'string' && sameCpus(x, y);
}

const canon = (compare: Compare, text: string): string =>
  compare === 'words' ? text.trim().split(/\s+/).join(' ') : text.trim();

/** Component-wise max of two integer vectors; the wanted text when either is not all integers. */
function raise(current: string, want: string): string {
  const c = current.trim().split(/\s+/),
    w = want.trim().split(/\s+/);
  if (c.length !== w.length || ![...c, ...w].every((x) => /^\d+$/.test(x))) return want;
  return w.map((x, i) => (BigInt(x) >= BigInt(c[i]!) ? x : c[i]!)).join(' ');
}

// ---- state ----------------------------------------------------------------------------------

function currentNetns(root: string): string | null {
  if (root !== '/') return null; // a fixture tree has no namespace
  try {
    return readlinkSync('/proc/self/ns/net');
  } catch {
    return null;
  }
}

function loadState(o: EngineOptions): State {
  const root = o.root ?? '/';
  let s: State;
  try {
    s = JSON.parse(readFileSync(join(o.stateDir, STATE_FILE), 'utf8')) as State;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, netns: currentNetns(root), entries: {} };
    throw new Error(`${join(o.stateDir, STATE_FILE)}: unreadable tuning state: ${errorMessage(e)}`, { cause: e });
  }
  if (s.version !== 1)
    throw new Error(`${join(o.stateDir, STATE_FILE)}: unsupported tuning state version ${String(s.version)}`);
  const here = currentNetns(root);
  if (s.netns && here && s.netns !== here && Object.keys(s.entries).length > 0) {
    throw new Error(
      `tuning state in ${o.stateDir} was made in network namespace ${s.netns}, this process is in ${here}: refusing to touch per-netns values`,
    );
  }
  return s;
}

/** Atomic replace; the file disappears once nothing is owned. */
function saveState(o: EngineOptions, s: State): void {
  const file = join(o.stateDir, STATE_FILE);
  if (Object.keys(s.entries).length === 0) {
    rmSync(file, { force: true });
    return;
  }
  mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(`${file}.tmp`, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

// ---- apply ----------------------------------------------------------------------------------

const guardOf = (w: Write): { guard?: string } => (w.guard === undefined ? {} : { guard: w.guard });

const emptyRestore = (): RestoreReport => ({ restored: [], refused: [], skippedDrift: [], missing: [], failed: [] });

interface Pending {
  w: Write;
  want: string;
  entry: Entry;
  from: string;
}

/** Applies `writes` (the whole desired set: owned keys not in it are restored). */
export function applyWrites(writes: Write[], o: EngineOptions): ApplyReport {
  const root = o.root ?? '/',
    dry = o.dryRun ?? false;
  const s = loadState(o);
  const r: ApplyReport = {
    dryRun: dry,
    changed: [],
    unchanged: [],
    adjusted: [],
    missing: [],
    failed: [],
    drift: [],
    released: emptyRestore(),
  };
  const inScope = (path: string) => o.scope === undefined || path.startsWith(o.scope);
  writes = writes.filter((w) => inScope(w.path));
  const wanted = new Set(writes.map((w) => w.key));
  const stale = Object.keys(s.entries).filter((k) => !wanted.has(k) && inScope(String(s.entries[k]?.path)));
  if (stale.length) r.released = restoreEntries(s, stale, o);

  const pending: Pending[] = [];
  for (const w of writes) {
    const cur = readValue(root, w.path, w.guard);
    if ('missing' in cur) {
      r.missing.push(w.key);
      continue;
    }
    if ('error' in cur) {
      r.failed.push({ key: w.key, want: w.value, error: `read: ${cur.error}` });
      continue;
    }
    const want = w.atLeast ? raise(cur.text, w.value) : canon(w.compare, w.value);
    const old = s.entries[w.key];
    if (old?.applied != null && !sameValue(w.compare, cur.text, old.applied) && !sameValue(w.compare, cur.text, want)) {
      r.drift.push({ key: w.key, want: old.applied, got: cur.text });
      if (!o.overwriteDrift) continue;
    }
    if (sameValue(w.compare, cur.text, want)) {
      r.unchanged.push(w.key);
      if (!dry)
        s.entries[w.key] = {
          ...(old ?? {
            path: w.path,
            compare: w.compare,
            group: w.group,
            original: canon(w.compare, cur.text),
            ...guardOf(w),
          }),
          applied: canon(w.compare, cur.text),
        };
      continue;
    }
    const entry = old ?? {
      path: w.path,
      compare: w.compare,
      group: w.group,
      original: canon(w.compare, cur.text),
      applied: null,
      ...guardOf(w),
    };
    pending.push({ w, want, entry, from: cur.text });
  }
  if (dry) {
    r.changed = pending.map((p) => ({ key: p.w.key, from: p.from, to: p.want }));
    return r;
  }
  // Snapshot first: every original is on disk before any value changes.
  for (const p of pending) s.entries[p.w.key] = p.entry;
  saveState(o, s);
  for (const p of pending) writeOne(p, s, r, root);
  saveState(o, s);
  return r;
}

function writeOne(p: Pending, s: State, r: ApplyReport, root: string): void {
  const { w, want, entry } = p;
  const err = writeValue(root, w.path, want);
  const back = readValue(root, w.path);
  const got = 'text' in back ? back.text : null;
  if (err) {
    r.failed.push({ key: w.key, want, error: err });
    // Not changed: nothing of ours to restore (unless an earlier apply owned it).
    if (got !== null && sameValue(w.compare, got, entry.original) && entry.applied === null) delete s.entries[w.key];
    return;
  }
  if (got === null) {
    r.failed.push({ key: w.key, want, error: 'value unreadable after write' });
    return;
  }
  entry.applied = canon(w.compare, got);
  if (sameValue(w.compare, got, want)) r.changed.push({ key: w.key, from: p.from, to: want });
  else r.adjusted.push({ key: w.key, want, got });
}

// ---- restore and drift ----------------------------------------------------------------------

function restoreEntries(s: State, keys: string[], o: EngineOptions): RestoreReport {
  const root = o.root ?? '/';
  const r = emptyRestore();
  for (const key of keys) {
    const e = s.entries[key]!;
    // The record lives on a hostPath: validated before this privileged process writes anything from it.
    const foreign = foreignEntry(key, e, root);
    if (foreign) {
      r.refused.push({ key, path: String(e?.path), reason: foreign });
      delete s.entries[key];
      continue;
    }
    const cur = readValue(root, e.path, e.guard);
    if ('missing' in cur) {
      r.missing.push(key);
      delete s.entries[key];
      continue;
    }
    if ('error' in cur) {
      r.failed.push({ key, want: e.original, error: `read: ${cur.error}` });
      continue;
    }
    if (sameValue(e.compare, cur.text, e.original)) {
      r.restored.push({ key, from: cur.text, to: e.original });
      delete s.entries[key];
      continue;
    }
    const ours = e.applied === null || sameValue(e.compare, cur.text, e.applied);
    if (!ours && !o.overwriteDrift) {
      // Someone else set it after us: their value stands; we let go of the key.
      r.skippedDrift.push({ key, want: e.original, got: cur.text });
      delete s.entries[key];
      continue;
    }
    if (o.dryRun) {
      r.restored.push({ key, from: cur.text, to: e.original });
      continue;
    }
    const err = writeValue(root, e.path, e.original);
    const back = readValue(root, e.path);
    if (!err && 'text' in back && sameValue(e.compare, back.text, e.original)) {
      r.restored.push({ key, from: cur.text, to: e.original });
      delete s.entries[key];
    } else {
      r.failed.push({ key, want: e.original, error: err ?? `read back ${'text' in back ? back.text : 'nothing'}` });
    }
  }
  return r;
}

/** Restores every owned value (or those of one group); the state file is removed once empty. */
export function restoreAll(o: EngineOptions & { group?: Write['group'] }): RestoreReport {
  const s = loadState(o);
  const keys = Object.keys(s.entries).filter((k) => !o.group || s.entries[k]!.group === o.group);
  const r = restoreEntries(s, keys, o);
  if (!o.dryRun) saveState(o, s);
  return r;
}

/** Compares every owned value with what we applied. Read-only. */
export function checkOwnedDrift(o: EngineOptions): DriftReport {
  const s = loadState(o);
  const drift: Mismatch[] = [];
  for (const [key, e] of Object.entries(s.entries)) {
    if (e.applied === null) continue;
    const cur = readValue(o.root ?? '/', e.path, e.guard);
    const got = 'text' in cur ? cur.text : null;
    if (got === null || !sameValue(e.compare, got, e.applied)) drift.push({ key, want: e.applied, got });
  }
  return { checked: Object.keys(s.entries).length, drift };
}
