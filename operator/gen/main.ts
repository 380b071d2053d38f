// `npm run gen`: writes crds/*.yaml from the zod API, and the same files into the Helm chart's
// crds/ when the chart exists. Files that no longer correspond to a CRD are removed. For the chart
// it also writes values.schema.json (from api/chart-values.ts) and the values table of docs/helm.md.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chartDir, renderValuesSchemaFile, SCHEMA_FILE, withValuesTable } from './chart.ts';
import { renderCrdFiles } from './crd.ts';

const root = join(import.meta.dirname, '..', '..');
const hasChart = existsSync(join(chartDir, 'Chart.yaml'));
const targets = [join(root, 'crds')];
if (hasChart) targets.push(join(chartDir, 'crds'));

const files = renderCrdFiles();
for (const dir of targets) {
  mkdirSync(dir, { recursive: true });
  for (const old of readdirSync(dir)) if (old.endsWith('.yaml') && !files.has(old)) rmSync(join(dir, old));
  for (const [name, text] of files) writeFileSync(join(dir, name), text);
  console.log(`gen: wrote ${files.size} CRD file(s) to ${dir}`);
}

if (hasChart) {
  writeFileSync(join(chartDir, SCHEMA_FILE), renderValuesSchemaFile());
  console.log(`gen: wrote ${join(chartDir, SCHEMA_FILE)}`);
  const doc = join(root, 'docs', 'helm.md');
  if (existsSync(doc)) {
    writeFileSync(doc, withValuesTable(readFileSync(doc, 'utf8')));
    console.log(`gen: wrote the values table of ${doc}`);
  }
}
