// Long-running processes inside network namespaces (servers, proxies), with readiness and clean stop,
// and the project's own components (node agent, sidecar, peer tool) started the way users start them.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { DEFAULTS } from '../api/defaults.ts';
import { nsExec, nsSpawn, waitFor } from './netns.ts';
import { errorMessage } from '../api/errors.ts';

export const REPO = path.resolve(import.meta.dirname, '..');
/** argv prefix that runs a TypeScript file of this repo with the current Node and tsx. */
export const tsNode = (file: string): string[] => [process.execPath, '--import', 'tsx', path.join(REPO, file)];

export interface Proc {
  child: ChildProcess;
  /** Everything the process printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM, then SIGKILL after graceMs; resolves with the exit code (or signal name). */
  stop(graceMs?: number): Promise<number | string>;
}

export async function startInNs(
  ns: string,
  argv: string[],
  opts: { ready?: RegExp; readyTimeoutMs?: number } = {},
): Promise<Proc> {
  const child = nsSpawn(ns, argv, { cwd: REPO });
  let buf = '';
  child.stdout?.on('data', (d) => (buf += d));
  child.stderr?.on('data', (d) => (buf += d));
  const exited = new Promise<number | string>((res) => child.on('exit', (code, sig) => res(code ?? sig ?? -1)));
  const proc: Proc = {
    child,
    output: () => buf,
    stop: async (graceMs = 5000) => {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
  if (opts.ready) {
    const re = opts.ready;
    let gone = false;
    void exited.then(() => (gone = true));
    try {
      await waitFor(
        `${argv.slice(0, 4).join(' ')} to print ${re}`,
        async () => {
          if (gone) throw new Error('exited');
          return re.test(buf);
        },
        opts.readyTimeoutMs ?? 15_000,
      );
    } catch (e) {
      await proc.stop(500);
      throw new Error(`${errorMessage(e)}; exit=${child.exitCode}; output:\n${buf.slice(-2000)}`, { cause: e });
    }
  }
  return proc;
}

/** A scratch directory for config and state files, removed by the returned function. */
export function scratch(name: string): { dir: string; file(n: string, content: string): string; remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), `tpfleet-${name}-`));
  return {
    dir,
    file: (n, content) => {
      const p = path.join(dir, n);
      writeFileSync(p, content);
      return p;
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export function nodeConfigYaml(doc: { interception?: object; proxy?: object }): string {
  return stringify({ apiVersion: 'tpfleet.io/v1alpha1', kind: 'NodeConfig', ...doc });
}

/** The node agent CLI in namespace `ns` (as the DaemonSet's init/watch containers run it). */
export function agent(
  ns: string,
  cmd: 'apply' | 'cleanup' | 'plan',
  configPath: string,
  stateDir: string,
  extra: string[] = [],
) {
  return nsExec(ns, [...tsNode('daemonset/main.ts'), cmd, '--config', configPath, '--state-dir', stateDir, ...extra]);
}

export function startWatchdog(ns: string, configPath: string, stateDir: string): Promise<Proc> {
  return startInNs(ns, [...tsNode('daemonset/main.ts'), 'watch', '--config', configPath, '--state-dir', stateDir]);
}

/** The sidecar in namespace `ns`; resolves once its /readyz answers 200 (as the kubelet would check). */
export async function startSidecar(
  ns: string,
  configPath: string,
  metricsPort: number = DEFAULTS.proxy.metricsPort,
): Promise<Proc> {
  const proc = await startInNs(ns, [...tsNode('sidecar/main.ts'), '--config', configPath]);
  try {
    await waitFor(
      'the sidecar to be ready',
      async () => {
        if (proc.child.exitCode !== null) throw new Error('exited');
        return (await httpStatus(ns, metricsPort, '/readyz')) === 200;
      },
      20_000,
      100,
    );
  } catch (e) {
    await proc.stop(500);
    throw new Error(`${errorMessage(e)}; output:\n${proc.output().slice(-2000)}`, { cause: e });
  }
  return proc;
}

/** HTTP status of GET 127.0.0.1:port/path inside namespace `ns` (0 when nothing answers). */
export async function httpStatus(ns: string, port: number, urlPath: string): Promise<number> {
  const out = await nsExec(ns, [
    process.execPath,
    '-e',
    `fetch('http://127.0.0.1:${port}${urlPath}', { signal: AbortSignal.timeout(1000) }).then((r) => console.log(r.status), () => console.log(0))`,
  ]);
  return Number(out.trim());
}

export function startPeerServer(ns: string, listen: string[], mode: 'report' | 'hold' = 'report'): Promise<Proc> {
  const last = listen[listen.length - 1]!.replace(/[[\]]/g, '\\$&');
  return startInNs(ns, [...tsNode('e2e/tools/peer.ts'), 'serve', '--listen', listen.join(','), '--mode', mode], {
    ready: new RegExp(`"listening":"${last}"`),
  });
}

/** Runs a peer client command in `ns` and returns its JSON result line. */
export async function peer(ns: string, args: string[]): Promise<Record<string, unknown>> {
  const out = await nsExec(ns, [...tsNode('e2e/tools/peer.ts'), ...args]);
  const line = out.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as Record<string, unknown>;
}

/** Fetches the sidecar's /metrics from inside its namespace and returns the sample values by series. */
export async function scrape(ns: string, port: number): Promise<Map<string, number>> {
  const text = await nsExec(ns, [
    process.execPath,
    '-e',
    `fetch('http://127.0.0.1:${port}/metrics').then(r => r.text()).then(t => process.stdout.write(t))`,
  ]);
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}
