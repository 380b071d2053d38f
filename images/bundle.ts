// Compiles each entrypoint into one JavaScript file (esbuild) for the images: the operator, the node
// agent and the sidecar run these with plain `node`, not tsx (no TypeScript compiler at start-up, no
// node_modules in the image). tsx stays for tests and `npm run`.
//   node images/bundle.ts [OUTDIR]     default dist/ ; prints one line per bundle with its size
// Written with erasable TypeScript only, so Node runs it without a loader.
import { build } from 'esbuild';
import { statSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..');
export const ENTRYPOINTS: Record<string, string> = {
  'tpfleet-operator': 'operator/main.ts',
  'tpfleet-agent': 'daemonset/main.ts',
  'tpfleet-sidecar': 'sidecar/main.ts',
};

export async function bundle(outdir: string): Promise<string[]> {
  const lines: string[] = [];
  for (const [name, entry] of Object.entries(ENTRYPOINTS)) {
    const outfile = path.join(outdir, `${name}.mjs`);
    await build({
      entryPoints: [path.join(ROOT, entry)],
      outfile,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node22',
      logLevel: 'warning',
      legalComments: 'none',
      // CommonJS dependencies (pino, yaml, prom-client) call require() for Node's built-ins; an ESM
      // bundle has no require unless it makes one.
      banner: {
        js: "import { createRequire as __tpfleetRequire } from 'node:module'; const require = __tpfleetRequire(import.meta.url);",
      },
    });
    lines.push(`${outfile}\t${statSync(outfile).size}`);
  }
  return lines;
}

if (import.meta.filename === process.argv[1]) {
  for (const l of await bundle(path.resolve(process.argv[2] ?? path.join(ROOT, 'dist')))) console.log(l);
}
