// Per-node config hashes in status.nodes[] and the Progressing and Degraded conditions they drive
// (pure status computation over pods as the API server returns them, with the agent's condition).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { configCondition } from '../api/reload.ts';
import { TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import type { KubeObject } from '../kube/client.ts';
import { fleetPods } from './pods.ts';
import { computeStatus, type StatusInput } from './status.ts';

const OLD = 'aaaaaaaaaaaaaaaa',
  NEW = 'bbbbbbbbbbbbbbbb';
const pod = (node: string, conds: object[]): KubeObject => ({
  metadata: {
    name: `web-${node}`,
    namespace: 'fleet',
    labels: { 'app.kubernetes.io/name': 'tpfleet', 'app.kubernetes.io/instance': 'web' },
  },
  spec: { nodeName: node },
  status: { conditions: [{ type: 'Ready', status: 'True' }, ...conds] },
});

function status(pods: KubeObject[]) {
  const input: StatusInput = {
    generation: 2,
    now: '2026-01-01T00:00:00Z',
    selector: 's',
    configHash: NEW,
    candidates: 2,
    active: [{ name: 'n1' }, { name: 'n2' }] as StatusInput['active'],
    daemonSet: {
      generation: 1,
      status: { observedGeneration: 1, desiredNumberScheduled: 2, updatedNumberScheduled: 2, numberReady: 2 },
    },
    ...fleetPods(pods, 'fleet', 'web'),
  };
  const s = computeStatus(input);
  TransparentProxyStatus.parse(s);
  return s;
}
const cond = (s: TransparentProxyStatus, t: string) => s.conditions!.find((c) => c.type === t)!;

test('Progressing stays True (Reloading) until every active node enforces the new hash, with no rollout', () => {
  const s = status([pod('n1', [configCondition({ hash: NEW })]), pod('n2', [configCondition({ hash: OLD })])]);
  assert.deepEqual(
    s.nodes!.map((n) => [n.name, n.configHash]),
    [
      ['n1', NEW],
      ['n2', OLD],
    ],
  );
  assert.equal(cond(s, 'Progressing').status, 'True');
  assert.equal(cond(s, 'Progressing').reason, 'Reloading');
  assert.match(cond(s, 'Progressing').message!, /1 node\(s\) not yet enforcing config bbbbbbbbbbbbbbbb: n2/);
  assert.equal(cond(s, 'Degraded').status, 'False');
  const done = status([pod('n1', [configCondition({ hash: NEW })]), pod('n2', [configCondition({ hash: NEW })])]);
  assert.equal(cond(done, 'Progressing').status, 'False');
  assert.equal(cond(done, 'Ready').status, 'True');
});

test('a node that refuses the new config keeps the old hash, and Degraded names it and the field', () => {
  const why = 'changing interception.routingTable: preflight refused: ip -4 route table 3000 already holds a route';
  const s = status([
    pod('n1', [configCondition({ hash: NEW })]),
    pod('n2', [configCondition({ hash: OLD, refused: { hash: NEW, message: why } })]),
  ]);
  const n2 = s.nodes!.find((n) => n.name === 'n2')!;
  assert.equal(n2.configHash, OLD, 'the last good config is still in force there');
  assert.equal(n2.configRefused, why);
  assert.equal(cond(s, 'Degraded').status, 'True');
  assert.equal(cond(s, 'Degraded').reason, 'ConfigRefused');
  assert.match(cond(s, 'Degraded').message!, /n2: changing interception\.routingTable: preflight refused/);
  assert.equal(cond(s, 'Progressing').status, 'False', 'a refusal is not progress: it waits for a new spec');
  // A refusal of an older spec is history once the spec moved on.
  const later = status([
    pod('n1', [configCondition({ hash: NEW })]),
    pod('n2', [configCondition({ hash: OLD, refused: { hash: 'cccccccccccccccc', message: why } })]),
  ]);
  assert.equal(cond(later, 'Degraded').status, 'False');
  assert.equal(cond(later, 'Progressing').reason, 'Reloading');
});

test('a hand-edited config condition is not trusted; a node without a report is not behind', () => {
  const s = status([
    pod('n1', [{ type: 'tpfleet.io/Config', status: 'True', reason: 'Applied', message: 'not-a-hash' }]),
    pod('n2', []),
  ]);
  assert.deepEqual(
    s.nodes!.map((n) => n.configHash),
    [undefined, undefined],
  );
  assert.equal(cond(s, 'Progressing').status, 'False');
});
