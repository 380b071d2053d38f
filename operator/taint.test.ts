import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KubeObject } from '../kube/client.ts';
import { activeLabelKey } from './render/names.ts';
import { claimed } from './taint.ts';

const node = (name: string, labels: Record<string, string> = {}): KubeObject => ({ metadata: { name, labels } });
const proxy = (name: string, spec: object, deleting = false): KubeObject =>
  ({
    metadata: { name, namespace: 'apps', ...(deleting ? { deletionTimestamp: '2026-12-02T00:00:00Z' } : {}) },
    spec,
  }) as KubeObject;
const key = activeLabelKey('apps', 'p');

test('claimed: a node a live object means to intercept keeps the taint; others lose it', () => {
  const every = proxy('p', { nodeSelector: { pool: 'x' } });
  assert.equal(claimed(node('a', { pool: 'x' }), [every]), true, 'every candidate intercepts');
  assert.equal(claimed(node('b', { pool: 'y' }), [every]), false, 'selector does not match');
  assert.equal(claimed(node('c', { pool: 'x', [key]: 'leaving' }), [every]), false, 'a leaving node stops');
  const counted = proxy('p', { replicas: 1 });
  assert.equal(claimed(node('d', { [key]: 'true' }), [counted]), true, 'active with replicas');
  assert.equal(claimed(node('e'), [counted]), false, 'a non-active candidate does not intercept');
  assert.equal(claimed(node('f'), [proxy('p', {}, true)]), false, 'an object being deleted claims nothing');
  assert.equal(claimed(node('g'), []), false, 'no object at all');
});
