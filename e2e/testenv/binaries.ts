// Locates (and on first use builds) the real kube-apiserver and etcd binaries. The build is
// tools/k8s/build.sh: Go modules pinned in tools/k8s/go.mod, cached by Kubernetes version under
// $TPFLEET_CACHE (default ~/.cache/tpfleet). A failed build throws: tests that need the API
// server fail loudly instead of skipping.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

const repoRoot = join(import.meta.dirname, '..', '..');
const toolsDir = join(repoRoot, 'tools', 'k8s');

export function k8sVersion(): string {
  const m = /^K8S_VERSION=(v[0-9.]+)\s*$/m.exec(readFileSync(join(toolsDir, 'versions.env'), 'utf8'));
  if (!m?.[1]) throw new Error('tools/k8s/versions.env: K8S_VERSION missing');
  return m[1];
}

export function binDir(cache = process.env.TPFLEET_CACHE ?? join(homedir(), '.cache', 'tpfleet')): string {
  return join(cache, `k8s-${k8sVersion()}`, 'bin');
}

/**
 * A sibling tools module (tools/k8s/<name>/go.mod) whose go.mod changed since the binary was
 * built (build.sh keeps a copy as <name>.gomod): its version was bumped, so rebuild.
 */
function staleSibling(dir: string, name: string): boolean {
  // A `module` file names the sibling whose go.mod this tool builds from (tools/k8s/build.sh).
  const redirect = join(toolsDir, name, 'module');
  const modDir = existsSync(redirect) ? readFileSync(redirect, 'utf8').trim() : name;
  const mod = join(toolsDir, modDir, 'go.mod');
  if (!existsSync(mod)) return false;
  // build.sh's stamp: go.mod, then `tags=<line>` when the tool has a `tags` file (Prometheus).
  const tagsFile = join(toolsDir, name, 'tags');
  const tags = existsSync(tagsFile) ? readFileSync(tagsFile, 'utf8').replace(/\s/g, '') : '';
  const want = readFileSync(mod, 'utf8') + (tags ? `tags=${tags}\n` : '');
  const stamp = join(dir, `${name}.gomod`);
  return !existsSync(stamp) || readFileSync(stamp, 'utf8') !== want;
}

/** Those of `names` that are not built yet, or whose pinned module changed since they were. */
export function missingBinaries(names: readonly string[], dir = binDir()): string[] {
  return names.filter((n) => !existsSync(join(dir, n)) || staleSibling(dir, n));
}

/** Returns the bin directory holding every requested binary, building the missing ones. */
export async function ensureBinaries(names: readonly string[] = ['kube-apiserver', 'etcd']): Promise<string> {
  const dir = binDir();
  const missing = missingBinaries(names, dir);
  if (missing.length === 0) return dir;
  process.stderr.write(`testenv: building ${missing.join(', ')} (first run only; cached in ${dir})\n`);
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn('bash', [join(toolsDir, 'build.sh'), ...missing], { stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (c) => resolve(c));
  });
  const still = missingBinaries(names, dir);
  if (code !== 0 || still.length > 0) {
    throw new Error(
      `testenv: tools/k8s/build.sh ${missing.join(' ')} failed (exit ${code}); missing ${still.join(', ')}`,
    );
  }
  return dir;
}
