// `npm run build:plugin [OUTFILE]`: bundles plugin/main.ts with its dependencies (kube/, api/,
// @kubernetes/client-node, yaml, zod) into one executable file for `kubectl tpfleet`
// (default dist/kubectl-tpfleet). It needs only Node >= 22 on the user's PATH; put it on the PATH
// too and kubectl finds it (docs/kubectl-plugin.md).
import { build } from 'esbuild';
import { chmodSync, statSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..');

export async function buildPlugin(outfile: string): Promise<number> {
  await build({
    entryPoints: [path.join(ROOT, 'plugin', 'main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    logLevel: 'warning',
    legalComments: 'none',
    // A shebang so the file runs on its own, and a require() for the CommonJS dependencies that
    // load Node's built-ins with it (as images/bundle.ts does).
    banner: {
      js: "#!/usr/bin/env node\nimport { createRequire as __tpfleetRequire } from 'node:module'; const require = __tpfleetRequire(import.meta.url);",
    },
  });
  chmodSync(outfile, 0o755);
  return statSync(outfile).size;
}

if (import.meta.filename === process.argv[1]) {
  const out = path.resolve(process.argv[2] ?? path.join(ROOT, 'dist', 'kubectl-tpfleet'));
  console.log(`${out}\t${await buildPlugin(out)}`);
}
