// The suite's only ways to touch a cluster: the real kubectl and helm (same pinned releases the
// repo builds), as argv arrays against the cluster's kubeconfig, and one polling helper.
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { ensureBinaries } from '../testenv/binaries.ts';
import type { Cluster } from './provider.ts';
import { errorMessage } from '../../api/errors.ts';

function run(bin: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(bin, args, { maxBuffer: 64 << 20, timeout: 300_000 }, (err, stdout, stderr) =>
      err
        ? reject(new Error(`${bin.split('/').pop()} ${args.join(' ')}: ${(stderr || err.message).trim()}`))
        : resolve(stdout),
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

export async function kubectl(
  c: Pick<Cluster, 'kubeconfigPath'>,
  args: readonly string[],
  input?: string,
): Promise<string> {
  const bin = await ensureBinaries(['kubectl']);
  return run(join(bin, 'kubectl'), ['--kubeconfig', c.kubeconfigPath, ...args], input);
}

export async function kubectlJson<T = Record<string, any>>(
  c: Pick<Cluster, 'kubeconfigPath'>,
  args: readonly string[],
): Promise<T> {
  return JSON.parse(await kubectl(c, [...args, '-o', 'json'])) as T;
}

/**
 * `kubectl <args> --watch`, collecting its output lines as they come: one per change of a watched
 * object, in the API server's order (resourceVersion), which polling cannot show for changes a
 * few milliseconds apart. stop() ends kubectl and returns every line seen; stamped() gives each
 * complete line with its arrival time (Date.now()), for latencies between two watches.
 */
export async function watchLines(
  c: Pick<Cluster, 'kubeconfigPath'>,
  args: readonly string[],
): Promise<{ lines(): string[]; stamped(): { at: number; line: string }[]; stop(): string[] }> {
  const bin = await ensureBinaries(['kubectl']);
  const child = spawn(join(bin, 'kubectl'), ['--kubeconfig', c.kubeconfigPath, ...args, '--watch'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let text = '';
  const arrived: { at: number; line: string }[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    const at = Date.now();
    const done = text.lastIndexOf('\n') + 1;
    text += d;
    for (const line of text.slice(done).split('\n').slice(0, -1)) if (line) arrived.push({ at, line });
  });
  const lines = () => text.split('\n').filter(Boolean);
  return {
    lines,
    stamped: () => [...arrived],
    stop: () => {
      child.kill();
      return lines();
    },
  };
}

export async function helm(c: Pick<Cluster, 'kubeconfigPath'>, args: readonly string[]): Promise<string> {
  const bin = await ensureBinaries(['helm']);
  return run(join(bin, 'helm'), ['--kubeconfig', c.kubeconfigPath, ...args]);
}

/**
 * Polls `probe` until it returns a value other than undefined, or fails naming `what` and the
 * last observation (so a timeout says what the cluster looked like, not just "timed out").
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  everyMs = 500,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = 'nothing observed yet';
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = errorMessage(e);
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}; last: ${typeof last === 'string' ? last : JSON.stringify(last)}`,
      );
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
