// Benchmark results → a Markdown table with ratios against HAProxy, and the machine's description.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';

export interface Row {
  path: string;
  iperf1?: number; // Gbit/s
  iperf4?: number; // Gbit/s
  connPerSec?: number;
  kaRps?: number;
  kaP99ms?: number;
  memPerConnKiB?: number;
}

interface Col {
  key: keyof Row;
  title: string;
  digits: number;
  higherIsBetter: boolean;
}

const COLS: Col[] = [
  { key: 'iperf1', title: 'iperf3 1 stream (Gbit/s)', digits: 2, higherIsBetter: true },
  { key: 'iperf4', title: 'iperf3 -P4 (Gbit/s)', digits: 2, higherIsBetter: true },
  { key: 'connPerSec', title: 'HTTP conn/s (close)', digits: 0, higherIsBetter: true },
  { key: 'kaRps', title: 'keep-alive req/s', digits: 0, higherIsBetter: true },
  { key: 'kaP99ms', title: 'keep-alive p99 (ms)', digits: 2, higherIsBetter: false },
  { key: 'memPerConnKiB', title: 'RSS per idle conn (KiB)', digits: 1, higherIsBetter: false },
];

const num = (v: unknown, digits: number) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '–');

/** The results table plus one row of ratios per non-HAProxy proxy: value / HAProxy's value. */
export function renderTable(rows: Row[], baseline = 'haproxy'): string {
  const head = `| path | ${COLS.map((c) => c.title).join(' | ')} |`;
  const sep = `|---|${COLS.map(() => '---:').join('|')}|`;
  const lines = rows.map((r) => `| ${r.path} | ${COLS.map((c) => num(r[c.key], c.digits)).join(' | ')} |`);
  const base = rows.find((r) => r.path === baseline);
  const ratios = base
    ? rows
        .filter((r) => r.path !== baseline && r.path !== 'direct')
        .map(
          (r) =>
            `| ratio ${r.path} / ${baseline} | ${COLS.map((c) => {
              const a = r[c.key],
                b = base[c.key];
              return typeof a === 'number' && typeof b === 'number' && b > 0 ? `${(a / b).toFixed(2)}×` : '–';
            }).join(' | ')} |`,
        )
    : [];
  return [head, sep, ...lines, ...ratios].join('\n');
}

/** First non-empty line a tool prints about its version (nginx writes it to stderr, wrk exits 1). */
function firstLine(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  return (
    `${r.stdout ?? ''}\n${r.stderr ?? ''}`
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l) ?? 'unknown'
  );
}

export function describeMachine(): string {
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  const distro = /PRETTY_NAME="(.*)"/.exec(
    existsSync('/etc/os-release') ? readFileSync('/etc/os-release', 'utf8') : '',
  )?.[1];
  return [
    `- ${distro ?? 'Linux'}, kernel ${os.release()}, ${os.availableParallelism()} vCPU (${cpu}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
    `- Node ${process.version}; ${firstLine(['haproxy', '-v']).replace(/ - https?:.*$/, '')}; ${firstLine(['nginx', '-v'])}; ${firstLine(['iperf3', '-v'])}; ${firstLine(['wrk', '-v'])}; ${firstLine(['nft', '-v'])}`,
    '- client, proxy, server and the kernel share the same CPUs: only ratios within one run mean anything.',
  ].join('\n');
}

/** Replaces (or appends) the section between the markers in docs/benchmarks.md. */
export function writeSection(file: string, id: string, body: string): void {
  const start = `<!-- bench:${id}:start -->`,
    end = `<!-- bench:${id}:end -->`;
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const block = `${start}\n${body.trim()}\n${end}`;
  const i = text.indexOf(start),
    j = text.indexOf(end);
  const next =
    i >= 0 && j > i ? text.slice(0, i) + block + text.slice(j + end.length) : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(file, next);
}
