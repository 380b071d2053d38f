import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nodeConflict, sharedWithNewer } from './conflicts.ts';
import type { KubeObject } from '../kube/client.ts';

const node = (name: string, pool: string): KubeObject => ({
  metadata: { name, labels: { pool } },
  spec: {},
  status: { conditions: [{ type: 'Ready', status: 'True' }] },
});
const tp = (ns: string, name: string, created: string, spec: unknown): KubeObject => ({
  metadata: { namespace: ns, name, uid: `${ns}/${name}`, creationTimestamp: created },
  spec,
});
const nodes = [
  ...Array.from({ length: 12 }, (_, k) => node(`e${String(k).padStart(2, '0')}`, 'edge')),
  node('g1', 'gw'),
];

test('the older object keeps the nodes both select; the newer one is told which object and nodes', () => {
  const a = tp('x', 'a', '2026-01-01T00:00:00Z', { nodeSelector: { pool: 'edge' } });
  const b = tp('y', 'b', '2026-01-02T00:00:00Z', {});
  const all = [b, a];
  assert.equal(
    nodeConflict(a, { nodeSelector: { pool: 'edge' } }, all, nodes),
    undefined,
    'the older one is never refused',
  );
  assert.equal(
    nodeConflict(b, {}, all, nodes),
    'spec.nodeSelector: node(s) e00, e01, e02, e03, e04, e05, e06, e07, e08, e09 and 2 more are also selected by TransparentProxy x/a, which is older; ' +
      'one TransparentProxy per node (the node agent owns one nftables table, fwmark rule and listen port per node): make the nodeSelectors select disjoint nodes',
  );
  assert.equal(nodeConflict(b, { nodeSelector: { pool: 'gw' } }, all, nodes), undefined, 'disjoint: fine');
  assert.equal(
    nodeConflict(b, { nodeSelector: { pool: 'none' } }, all, nodes),
    undefined,
    'no node at all: nothing to share',
  );
  // Readiness does not matter: a NotReady node stays the older object's.
  const down = nodes.map((n) =>
    n.metadata.name === 'e00' ? { ...n, status: { conditions: [{ type: 'Ready', status: 'False' }] } } : n,
  );
  assert.match(nodeConflict(b, {}, all, down)!, /node\(s\) e00, e01/);
});

test('same creation second: namespace/name decides; an older object whose spec is rejected takes no nodes', () => {
  const t = '2026-01-01T00:00:00Z';
  const [a, b] = [tp('ns', 'a', t, {}), tp('ns', 'b', t, {})];
  assert.equal(nodeConflict(a, {}, [a, b], nodes), undefined);
  assert.match(nodeConflict(b, {}, [a, b], nodes)!, /TransparentProxy ns\/a, which is older/);
  const broken = tp('ns', '0-broken', '2025-01-01T00:00:00Z', { interception: { ports: 'nope' } });
  assert.match(
    nodeConflict(b, {}, [broken, a, b], nodes)!,
    /ns\/a/,
    'the rejected one is skipped, the next older one named',
  );
});

test('an older object whose spec turned invalid keeps the nodes its live DaemonSet runs on (issue 20 bypass)', () => {
  const b = tp('ns', 'b', '2026-01-02T00:00:00Z', {});
  // Ran on pool=edge, then its spec was edited into one that fails validation: InvalidSpec keeps
  // its DaemonSet (and the rules on those nodes) as they were.
  const turned = tp('ns', 'old', '2026-01-01T00:00:00Z', { nodeSelector: { pool: 'edge' }, replicas: -1 });
  const live = (o: KubeObject) =>
    o.metadata.name === 'old' ? { 'kubernetes.io/os': 'linux', pool: 'edge' } : undefined;
  const withOs = nodes.map((n) => ({
    ...n,
    metadata: { ...n.metadata, labels: { ...n.metadata.labels, 'kubernetes.io/os': 'linux' } },
  }));
  assert.match(
    nodeConflict(b, {}, [turned, b], withOs, live)!,
    /node\(s\) e00, .* TransparentProxy ns\/old, which is older/,
  );
  assert.equal(
    nodeConflict(b, { nodeSelector: { pool: 'gw' } }, [turned, b], withOs, live),
    undefined,
    'disjoint: fine',
  );
  assert.equal(nodeConflict(b, {}, [turned, b], withOs), undefined, 'never applied (no DaemonSet): takes no nodes');
});

test('a node relabelled into both selectors: the newer object is refused and the older one reports the overlap', () => {
  const a = tp('x', 'a', '2026-01-01T00:00:00Z', { nodeSelector: { pool: 'edge' } });
  const b = tp('y', 'b', '2026-01-02T00:00:00Z', { nodeSelector: { role: 'gw' } });
  // b ran on role=gw; then e00 got role=gw as well (it still has pool=edge).
  const relabelled = nodes.map((n) =>
    n.metadata.name === 'e00' ? { ...n, metadata: { ...n.metadata, labels: { pool: 'edge', role: 'gw' } } } : n,
  );
  const live = (o: KubeObject) => (o.metadata.name === 'b' ? { role: 'gw' } : undefined);
  assert.match(
    nodeConflict(b, { nodeSelector: { role: 'gw' } }, [a, b], relabelled, live)!,
    /node\(s\) e00 are also selected by TransparentProxy x\/a/,
  );
  assert.match(
    sharedWithNewer(a, { nodeSelector: { pool: 'edge' } }, [a, b], relabelled, live)!,
    /^node\(s\) e00 also run TransparentProxy y\/b \(newer, refused, but its DaemonSet from before still runs there\)/,
  );
  assert.equal(
    sharedWithNewer(a, { nodeSelector: { pool: 'edge' } }, [a, b], nodes, live),
    undefined,
    'before the relabel',
  );
  assert.equal(
    sharedWithNewer(a, { nodeSelector: { pool: 'edge' } }, [a, b], relabelled, () => undefined),
    undefined,
    'b never ran',
  );
});
