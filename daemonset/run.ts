// The only place the node agent starts external programs. Every command is an argv array (never a
// shell string); rule documents travel on stdin. Nothing here interprets the output.
import { spawn } from 'node:child_process';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export type Argv = readonly string[];

/** Runs argv to completion; never throws for a non-zero exit (callers decide what a failure means). */
export function run(argv: Argv, input?: string): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (!cmd) return Promise.reject(new Error('empty argv'));
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    // A missing binary surfaces as 'error' (ENOENT); report it like a failed command.
    p.on('error', (e) => resolve({ code: 127, stdout, stderr: stderr + e.message }));
    p.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    if (input !== undefined) p.stdin?.end(input);
  });
}

export class CommandError extends Error {
  constructor(
    readonly argv: Argv,
    readonly result: RunResult,
  ) {
    super(`${argv.join(' ')} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
    this.name = 'CommandError';
  }
}

/** Runs argv and returns stdout; throws CommandError on a non-zero exit. */
export async function runOk(argv: Argv, input?: string): Promise<string> {
  const r = await run(argv, input);
  if (r.code !== 0) throw new CommandError(argv, r);
  return r.stdout;
}
