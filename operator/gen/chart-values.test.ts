// The chart's values contract without helm: values.schema.json, the chart's CRD template and the values
// table of docs/helm.md are what `npm run gen` renders; values.yaml (defaults) and
// ci/full-values.yaml satisfy the zod schema; every value is commented and documented; the
// autoscaling recipes in charts/tpfleet/examples name our metric and our kind.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { isMap, isScalar, parse, parseDocument, type YAMLMap } from 'yaml';
import { ChartValues } from '../../api/chart-values.ts';
import { GROUP, KIND, VERSION } from '../../api/transparentproxy.ts';
import { CONNECTIONS_METRIC } from '../render/names.ts';
import { loadSample } from '../../e2e/testenv/fixtures.ts';
import {
  chartDir,
  loadDefaultValues,
  renderValuesSchemaFile,
  renderValuesTable,
  repoRoot,
  schemaLeaves,
  SCHEMA_FILE,
  TABLE_BEGIN,
  TABLE_END,
  valuesJsonSchema,
} from './chart.ts';
import { CRD_TEMPLATE, renderCrdTemplate } from './crd.ts';

const read = (...p: string[]) => readFileSync(join(...p), 'utf8');

test('values.schema.json, the chart CRD template and the docs/helm.md values table are up to date (run `npm run gen` and commit)', () => {
  assert.equal(read(chartDir, SCHEMA_FILE), renderValuesSchemaFile(), `${SCHEMA_FILE} differs`);
  assert.equal(read(chartDir, CRD_TEMPLATE), renderCrdTemplate(), `charts/tpfleet/${CRD_TEMPLATE} differs`);
  // Helm would install a crds/ folder before validating values, and never upgrade it.
  assert.ok(!existsSync(join(chartDir, 'crds')), 'the chart has no crds/ folder (the CRD is a template)');
  const doc = read(repoRoot, 'docs', 'helm.md');
  const table = doc.slice(doc.indexOf(TABLE_BEGIN), doc.indexOf(TABLE_END) + TABLE_END.length);
  assert.equal(table, renderValuesTable(), 'docs/helm.md values table differs');
});

test('the schema is draft-07 and closed: unknown keys fail everywhere except pass-through Kubernetes types', () => {
  const schema = valuesJsonSchema();
  assert.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#');
  const open: string[] = [];
  const walk = (n: Record<string, any>, path: string) => {
    if (n.type === 'object' && n.properties && n.additionalProperties !== false) open.push(path);
    for (const [k, v] of Object.entries(n.properties ?? {})) walk(v as Record<string, any>, `${path}.${k}`);
    if (n.items) walk(n.items, `${path}[]`);
  };
  walk(schema, '');
  assert.deepEqual(open, []);
  assert.equal(renderValuesSchemaFile(), renderValuesSchemaFile(), 'stable output');
});

test('values.yaml defaults and ci/full-values.yaml satisfy the zod schema', () => {
  const defaults = ChartValues.parse(loadDefaultValues());
  assert.equal(defaults.fleetNamespace.name, 'tpfleet-fleet');
  assert.equal(defaults.operator.replicas, 2);
  // Helm merges -f over the defaults; a full file is complete on its own anyway.
  const full = ChartValues.safeParse(parse(read(chartDir, 'ci', 'full-values.yaml')));
  assert.ok(full.success, full.success ? '' : full.error.message);
});

test('zod refuses what the templates refuse, naming the field', () => {
  const base = loadDefaultValues() as { operator: Record<string, unknown> };
  const r = ChartValues.safeParse({ ...base, operator: { ...base.operator, leaderElect: false } });
  assert.equal(r.success, false);
  assert.deepEqual(
    r.error?.issues.map((i) => i.path.join('.')),
    ['operator.leaderElect'],
  );
  const typo = ChartValues.safeParse({ ...base, operator: { ...base.operator, replicass: 1 } });
  assert.match(typo.error?.message ?? '', /replicass/);
});

test('every value in values.yaml has a comment, and every schema field is in values.yaml', () => {
  const doc = parseDocument(read(chartDir, 'values.yaml'));
  const uncommented: string[] = [];
  const paths: string[] = [];
  const leaves = new Set(schemaLeaves().map((l) => l.path));
  const walk = (map: YAMLMap, prefix: string) => {
    for (const pair of map.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : '?';
      const path = prefix ? `${prefix}.${key}` : key;
      // A comment above the key (on the key or, for the first key of a map, on the map itself).
      const comment = (isScalar(pair.key) && pair.key.commentBefore) || (map.items[0] === pair && map.commentBefore);
      if (!comment) uncommented.push(path);
      if (isMap(pair.value) && !leaves.has(path)) walk(pair.value, path);
      else paths.push(path);
    }
  };
  walk(doc.contents as YAMLMap, '');
  assert.deepEqual(uncommented, []);
  assert.deepEqual(paths.sort(), [...leaves].sort());
});

test("autoscaling recipes: the adapter rule serves the HPA's metric; KEDA targets a TransparentProxy /scale", () => {
  const adapter = parse(read(chartDir, 'examples', 'prometheus-adapter-values.yaml')) as {
    rules: {
      custom: {
        seriesQuery: string;
        name: { as: string };
        resources: { overrides: Record<string, { resource: string }> };
      }[];
    };
  };
  const rule = adapter.rules.custom[0]!;
  assert.equal(rule.name.as, CONNECTIONS_METRIC, "the name the operator's HPA asks the custom metrics API for");
  assert.ok(rule.seriesQuery.startsWith(`${CONNECTIONS_METRIC}{`));
  assert.deepEqual(
    rule.resources.overrides,
    { namespace: { resource: 'namespace' }, pod: { resource: 'pod' } },
    'a pods metric (HPA type Pods)',
  );
  const keda = parse(read(chartDir, 'examples', 'keda-scaledobject.yaml')) as {
    apiVersion: string;
    kind: string;
    metadata: { name: string; namespace: string };
    spec: { scaleTargetRef: Record<string, string>; triggers: { metadata: { query: string } }[] };
  };
  assert.equal(`${keda.apiVersion}/${keda.kind}`, 'keda.sh/v1alpha1/ScaledObject');
  const sample = loadSample('minimal.yaml');
  assert.deepEqual(keda.spec.scaleTargetRef, {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: KIND,
    name: sample.metadata.name,
  });
  assert.equal(keda.metadata.namespace, sample.metadata.namespace, 'the ScaledObject lives beside its target');
  assert.equal(
    sample.metadata.namespace,
    (loadDefaultValues() as { fleetNamespace: { name: string } }).fleetNamespace.name,
    "samples go to the chart's fleet namespace",
  );
  assert.match(
    keda.spec.triggers[0]!.metadata.query,
    new RegExp(`${CONNECTIONS_METRIC}\\{.*app_kubernetes_io_instance="${sample.metadata.name}"`),
  );
});
