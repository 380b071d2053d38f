// The janitor's decisions over a real state root: which directories are orphans, that a failed
// LIST does nothing, that only owner-shaped directories are considered, and the scan-then-list order.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { janitorPass, orphans, ownerDirs } from './janitor.ts';

const log = pino({ level: 'silent' });

function root(dirs: string[]): string {
  const r = mkdtempSync(join(tmpdir(), 'tpfleet-janitor-'));
  for (const d of dirs) {
    mkdirSync(join(r, d));
    writeFileSync(join(r, d, 'state.json'), '{}');
  }
  return r;
}

test('owner directories are <namespace>.<name>; anything else under the root is not ours', () => {
  const r = root(['fleet.web', 'team-a.egress', 'Bad.Name', 'noowner', 'a.b.c']);
  writeFileSync(join(r, 'x.y'), 'a file, not a directory');
  try {
    assert.deepEqual(ownerDirs(r), ['fleet.web', 'team-a.egress']);
    assert.deepEqual(ownerDirs(join(r, 'missing')), []);
    assert.deepEqual(orphans(['fleet.web', 'team-a.egress'], new Set(['fleet.web'])), ['team-a.egress']);
  } finally {
    rmSync(r, { recursive: true, force: true });
  }
});

test('a pass cleans exactly the directories whose TransparentProxy is gone; the directories stay', async () => {
  const r = root(['fleet.web', 'gone.web', 'gone.other']);
  const cleaned: string[] = [];
  try {
    const done = await janitorPass({
      root: r,
      liveOwners: async () => new Set(['fleet.web']),
      clean: async (dir) => {
        rmSync(join(dir, 'state.json'));
        cleaned.push(dir);
      },
      log,
    });
    assert.deepEqual(done, ['gone.other', 'gone.web']);
    assert.deepEqual(cleaned, [join(r, 'gone.other'), join(r, 'gone.web')]);
    // A pod of a new object of that name may have mounted it already (hostPath): only the state goes.
    assert.equal(existsSync(join(r, 'gone.web')), true);
    assert.equal(existsSync(join(r, 'gone.web', 'state.json')), false);
    assert.equal(existsSync(join(r, 'fleet.web', 'state.json')), true, 'a live owner is never touched');
  } finally {
    rmSync(r, { recursive: true, force: true });
  }
});

test('when the API cannot say who is live, nothing is cleaned; a failed cleanup is retried next pass', async () => {
  const r = root(['gone.web']);
  try {
    const cleaned: string[] = [];
    const none = await janitorPass({
      root: r,
      liveOwners: async () => {
        throw new Error('503');
      },
      clean: async (d) => void cleaned.push(d),
      log,
    });
    assert.deepEqual([none, cleaned], [[], []]);
    const failed = await janitorPass({
      root: r,
      liveOwners: async () => new Set(),
      clean: async () => {
        throw new Error('nft: busy');
      },
      log,
    });
    assert.deepEqual(failed, []);
    assert.equal(existsSync(join(r, 'gone.web', 'state.json')), true, 'kept for the next pass');
  } finally {
    rmSync(r, { recursive: true, force: true });
  }
});

test('directories are listed before the owners: an object created meanwhile is live in the list', async () => {
  const r = root([]);
  try {
    const order: string[] = [];
    await janitorPass({
      root: r,
      liveOwners: async () => {
        order.push('list');
        return new Set();
      },
      clean: async () => undefined,
      log,
    });
    assert.deepEqual(order, [], 'no directory: no LIST at all (idle nodes cost the API nothing)');
    mkdirSync(join(r, 'fleet.empty'));
    let lists = 0;
    await janitorPass({
      root: r,
      liveOwners: async () => {
        lists++;
        return new Set();
      },
      clean: async () => undefined,
      log,
    });
    assert.equal(lists, 0, 'an empty directory (a hostPath left behind) has no state: no LIST either');
    mkdirSync(join(r, 'fleet.new'));
    writeFileSync(join(r, 'fleet.new', 'state.json'), '{}');
    const done = await janitorPass({
      root: r,
      liveOwners: async () => {
        // The object's pod created its directory before this LIST: the LIST names it.
        mkdirSync(join(r, 'fleet.later'));
        return new Set(['fleet.new', 'fleet.later']);
      },
      clean: async () => undefined,
      log,
    });
    assert.deepEqual(done, []);
    assert.equal(existsSync(join(r, 'fleet.later')), true, 'a directory made after the scan waits for the next pass');
  } finally {
    rmSync(r, { recursive: true, force: true });
  }
});

test('an owner whose /run directory is gone but whose state copy remains is cleaned too', async () => {
  const r = root([]);
  const copies = root(['gone.web', 'fleet.web']);
  try {
    const seen: [string, string | undefined][] = [];
    const done = await janitorPass({
      root: r,
      copyRoot: copies,
      liveOwners: async () => new Set(['fleet.web']),
      clean: async (dir, copy) => {
        seen.push([dir, copy]);
        rmSync(join(copy!, 'state.json'));
      },
      log,
    });
    assert.deepEqual(done, ['gone.web']);
    assert.deepEqual(seen, [[join(r, 'gone.web'), join(copies, 'gone.web')]]);
    assert.equal(existsSync(join(copies, 'gone.web', 'state.json')), false);
    assert.equal(existsSync(join(copies, 'fleet.web')), true);
  } finally {
    rmSync(r, { recursive: true, force: true });
    rmSync(copies, { recursive: true, force: true });
  }
});

test('each orphan is cleaned holding its lock, after a second LIST: an object created meanwhile is kept', async () => {
  const r = root(['gone.web', 'fleet.new']);
  try {
    const events: string[] = [];
    let lists = 0;
    const done = await janitorPass({
      root: r,
      // First LIST: neither is live. Second and later: fleet.new was created during the pass.
      liveOwners: async () => (lists++ === 0 ? new Set() : new Set(['fleet.new'])),
      markedOwners: async () => ['marked.only'],
      lock: async (dir, fn) => {
        events.push(`lock ${dir.slice(r.length + 1)}`);
        const v = await fn();
        events.push(`unlock ${dir.slice(r.length + 1)}`);
        return v;
      },
      clean: async (_dir, _copy, owner) => void events.push(`clean ${owner}`),
      log,
    });
    assert.deepEqual(done, ['gone.web', 'marked.only']);
    assert.deepEqual(events, [
      'lock fleet.new',
      'unlock fleet.new',
      'lock gone.web',
      'clean gone.web',
      'unlock gone.web',
      'lock marked.only',
      'clean marked.only',
      'unlock marked.only',
    ]);
  } finally {
    rmSync(r, { recursive: true, force: true });
  }
});
