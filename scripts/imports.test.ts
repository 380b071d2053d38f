// The repo's dependency rules, checked on every import of every TypeScript file (static, dynamic,
// type-only and re-exports, as TypeScript's own pre-processor reads them):
//  - no import cycle, between any two files;
//  - api/ (the contract) imports nothing of ours but api/; the shared modules kube/ and host/
//    import api/ and themselves; each binary (operator/, daemonset/ = the node agent, sidecar/,
//    plugin/ = kubectl-tpfleet) imports only itself, api/ and the shared modules, never another binary;
//  - images/ (the image build the tests call) imports nothing of ours outside images/;
//  - product code never imports test code: e2e/, *.test.ts, *.testkit.ts, testdata/.
// e2e/ and scripts/ are tests and tooling: they may import anything (without cycles).
// And the image build context (.dockerignore) lets in every file the three binaries import.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';

const ROOT = join(import.meta.dirname, '..');
const SKIP_DIRS = new Set(['node_modules', '.git', 'build']);

const BINARIES = new Set(['operator', 'daemonset', 'sidecar', 'plugin']);
const SHARED = new Set(['kube', 'host']);
/** What each guarded top-level folder may import besides itself. */
const ALLOWED: Record<string, ReadonlySet<string>> = {
  api: new Set(),
  kube: new Set(['api']),
  host: new Set(['api']),
  images: new Set(),
  ...Object.fromEntries([...BINARIES].map((b) => [b, new Set(['api', ...SHARED])])),
};

export type Graph = ReadonlyMap<string, readonly string[]>;

const top = (file: string) => file.split('/')[0] ?? '';
const isTestCode = (file: string) =>
  top(file) === 'e2e' || /\.test\.ts$|\.testkit\.ts$/.test(file) || file.split('/').includes('testdata');

/** Every .ts file below `root` (repo-relative) with the repo files it imports. */
export function importGraph(root: string): Graph {
  const graph = new Map<string, string[]>();
  const walk = (dir: string) => {
    for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
      const path = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory() && !SKIP_DIRS.has(e.name)) walk(path);
      else if (e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
        graph.set(path, importsOf(root, path));
    }
  };
  walk('');
  return graph;
}

function importsOf(root: string, file: string): string[] {
  const info = ts.preProcessFile(readFileSync(join(root, file), 'utf8'), true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((s) => s.startsWith('./') || s.startsWith('../'))
    .map((s) => normalize(join(dirname(file), s)));
}

/** Each cycle once, as the list of files around it (Tarjan's strongly connected components). */
export function cycles(graph: Graph): string[][] {
  const index = new Map<string, number>(),
    low = new Map<string, number>(),
    stack: string[] = [],
    on = new Set<string>();
  const out: string[][] = [];
  let next = 0;
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc: string[] = [];
    for (let w = stack.pop()!; ; w = stack.pop()!) {
      on.delete(w);
      scc.push(w);
      if (w === v) break;
    }
    if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc.sort());
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return out.sort((a, b) => a[0]!.localeCompare(b[0]!));
}

/** Every import that breaks a folder rule, as "from -> to: why". */
export function ruleViolations(graph: Graph): string[] {
  const out: string[] = [];
  for (const [from, targets] of graph) {
    const allowed = ALLOWED[top(from)];
    if (!allowed) continue; // e2e/, scripts/: tests and tooling
    for (const to of targets) {
      const t = top(to);
      if (t !== top(from) && !allowed.has(t) && !(isTestCode(from) && t === 'e2e')) {
        out.push(`${from} -> ${to}: ${top(from)}/ may import only ${[top(from), ...allowed].join('/, ')}/`);
      } else if (!isTestCode(from) && isTestCode(to)) {
        out.push(`${from} -> ${to}: product code imports test code`);
      }
    }
  }
  return out.sort();
}

test('no import cycles anywhere in the repo', () => {
  const graph = importGraph(ROOT);
  assert.ok(graph.size > 100, `found only ${graph.size} files under ${relative(process.cwd(), ROOT) || '.'}`);
  assert.deepEqual(
    cycles(graph).map((c) => c.join(' <-> ')),
    [],
  );
});

test('each binary imports only itself, api/ and the shared modules; product code never imports tests', () => {
  assert.deepEqual(ruleViolations(importGraph(ROOT)), []);
});

/** Files reachable by imports from `entries`, the entries included. */
export function reachable(graph: Graph, entries: readonly string[]): Set<string> {
  const seen = new Set<string>();
  const visit = (f: string) => {
    if (seen.has(f)) return;
    seen.add(f);
    for (const t of graph.get(f) ?? []) visit(t);
  };
  for (const e of entries) visit(e);
  return seen;
}

test('the image build context (.dockerignore allowlist) holds every folder the binaries import', () => {
  // The images run the binaries from source: a shared module left out of the context is a
  // module-not-found at the container's start, which only the image tests would see.
  const allowed = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('!'))
    .map((l) => l.slice(1).trim());
  const inContext = (f: string) => allowed.some((a) => f === a || f.startsWith(`${a}/`));
  const entries = ['operator/main.ts', 'daemonset/main.ts', 'sidecar/main.ts'];
  const missing = [...reachable(importGraph(ROOT), entries)].filter((f) => !inContext(f)).sort();
  assert.deepEqual(missing, [], `imported by the binaries but outside the image build context`);
});

test('the checks fail on a cycle, a cross-binary import and product code importing test code', () => {
  const g: Graph = new Map([
    ['operator/a.ts', ['operator/b.ts', 'daemonset/x.ts', 'e2e/netns.ts', 'kube/client.ts']],
    ['operator/b.ts', ['operator/a.ts']],
    ['operator/a.test.ts', ['e2e/netns.ts', 'operator/a.ts', 'operator/c.testkit.ts']],
    ['operator/c.testkit.ts', ['e2e/netns.ts']],
    ['sidecar/main.ts', ['host/facts.ts', 'sidecar/x.testkit.ts', 'daemonset/tuning/testdata/t.ts']],
    ['api/x.ts', ['kube/client.ts']],
    ['images/images.ts', ['e2e/cluster/provider.ts']],
    ['host/facts.ts', ['host/facts.ts']],
    ['e2e/netns.ts', ['daemonset/x.ts', 'host/facts.ts']],
  ]);
  assert.deepEqual(cycles(g), [['host/facts.ts'], ['operator/a.ts', 'operator/b.ts']]);
  assert.deepEqual(ruleViolations(g), [
    'api/x.ts -> kube/client.ts: api/ may import only api/',
    'images/images.ts -> e2e/cluster/provider.ts: images/ may import only images/',
    'operator/a.ts -> daemonset/x.ts: operator/ may import only operator/, api/, kube/, host/',
    'operator/a.ts -> e2e/netns.ts: operator/ may import only operator/, api/, kube/, host/',
    'sidecar/main.ts -> daemonset/tuning/testdata/t.ts: sidecar/ may import only sidecar/, api/, kube/, host/',
    'sidecar/main.ts -> sidecar/x.testkit.ts: product code imports test code',
  ]);
});
