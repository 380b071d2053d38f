// The tuning schema as the API server enforces it: a probe CRD whose spec is TuningSpec, converted
// exactly as operator/gen does for the TransparentProxy CRD, installed in a real kube-apiserver
// (e2e/testenv). Bad keys, out-of-range values and incomplete explicit affinity are rejected at
// `kubectl apply` time with a message naming the key; the CRD itself must pass the server's CEL
// cost checks.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { z } from 'zod';
import { structural } from './crd.ts';
import { ApiError, KubeClient } from '../../kube/client.ts';
import { startTestEnv, type TestEnv } from '../../e2e/testenv/testenv.ts';
import { TuningSpec } from '../../api/tuning.ts';

const GROUP = 'probe.tpfleet.io',
  PLURAL = 'tuningprobes';
let env: TestEnv, c: KubeClient;

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'tuning-cel-test');
  const spec = structural(
    z.toJSONSchema(TuningSpec, { io: 'input', unrepresentable: 'throw' }) as Record<string, unknown>,
  );
  await c.request('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', {
    body: {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: `${PLURAL}.${GROUP}` },
      spec: {
        group: GROUP,
        scope: 'Namespaced',
        names: { kind: 'TuningProbe', plural: PLURAL, singular: 'tuningprobe', listKind: 'TuningProbeList' },
        versions: [
          {
            name: 'v1',
            served: true,
            storage: true,
            schema: { openAPIV3Schema: { type: 'object', properties: { spec } } },
          },
        ],
      },
    },
  });
  for (let i = 0; ; i++) {
    const crd = await c.request<{ status?: { conditions?: { type: string; status: string }[] } }>(
      'GET',
      `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${PLURAL}.${GROUP}`,
    );
    if (crd.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True')) break;
    if (i > 100) throw new Error('probe CRD not established');
    await new Promise((r) => setTimeout(r, 100));
  }
});
after(async () => {
  await env?.stop();
});

let n = 0;
async function create(spec: unknown): Promise<string | undefined> {
  try {
    await c.request('POST', `/apis/${GROUP}/v1/namespaces/default/${PLURAL}`, {
      body: { apiVersion: `${GROUP}/v1`, kind: 'TuningProbe', metadata: { name: `p${n++}` }, spec },
    });
    return undefined;
  } catch (e) {
    if (e instanceof ApiError && e.status === 422) return e.message;
    throw e;
  }
}

test('a full, valid tuning section is accepted', async () => {
  assert.equal(
    await create({
      sysctls: {
        profile: 'conntrack-heavy',
        overrides: {
          'net.core.somaxconn': 8192,
          'net.ipv4.ip_local_port_range': '1024 65000',
          'net.ipv4.tcp_congestion_control': 'bbr',
          'fs.file-max': '2000000',
        },
      },
      affinity: {
        mode: 'explicit',
        interfaces: ['eth0'],
        irqCpus: '0-1',
        workerCpus: '2-7,10',
        rps: 'on',
        rpsSockFlowEntries: 65536,
        irqbalance: 'coexist',
      },
    }),
    undefined,
  );
});

test('unknown keys and out-of-range values are rejected by the API server, naming the key', async () => {
  assert.match(
    (await create({ sysctls: { overrides: { 'kernel.panic': 1 } } }))!,
    /only allowlisted sysctls may be set/,
  );
  assert.match(
    (await create({ sysctls: { overrides: { 'net.core.somaxconn': 10 } } }))!,
    /net\.core\.somaxconn must be an integer in 128\.\.1048576/,
  );
  assert.match(
    (await create({ sysctls: { overrides: { 'net.core.somaxconn': '99999999' } } }))!,
    /net\.core\.somaxconn must be an integer/,
  );
  assert.ok(
    await create({ sysctls: { overrides: { 'net.core.somaxconn': 'lots' } } }),
    'a non-numeric string is rejected',
  );
  assert.match(
    (await create({ sysctls: { overrides: { 'net.ipv4.ip_local_port_range': '1024' } } }))!,
    /net\.ipv4\.ip_local_port_range must be 2 integers/,
  );
  assert.match(
    (await create({ sysctls: { overrides: { 'net.ipv4.tcp_congestion_control': 'foo' } } }))!,
    /net\.ipv4\.tcp_congestion_control must be one of/,
  );
  assert.match((await create({ sysctls: { profile: 'fast' } }))!, /profile: Unsupported value: "fast"/);
});

test('affinity: explicit needs both lists; CPU lists must look like CPU lists', async () => {
  assert.match(
    (await create({ affinity: { mode: 'explicit', irqCpus: '0' } }))!,
    /irqCpus and workerCpus are required when mode is explicit/,
  );
  assert.match((await create({ affinity: { mode: 'auto', workerCpus: '0-3;8' } }))!, /workerCpus/);
  assert.match(
    (await create({ affinity: { mode: 'explicit', irqCpus: '0', workerCpus: '1', irqCpuCount: 2 } }))!,
    /irqCpuCount is only used when mode is auto/,
  );
});
