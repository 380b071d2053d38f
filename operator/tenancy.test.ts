import assert from 'node:assert/strict';
import { test } from 'node:test';
import { imageAllowed, imageRepositoryPrefixes, namespaceProblem, tenancy, tenancyProblems } from './tenancy.ts';

test('image allowlist: exact names, or prefixes ending in ":", "@" or "/"', () => {
  const allowed = imageRepositoryPrefixes('ghcr.io/tpfleet/tpfleet-node:0.1.0');
  assert.deepEqual(allowed, ['ghcr.io/tpfleet/tpfleet-node:', 'ghcr.io/tpfleet/tpfleet-node@']);
  assert.ok(imageAllowed('ghcr.io/tpfleet/tpfleet-node:0.2.0', allowed));
  assert.ok(imageAllowed('ghcr.io/tpfleet/tpfleet-node@sha256:abc', allowed));
  assert.ok(!imageAllowed('ghcr.io/tpfleet/tpfleet-node-evil:1', allowed));
  assert.ok(!imageAllowed('ghcr.io/tpfleet/tpfleet-node:', allowed), 'the prefix alone is no image');
  assert.deepEqual(imageRepositoryPrefixes('localhost:5000/node@sha256:1'), [
    'localhost:5000/node:',
    'localhost:5000/node@',
  ]);
  assert.ok(imageAllowed('a/b:1', ['a/b:1']) && !imageAllowed('a/b:2', ['a/b:1']));
});

test('control-plane tolerations and selectors need the install-time allowance', () => {
  const t = tenancy({ namespaces: ['f'], allowedImages: ['x/'], allowControlPlane: false });
  const spec = {
    tolerations: [
      { operator: 'Exists' as const },
      { key: 'node-role.kubernetes.io/master', operator: 'Exists' as const },
      { key: 'dedicated', value: 'proxy' },
    ],
    nodeSelector: { 'node-role.kubernetes.io/control-plane': '' },
  };
  const p = tenancyProblems(spec, t);
  assert.equal(p.length, 3);
  assert.match(p[0]!, /^spec\.tolerations\[0\]: /);
  assert.match(p[1]!, /^spec\.tolerations\[1\]: /);
  assert.match(p[2]!, /^spec\.nodeSelector\.node-role\.kubernetes\.io\/control-plane: /);
  assert.deepEqual(tenancyProblems(spec, { ...t, allowControlPlane: true }), []);
});

test('namespaces: only the configured ones, or every one with *', () => {
  const t = tenancy({ namespaces: ['b', 'a'], allowedImages: [], allowControlPlane: false });
  assert.equal(namespaceProblem('a', t), undefined);
  assert.match(
    namespaceProblem('c', t) ?? '',
    /^metadata\.namespace: c is not a namespace this tpfleet installation reconciles \(a, b\)/,
  );
  assert.equal(
    namespaceProblem('c', tenancy({ namespaces: ['*'], allowedImages: [], allowControlPlane: false })),
    undefined,
  );
});
