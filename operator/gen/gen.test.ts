// CI guard: the committed crds/ must equal what `npm run gen` renders from api/transparentproxy.ts.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { openApiSchema, renderCrdFiles, structural } from './crd.ts';

const crdDir = join(import.meta.dirname, '..', '..', 'crds');

test('crds/ is up to date with the zod API (run `npm run gen` and commit)', () => {
  const files = renderCrdFiles();
  assert.deepEqual(
    readdirSync(crdDir)
      .filter((f) => f.endsWith('.yaml'))
      .sort(),
    [...files.keys()].sort(),
  );
  for (const [name, text] of files) assert.equal(readFileSync(join(crdDir, name), 'utf8'), text, `${name} differs`);
});

function walk(node: unknown, visit: (n: Record<string, unknown>, path: string) => void, path = ''): void {
  if (!node || typeof node !== 'object') return;
  const n = node as Record<string, unknown>;
  visit(n, path);
  for (const [k, v] of Object.entries(n.properties ?? {})) walk(v, visit, `${path}.${k}`);
  if (n.items) walk(n.items, visit, `${path}[]`);
  if (n.additionalProperties && typeof n.additionalProperties === 'object')
    walk(n.additionalProperties, visit, `${path}{}`);
}

test('the schema is structural: one type per node, no $ref/anyOf, no additionalProperties beside properties', () => {
  const problems: string[] = [];
  walk(openApiSchema(), (n, path) => {
    if (n['x-kubernetes-int-or-string']) return;
    if (!n.type) problems.push(`${path}: no type`);
    for (const k of ['$ref', 'anyOf', 'oneOf', 'allOf', '$schema', 'propertyNames', 'default', 'const'])
      if (k in n) problems.push(`${path}: ${k}`);
    if (n.properties && 'additionalProperties' in n) problems.push(`${path}: additionalProperties beside properties`);
  });
  assert.deepEqual(problems, []);
});

test('every spec field carries a description for kubectl explain', () => {
  const missing: string[] = [];
  const spec = (openApiSchema().properties as Record<string, unknown>).spec;
  walk(spec, (n, path) => {
    if (path && !path.endsWith('[]') && !path.endsWith('{}') && !n.description) missing.push(path);
  });
  // Self-explanatory leaves inside documented objects (toleration value, seconds) are allowed.
  assert.deepEqual(
    missing.filter((m) => !/^\.tolerations\[\]\.(value|tolerationSeconds)$|\.(port|endPort)$/.test(m)),
    [],
  );
});

test('structural() refuses what a CRD cannot express', () => {
  assert.throws(() => structural({ anyOf: [{ type: 'string' }, { type: 'number' }] }), /one type per node/);
  assert.throws(() => structural({ $ref: '#/defs/x' }), /\$ref/);
  assert.deepEqual(structural({ anyOf: [{}], 'x-kubernetes-int-or-string': true, description: 'q' }), {
    'x-kubernetes-int-or-string': true,
    description: 'q',
  });
});
