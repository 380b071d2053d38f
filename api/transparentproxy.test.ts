import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatIssues } from './load.ts';
import { TransparentProxySpec } from './transparentproxy.ts';

test('an empty spec is valid (every field has a documented default)', () => {
  assert.deepEqual(TransparentProxySpec.parse({}), {});
});

test('cross-field rules hold in zod as in CEL: rejected with the field and the message', () => {
  const problems = (spec: unknown) => {
    const r = TransparentProxySpec.safeParse(spec);
    return r.success ? [] : formatIssues(r.error);
  };
  const bad: [unknown, string[]][] = [
    [{ interception: { ports: [{ port: 10, endPort: 9 }] } }, ['interception.ports[0].endPort: must be >= port']],
    [
      { interception: { destinations: { include: ['10.0.0.0/8'], exclude: ['10.0.0.0/8'] } } },
      ['interception.destinations.exclude[0]: 10.0.0.0/8 is both included and excluded'],
    ],
    [{ proxy: { metricsPort: 15101 } }, ['proxy.metricsPort: must differ from listenPort']],
    [
      { autoscaling: { enabled: true } },
      [
        'autoscaling.maxReplicas: required when enabled',
        'replicas: replicas is required when autoscaling is enabled (the autoscaler reads and writes it through /scale)',
      ],
    ],
    [
      { autoscaling: { enabled: true, maxReplicas: 4 } },
      [
        'replicas: replicas is required when autoscaling is enabled (the autoscaler reads and writes it through /scale)',
      ],
    ],
    [{ autoscaling: { minReplicas: 3, maxReplicas: 2 } }, ['autoscaling.minReplicas: must be <= maxReplicas']],
    [
      { tuning: { affinity: { mode: 'explicit' } } },
      [
        'tuning.affinity.irqCpus: required when mode is explicit',
        'tuning.affinity.workerCpus: required when mode is explicit',
      ],
    ],
    [
      { tolerations: [{ operator: 'Exists', value: 'x' }] },
      ['tolerations[0].value: must be empty when operator is Exists'],
    ],
  ];
  for (const [spec, want] of bad) assert.deepEqual(problems(spec), want, JSON.stringify(spec));
  const good = [
    { interception: { ports: [{ port: 10, endPort: 10 }] } },
    { proxy: { listenPort: 15190, metricsPort: 15191 } },
    { replicas: 2, autoscaling: { enabled: true, maxReplicas: 4 } },
    { tuning: { affinity: { mode: 'explicit', irqCpus: '0', workerCpus: '1-3' } } },
  ];
  for (const spec of good) assert.deepEqual(problems(spec), [], JSON.stringify(spec));
});

test('CRD-only fields are accepted: image, resources as quantities or numbers', () => {
  const r = TransparentProxySpec.safeParse({
    proxy: { image: 'x:1', resources: { requests: { cpu: '500m', memory: 1024 } } },
  });
  assert.equal(r.success, true);
});

test('fwmark bits kube-proxy, Calico and Cilium own are refused, naming the owner (the shared spec validation)', () => {
  const problems = (interception: unknown) => {
    const r = TransparentProxySpec.safeParse({ interception });
    return r.success ? [] : formatIssues(r.error);
  };
  assert.deepEqual(problems({ mark: 0x4000, mask: 0xc000 }), [
    'interception.mark: uses fwmark bits reserved by kube-proxy (0xc000)',
    'interception.mask: uses fwmark bits reserved by kube-proxy (0xc000)',
  ]);
  assert.deepEqual(problems({ mark: 0x10000, mask: 0xf0000 }), [
    'interception.mark: uses fwmark bits reserved by Calico and Cilium (0xffff0000)',
    'interception.mask: uses fwmark bits reserved by Calico and Cilium (0xffff0000)',
  ]);
  assert.deepEqual(problems({ mask: 0x2300 }), ['interception.mask: uses fwmark bits reserved by Cilium (0xf00)']);
  assert.deepEqual(problems({ mark: 0x1000, mask: 0x3000 }), []);
  assert.deepEqual(problems({}), [], 'the default 0x2000/0x2000 is free');
});
