// Load generators (iperf3, wrk) run in the client namespace, and pure parsers of their output.
import { readdirSync, readFileSync } from 'node:fs';
import { nsExec } from '../netns.ts';

/** iperf3 -J output → received throughput in Gbit/s. */
export function parseIperf3(json: string): number {
  const r = JSON.parse(json) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
  if (r.error) throw new Error(`iperf3: ${r.error}`);
  const bps = r.end?.sum_received?.bits_per_second;
  if (typeof bps !== 'number') throw new Error('iperf3: no sum_received in output');
  return bps / 1e9;
}

export interface WrkResult {
  rps: number;
  p99ms: number;
  errors: number;
  requests: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

/** wrk --latency text output → requests/s, p99 latency (ms), socket errors + non-2xx responses. */
export function parseWrk(text: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(text);
  const total = /(\d+) requests in/.exec(text);
  if (!rps || !total) throw new Error(`wrk: cannot parse output:\n${text}`);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const errors = (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return {
    rps: Number(rps[1]),
    p99ms: p99 ? Number(p99[1]) * (UNIT_MS[p99[2] ?? 'ms'] ?? 1) : NaN,
    errors,
    requests: Number(total[1]),
  };
}

export async function iperf3(ns: string, server: string, streams: number, seconds: number): Promise<number> {
  const out = await nsExec(ns, ['iperf3', '-J', '-c', server, '-P', String(streams), '-t', String(seconds)], {
    allowFail: true,
  });
  return parseIperf3(out || '{"error":"iperf3 failed"}');
}

export async function wrk(ns: string, url: string, seconds: number, close: boolean): Promise<WrkResult> {
  const argv = ['wrk', '-t2', '-c64', `-d${seconds}s`, '--latency'];
  if (close) argv.push('-H', 'Connection: close');
  return parseWrk(await nsExec(ns, [...argv, url]));
}

/** Resident set size of a process and all its descendants, in bytes (from /proc). */
export function treeRss(pid: number): number {
  let total = 0;
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop()!;
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      total += Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
      for (const tid of readdirSync(`/proc/${p}/task`)) {
        // children are listed per forking thread
        const kids = readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8').trim();
        if (kids) stack.push(...kids.split(/\s+/).map(Number));
      }
    } catch {
      // the process went away while we walked the tree: it has no memory to count
    }
  }
  return total;
}
