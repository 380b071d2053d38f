// What the caches keep (cache-shape.ts) must give every reader the answer the full object gives:
// a kubelet-like Node (managedFields, images, nodeInfo, heartbeats, a foreign taint with timeAdded)
// and proxy pods with the agent's conditions, read by the real readers on both shapes. Also: the
// controller stores the shaped objects, and the shape is a fraction of the object.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { KubeClient, type KubeObject, type WatchEvent } from '../kube/client.ts';
import { INTERCEPTION_TAINT } from '../api/defaults.ts';
import { TUNING_CONDITION_TYPE } from '../api/tuning-condition.ts';
import { CONFIG_CONDITION_TYPE } from '../api/reload.ts';
import { TEST_TENANCY } from '../e2e/testenv/operator.ts';
import { nodeShape, podShape, withoutManagedFields } from './cache-shape.ts';
import { Controller, nodeFingerprint } from './controller.ts';
import { OperatorMetrics } from './metrics.ts';
import { fleetPods, leftNodes, uncleanNodes } from './pods.ts';
import { activeLabelKey, leaveSelectorLabels, MODE_ANNOTATION, selectorLabels } from './render/names.ts';
import { candidates, isCandidate } from './scheduling.ts';
import { claimed, hasTaint, taintChanges } from './taint.ts';
import { nodeConflict } from './conflicts.ts';

const T = '2026-12-03T12:00:00Z';
const managedFields = [{ manager: 'kubelet', operation: 'Update', time: T, fieldsV1: { 'f:status': { 'f:x': {} } } }];

function fullNode(name: string, o: { ready?: boolean; taints?: unknown[]; unschedulable?: boolean; labels?: object }) {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      uid: `uid-${name}`,
      resourceVersion: '42',
      creationTimestamp: T,
      labels: { 'kubernetes.io/hostname': name, 'topology.kubernetes.io/zone': 'z1', pool: 'a', ...o.labels },
      annotations: {
        'node.alpha.kubernetes.io/ttl': '0',
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
      },
      managedFields,
    },
    spec: {
      podCIDR: '10.244.1.0/24',
      ...(o.taints ? { taints: o.taints } : {}),
      ...(o.unschedulable ? { unschedulable: true } : {}),
    },
    status: {
      capacity: { cpu: '8', memory: '32Gi', pods: '110' },
      allocatable: { cpu: '8', memory: '31Gi', pods: '110' },
      conditions: [
        { type: 'MemoryPressure', status: 'False', lastHeartbeatTime: T, reason: 'KubeletHasSufficientMemory' },
        { type: 'Ready', status: o.ready === false ? 'False' : 'True', lastHeartbeatTime: T, reason: 'KubeletReady' },
      ],
      addresses: [{ type: 'InternalIP', address: '10.0.0.1' }],
      nodeInfo: { kubeletVersion: 'v1.37.2', osImage: 'Debian GNU/Linux 12' },
      images: Array.from({ length: 50 }, (_, i) => ({ names: [`registry.example/image-${i}:v1`], sizeBytes: 1e8 })),
    },
  } as KubeObject;
}

const foreign = { key: 'example.com/maintenance', value: 'soon', effect: 'NoSchedule', timeAdded: T };
const ours = { key: INTERCEPTION_TAINT, effect: 'NoSchedule' };
const NODES = [
  fullNode('n1', {}),
  fullNode('n2', { ready: false }),
  fullNode('n3', { taints: [foreign] }),
  fullNode('n4', { taints: [ours, { key: 'x', effect: 'PreferNoSchedule' }] }),
  fullNode('n5', { unschedulable: true, labels: { pool: 'b' } }),
  fullNode('n6', { labels: { pool: 'b', [activeLabelKey('fleet', 'web')]: 'true' }, taints: [ours] }),
];
const proxy = (name: string, spec: object, created = T) =>
  ({ metadata: { namespace: 'fleet', name, uid: `u-${name}`, creationTimestamp: created }, spec }) as KubeObject;

test('nodes: every reader answers the same on the cached shape as on the full object', () => {
  const slim = NODES.map(nodeShape);
  const tolerations = [[], [{ key: foreign.key, operator: 'Exists' as const }], [{ operator: 'Exists' as const }]];
  for (const sel of [{}, { pool: 'a' }, { pool: 'b' }] as Record<string, string>[])
    for (const tol of tolerations) {
      assert.deepEqual(candidates(slim, sel, tol), candidates(NODES, sel, tol), JSON.stringify([sel, tol]));
      for (let i = 0; i < NODES.length; i++)
        assert.equal(isCandidate(slim[i]!, sel, tol), isCandidate(NODES[i]!, sel, tol));
    }
  const proxies = [proxy('web', { nodeSelector: { pool: 'b' }, replicas: 1 }), proxy('all', { nodeSelector: {} })];
  for (let i = 0; i < NODES.length; i++) {
    const [full, s] = [NODES[i]!, slim[i]!];
    assert.equal(nodeFingerprint(s), nodeFingerprint(full), full.metadata.name);
    assert.equal(hasTaint(s), hasTaint(full));
    assert.equal(claimed(s, proxies), claimed(full, proxies));
    // taint.ts writes the other taints back whole and guards the patch by resourceVersion.
    assert.deepEqual(
      (s as { spec?: { taints?: unknown } }).spec?.taints,
      (full as { spec?: { taints?: unknown } }).spec?.taints,
    );
    assert.equal(s.metadata.resourceVersion, full.metadata.resourceVersion);
    assert.deepEqual(s.metadata.labels, full.metadata.labels);
  }
  const names = (c: { node: KubeObject; on: boolean }[]) => c.map((x) => [x.node.metadata.name, x.on]);
  assert.deepEqual(
    names(taintChanges(slim, proxies, ['n1', 'n6'], new Set(['n6']))),
    names(taintChanges(NODES, proxies, ['n1', 'n6'], new Set(['n6']))),
  );
  const older = proxy('old', { nodeSelector: { pool: 'a' } }, '2026-01-01T00:00:00Z');
  const mine = proxy('new', { nodeSelector: { pool: 'a' } });
  const spec = { nodeSelector: { pool: 'a' } } as never;
  assert.deepEqual(
    nodeConflict(mine, spec, [older], slim, () => undefined),
    nodeConflict(mine, spec, [older], NODES, () => undefined),
  );
  const bytes = (xs: unknown[]) => Buffer.byteLength(JSON.stringify(xs));
  assert.ok(bytes(slim) * 10 < bytes(NODES), `cached ${bytes(slim)} B of ${bytes(NODES)} B`);
});

function fullPod(node: string, o: { leave?: boolean; cleanup?: boolean; ready?: boolean; created?: string }) {
  const labels = o.leave ? leaveSelectorLabels('web') : selectorLabels('web');
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: `${o.leave ? 'leave' : 'web'}-${node}-${o.created ?? ''}`,
      namespace: 'fleet',
      creationTimestamp: o.created ?? T,
      labels,
      annotations: o.cleanup ? { [MODE_ANNOTATION]: 'cleanup' } : {},
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'web', uid: 'd', controller: true }],
      managedFields,
    },
    spec: { nodeName: node, containers: [{ name: 'sidecar', image: 'registry.example/x', args: ['--a'] }] },
    status: {
      phase: 'Running',
      conditions: [
        { type: 'Ready', status: o.ready === false ? 'False' : 'True' },
        { type: TUNING_CONDITION_TYPE, status: 'True', reason: 'Applied', message: 'throughput' },
        { type: CONFIG_CONDITION_TYPE, status: 'True', reason: 'Applied', message: '0123456789abcdef' },
      ],
      containerStatuses: [{ name: 'sidecar', ready: true, restartCount: 0, image: 'registry.example/x' }],
    },
  } as KubeObject;
}

test('pods: fleetPods, leftNodes and uncleanNodes answer the same on the cached shape', () => {
  const pods = [
    fullPod('n1', {}),
    fullPod('n2', { ready: false }),
    fullPod('n3', { cleanup: true }),
    fullPod('n1', { created: '2026-12-03T12:00:01Z' }),
    fullPod('n4', { leave: true }),
    fullPod('n5', { leave: true, ready: false }),
  ];
  const slim = pods.map(podShape);
  assert.deepEqual(fleetPods(slim, 'fleet', 'web'), fleetPods(pods, 'fleet', 'web'));
  assert.deepEqual(leftNodes(slim, 'fleet', 'web'), leftNodes(pods, 'fleet', 'web'));
  assert.deepEqual(
    uncleanNodes(slim, 'fleet', 'web', MODE_ANNOTATION),
    uncleanNodes(pods, 'fleet', 'web', MODE_ANNOTATION),
  );
  assert.ok(!('managedFields' in slim[0]!.metadata) && !('containers' in (slim[0]!.spec as object)));
});

test('the controller caches the shapes: no managedFields anywhere, nodes without images', () => {
  const client = new KubeClient({ server: 'https://127.0.0.1:1', applyToHTTPSOptions: async () => {} }, 'test');
  const c = new Controller({
    client,
    log: pino({ level: 'silent' }),
    metrics: new OperatorMetrics(false),
    settings: { defaultImage: 'registry.example/tpfleet-node:test', cleanupTimeoutMs: 60_000, tenancy: TEST_TENANCY },
  });
  const feed = (cache: 'nodes' | 'proxies' | 'daemonSets', e: WatchEvent) =>
    (c.caches[cache] as unknown as { handle(e: WatchEvent): void }).handle(e);
  feed('nodes', { type: 'ADDED', object: NODES[0]! });
  feed('proxies', {
    type: 'ADDED',
    object: { ...proxy('web', {}), metadata: { ...proxy('web', {}).metadata, managedFields } as never },
  });
  const node = c.caches.nodes.get(undefined, 'n1')!;
  assert.deepEqual(node, nodeShape(NODES[0]!));
  assert.ok(!('images' in (node.status as object)));
  assert.ok(!('managedFields' in c.caches.proxies.get('fleet', 'web')!.metadata));
  assert.deepEqual(withoutManagedFields(NODES[0]!).status, NODES[0]!.status, 'other kinds keep everything else');
});
