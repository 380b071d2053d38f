// `npm run gen`: writes crds/*.yaml from the zod API (for users who manage CRDs themselves). Files
// that no longer correspond to a CRD are removed. For the chart it writes the same CRD as a
// template (templates/crds/, behind crds.enabled), values.schema.json (from api/chart-values.ts)
// and the values table of docs/helm.md. The chart has no crds/ folder: Helm would install it
// before validating values and never upgrade it (docs/helm.md).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { chartDir, renderValuesSchemaFile, SCHEMA_FILE, withValuesTable } from './chart.ts';
import { CRD_TEMPLATE, renderCrdFiles, renderCrdTemplate } from './crd.ts';

const root = join(import.meta.dirname, '..', '..');
const hasChart = existsSync(join(chartDir, 'Chart.yaml'));
const targets = [join(root, 'crds')];

const files = renderCrdFiles();
for (const dir of targets) {
  mkdirSync(dir, { recursive: true });
  for (const old of readdirSync(dir)) if (old.endsWith('.yaml') && !files.has(old)) rmSync(join(dir, old));
  for (const [name, text] of files) writeFileSync(join(dir, name), text);
  console.log(`gen: wrote ${files.size} CRD file(s) to ${dir}`);
}

if (hasChart) {
  rmSync(join(chartDir, 'crds'), { recursive: true, force: true });
  const template = join(chartDir, CRD_TEMPLATE);
  mkdirSync(dirname(template), { recursive: true });
  writeFileSync(template, renderCrdTemplate());
  console.log(`gen: wrote ${template}`);
  writeFileSync(join(chartDir, SCHEMA_FILE), renderValuesSchemaFile());
  console.log(`gen: wrote ${join(chartDir, SCHEMA_FILE)}`);
  const doc = join(root, 'docs', 'helm.md');
  if (existsSync(doc)) {
    writeFileSync(doc, withValuesTable(readFileSync(doc, 'utf8')));
    console.log(`gen: wrote the values table of ${doc}`);
  }
}
