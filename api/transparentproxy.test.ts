import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TransparentProxySpec } from './transparentproxy.ts';

test('an empty spec is valid (every field has a documented default)', () => {
  assert.deepEqual(TransparentProxySpec.parse({}), {});
});

test('cross-field rules hold in zod as in CEL', () => {
  const bad = [
    { interception: { ports: [{ port: 10, endPort: 9 }] } },
    { interception: { destinations: { include: ['10.0.0.0/8'], exclude: ['10.0.0.0/8'] } } },
    { proxy: { metricsPort: 15101 } },
    { autoscaling: { enabled: true } },
    { autoscaling: { enabled: true, maxReplicas: 4 } },
    { autoscaling: { minReplicas: 3, maxReplicas: 2 } },
    { tuning: { affinity: { mode: 'explicit' } } },
    { tolerations: [{ operator: 'Exists', value: 'x' }] },
  ];
  for (const spec of bad) assert.equal(TransparentProxySpec.safeParse(spec).success, false, JSON.stringify(spec));
  const good = [
    { interception: { ports: [{ port: 10, endPort: 10 }] } },
    { proxy: { listenPort: 15190, metricsPort: 15191 } },
    { replicas: 2, autoscaling: { enabled: true, maxReplicas: 4 } },
    { tuning: { affinity: { mode: 'explicit', irqCpus: '0', workerCpus: '1-3' } } },
  ];
  for (const spec of good) assert.equal(TransparentProxySpec.safeParse(spec).success, true, JSON.stringify(spec));
});

test('CRD-only fields are accepted: image, resources as quantities or numbers', () => {
  const r = TransparentProxySpec.safeParse({
    proxy: { image: 'x:1', resources: { requests: { cpu: '500m', memory: 1024 } } },
  });
  assert.equal(r.success, true);
});
