// The lock that serializes a janitor pass and an apply or cleanup on one owner's state directory
// (ADR 0015): flock(2) on the directory itself, which the pod sees as its --state-dir and the janitor
// as <root>/<namespace>.<name> (the same inode through the hostPath). Node has no flock(2), so
// util-linux's `flock` holds it for us: `flock -x -w T DIR sh -c 'echo locked && exec cat'` with
// stdin a pipe holds the lock once "locked" arrives (flock's own --verbose output is buffered until
// it exits when stdout is a pipe: measured); closing that stdin (or this process dying, which closes
// the pipe) ends `cat`, `flock` exits and the lock is released. Nothing outlives its holder. The shell
// string is a constant; the directory is an argv element of flock.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import type { Logger } from 'pino';

/** How long an apply, a cleanup or the janitor waits for the lock (one cleanup takes a few seconds). */
export const LOCK_TIMEOUT_S = 120;

/** What runs while the lock is held: says so, then waits for stdin to close. */
const HOLD = 'echo locked && exec cat';

interface Holder {
  release(): Promise<void>;
}

function take(dir: string, wait: boolean, timeoutS: number): Promise<Holder | undefined> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      'flock',
      ['--exclusive', ...(wait ? ['--timeout', String(timeoutS)] : ['--nonblock']), dir, 'sh', '-c', HOLD],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let err = '',
      held = false;
    const exited = new Promise<void>((r) => p.once('close', () => r()));
    let out = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!held && out.startsWith('locked\n')) {
        held = true;
        resolve({
          release: async () => {
            p.stdin.end();
            await exited;
          },
        });
      }
    });
    p.on('error', (e) => reject(new Error(`flock: ${e.message} (util-linux flock is needed for the state lock)`)));
    p.on('close', (code) => {
      if (held) return;
      // flock exits 1 when the lock is busy (--nonblock) or the timeout passed.
      if (code === 1) resolve(undefined);
      else reject(new Error(`flock ${dir} exited ${code}: ${err.trim()}`));
    });
  });
}

/**
 * Runs `fn` holding the lock of the state directory `dir` (created when absent); waits at most
 * `timeoutS` for it, then throws. Logs once when it has to wait.
 */
export async function withStateLock<T>(
  dir: string,
  log: Logger,
  fn: () => Promise<T>,
  timeoutS = LOCK_TIMEOUT_S,
): Promise<T> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  let h = await take(dir, false, 0);
  if (!h) {
    log.info({ dir }, 'waiting for the state directory lock (a janitor pass or an apply on this owner)');
    h = await take(dir, true, timeoutS);
    if (!h) throw new Error(`the state directory lock of ${dir} was not free within ${timeoutS} s`);
  }
  try {
    return await fn();
  } finally {
    await h.release();
  }
}
