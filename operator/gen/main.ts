// `npm run gen`: writes crds/*.yaml from the zod API, and the same files into the Helm chart's
// crds/ when the chart exists. Files that no longer correspond to a CRD are removed.
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderCrdFiles } from './crd.ts';

const root = join(import.meta.dirname, '..', '..');
const targets = [join(root, 'crds')];
if (existsSync(join(root, 'charts', 'tpfleet', 'Chart.yaml'))) targets.push(join(root, 'charts', 'tpfleet', 'crds'));

const files = renderCrdFiles();
for (const dir of targets) {
  mkdirSync(dir, { recursive: true });
  for (const old of readdirSync(dir)) if (old.endsWith('.yaml') && !files.has(old)) rmSync(join(dir, old));
  for (const [name, text] of files) writeFileSync(join(dir, name), text);
  console.log(`gen: wrote ${files.size} CRD file(s) to ${dir}`);
}
