import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatStatus, lastError, type Fleet } from './status.ts';

const cond = (type: string, status: string, reason: string, message?: string) => ({
  type,
  status: status as 'True',
  reason,
  message,
  lastTransitionTime: 't',
});

test('status: a fleet line, its nodes, the last error', () => {
  const f: Fleet = {
    metadata: { name: 'web', namespace: 'tpfleet-fleet', generation: 3 },
    spec: { replicas: 2 },
    status: {
      observedGeneration: 3,
      replicas: 2,
      readyReplicas: 1,
      candidates: 3,
      nodes: [
        {
          name: 'w1',
          zone: 'a',
          state: 'Active',
          ready: true,
          tuning: { reason: 'Applied', message: '' },
          traffic: { backend: 'nftables', verified: true, connections: 12, errors: 1 },
        },
        { name: 'w2', state: 'Active', ready: false },
        { name: 'w3', state: 'Draining', ready: false },
      ],
      conditions: [
        cond('Ready', 'False', 'NodesNotReady'),
        cond('Degraded', 'True', 'NodesNotReady', '1 active nodes not ready'),
      ],
    },
  };
  const text = formatStatus([f]);
  assert.match(text, /^FLEET\s+READY\s+ACTIVE\s+REQUESTED\s+CANDIDATES\s+POLICY RULES\n/);
  assert.match(text, /tpfleet-fleet\/web\s+False\s+1\/2 ready\s+2\s+3\s+-\n/);
  assert.match(text, /\n {2}w1\s+Active\s+true\s+a\s+nftables\s+12\s+1\s+Applied\s+-\n/);
  assert.match(text, /\n {2}w2\s+Active\s+false\s+-\s+-\s+-\s+-\s+-\s+-\n/);
  assert.match(text, /\n {2}w3\s+Draining\s+false/);
  assert.match(text, /last error: NodesNotReady: 1 active nodes not ready/);
});

test('last error: a refused spec first, then Degraded, then an unobserved generation; none is "-"', () => {
  const base: Fleet = { metadata: { name: 'x', generation: 2 }, status: { observedGeneration: 2, conditions: [] } };
  assert.equal(lastError(base), '-');
  assert.match(lastError({ ...base, metadata: { name: 'x', generation: 3 } }), /not observed generation 3/);
  const invalid = {
    ...base,
    status: {
      conditions: [
        cond('Degraded', 'True', 'InvalidSpec', 'spec.x'),
        cond('InvalidSpec', 'True', 'SpecRejected', 'spec.x: bad'),
      ],
    },
  };
  assert.equal(lastError(invalid), 'InvalidSpec: spec.x: bad');
  assert.equal(formatStatus([]), 'No TransparentProxies found.\n');
});

test('status above 100 nodes: the listed nodes, then how many are not listed (status.nodeCounts)', () => {
  const f: Fleet = {
    metadata: { name: 'wide', namespace: 'tpfleet-fleet', generation: 1 },
    status: {
      observedGeneration: 1,
      replicas: 500,
      readyReplicas: 499,
      candidates: 500,
      nodes: [{ name: 'w7', state: 'Active', ready: false }],
      nodeCounts: {
        active: 500,
        ready: 499,
        notReady: 1,
        draining: 0,
        configRefused: 0,
        tuningDegraded: 0,
        omitted: 499,
      },
    },
  };
  const text = formatStatus([f]);
  assert.match(text, /w7\s+Active\s+false/);
  assert.match(
    text,
    /499 more node\(s\) not listed \(500 active, 499 ready, 1 not ready, 0 draining, 0 refusing the config\)/,
  );
  assert.doesNotMatch(text, /no active nodes/);
  const none = formatStatus([{ ...f, status: { ...f.status, nodes: [] } }]);
  assert.doesNotMatch(none, /no active nodes/, 'every node healthy: none listed, but they are active');
});
