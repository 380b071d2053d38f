// Helpers for the node agent's privileged tests: run the CLI inside a namespace, snapshot every
// place rules can live, and a tiny TCP tool (testdata/tcptool.py) for real traffic.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nsExec, nsSpawn, waitFor } from '../e2e/netns.ts';
import { run, type RunResult } from './run.ts';

export const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));
export const TOOL = fileURLToPath(new URL('./testdata/tcptool.py', import.meta.url));
export const HEAD = 'apiVersion: tpfleet.io/v1alpha1\nkind: NodeConfig\n';

/** Runs the agent CLI inside `ns`, as a DaemonSet pod would run it in the node's netns. */
export function agent(ns: string, args: string[]): Promise<RunResult> {
  return run(['ip', 'netns', 'exec', ns, process.execPath, '--import', 'tsx', MAIN, ...args]);
}

export function spawnAgent(ns: string, args: string[]): ChildProcess {
  return nsSpawn(ns, [process.execPath, '--import', 'tsx', MAIN, ...args]);
}

export interface Workdir {
  dir: string;
  stateDir: string;
  config(body: string, name?: string): string;
  remove(): void;
}

export function workdir(): Workdir {
  const dir = mkdtempSync(join(tmpdir(), 'tpfleet-agent-'));
  return {
    dir,
    stateDir: join(dir, 'state'),
    config(body, name = 'config.yaml') {
      const file = join(dir, name);
      writeFileSync(file, HEAD + body);
      return file;
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** iptables-save without the timestamp comments and counters, which change on their own. */
const stripSave = (text: string) =>
  text
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');

/**
 * Everything apply may change, as text: nft ruleset, iptables-nft and iptables-legacy (both
 * families), ip rules and our routing table. Two equal snapshots mean an identical host.
 */
export async function snapshot(ns: string, table = 2000): Promise<Record<string, string>> {
  const cmds: Record<string, string[]> = {
    'nft list ruleset': ['nft', 'list', 'ruleset'],
    'iptables-nft-save': ['iptables-nft-save'],
    'ip6tables-nft-save': ['ip6tables-nft-save'],
    'iptables-legacy-save': ['iptables-legacy-save'],
    'ip6tables-legacy-save': ['ip6tables-legacy-save'],
    'ip rule': ['ip', 'rule'],
    'ip -6 rule': ['ip', '-6', 'rule'],
    [`ip route show table ${table}`]: ['ip', 'route', 'show', 'table', String(table)],
    [`ip -6 route show table ${table}`]: ['ip', '-6', 'route', 'show', 'table', String(table)],
  };
  const out: Record<string, string> = {};
  for (const [name, argv] of Object.entries(cmds)) {
    const r = await run(['ip', 'netns', 'exec', ns, ...argv]);
    // A routing table never used makes ip exit 2 ("FIB table does not exist"): that is empty.
    out[name] = name.includes('save')
      ? stripSave(r.stdout)
      : r.stdout.replace(/counter packets \d+ bytes \d+/g, 'counter');
  }
  return out;
}

/** Connects from `ns` to host:port; returns the first line received or "ERR connect|read ...". */
export async function connect(ns: string, host: string, port: number, timeoutS = 1): Promise<string> {
  return (await nsExec(ns, ['python3', TOOL, 'connect', host, String(port), String(timeoutS)])).trim();
}

/** One UDP datagram to host:port from `ns`: "<reply> from <ip> <port>", or "ERR ..." when none came. */
export async function ask(ns: string, host: string, port: number, timeoutS = 1): Promise<string> {
  return (await nsExec(ns, ['python3', TOOL, 'ask', host, String(port), String(timeoutS)])).trim();
}

/** Starts a tcptool process in `ns` and waits for its "ready" line. */
export async function startTool(ns: string, args: string[]): Promise<ChildProcess> {
  const p = nsSpawn(ns, ['python3', TOOL, ...args]);
  let out = '';
  p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  // 15 s: Python starts in well under a second, but not on 2 cores shared with other test runs.
  await waitFor(
    `tcptool ${args.join(' ')} ready`,
    async () => {
      if (p.exitCode !== null) throw new Error(`tcptool exited: ${out}`);
      return out.includes('ready');
    },
    15_000,
  ).catch(async (e: unknown) => {
    await stop(p); // never outlives a failed start (it kept the test runner alive)
    throw e;
  });
  return p;
}

/** Kills a child and waits for it to be gone (SIGKILL: also works on a SIGSTOPped process). */
export async function stop(p: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill(signal);
  await gone;
}

/** Collects pino JSON lines from a child's stderr. */
export function logLines(p: ChildProcess): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  let buf = '';
  p.stderr?.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ raw: line });
      }
    }
  });
  return lines;
}

/**
 * The first IPv6 packet across a fresh topology waits about 1 s for neighbour discovery; warm
 * both families up (against a plain server port, before any rule exists) so later timeouts only
 * measure the rules.
 */
export async function warmUp(clientNs: string, hosts: string[], port: number): Promise<void> {
  for (const h of hosts) {
    const r = await connect(clientNs, h, port, 5);
    if (!r.startsWith('SERVER')) throw new Error(`warm-up to ${h}:${port} failed: ${r}`);
  }
}
