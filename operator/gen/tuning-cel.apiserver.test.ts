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

/** Rejected at admission with the field the API server names first and the rule's message. */
async function rejected(spec: unknown, field: string, message: RegExp): Promise<void> {
  const m = await create(spec);
  assert.ok(m !== undefined, `${JSON.stringify(spec)} was accepted`);
  const esc = field.replace(/[.[\]]/g, '\\$&');
  assert.match(
    m,
    new RegExp(`is invalid: \\[?${esc}: (Invalid|Unsupported) value: `),
    `${JSON.stringify(spec)}: the field`,
  );
  assert.match(m, message, `${JSON.stringify(spec)}: the message`);
}

test('unknown keys and out-of-range values are rejected by the API server, naming the field and the key', async () => {
  const overrides = 'spec.sysctls.overrides';
  await rejected({ sysctls: { overrides: { 'kernel.panic': 1 } } }, overrides, /only allowlisted sysctls may be set/);
  const somaxconn = /net\.core\.somaxconn must be an integer in 128\.\.1048576/;
  await rejected({ sysctls: { overrides: { 'net.core.somaxconn': 10 } } }, overrides, somaxconn);
  await rejected({ sysctls: { overrides: { 'net.core.somaxconn': '99999999' } } }, overrides, somaxconn);
  // A non-numeric string fails the rule's int() conversion, which the server reports with the rule.
  await rejected({ sysctls: { overrides: { 'net.core.somaxconn': 'lots' } } }, overrides, somaxconn);
  await rejected(
    { sysctls: { overrides: { 'net.ipv4.ip_local_port_range': '1024' } } },
    overrides,
    /net\.ipv4\.ip_local_port_range must be 2 integers separated by spaces \(1024\.\.65535, non-decreasing\)/,
  );
  await rejected(
    { sysctls: { overrides: { 'net.ipv4.tcp_congestion_control': 'foo' } } },
    overrides,
    /net\.ipv4\.tcp_congestion_control must be one of cubic, bbr, reno/,
  );
  await rejected(
    { sysctls: { profile: 'fast' } },
    'spec.sysctls.profile',
    /Unsupported value: "fast": supported values: "none"/,
  );
});

test('affinity: explicit needs both lists; CPU lists must look like CPU lists', async () => {
  // The rule spans two fields, so the server names the object.
  await rejected(
    { affinity: { mode: 'explicit', irqCpus: '0' } },
    'spec.affinity',
    /irqCpus and workerCpus are required when mode is explicit/,
  );
  await rejected(
    { affinity: { mode: 'auto', workerCpus: '0-3;8' } },
    'spec.affinity.workerCpus',
    /"0-3;8": .* should match/,
  );
  await rejected(
    { affinity: { mode: 'explicit', irqCpus: '0', workerCpus: '1', irqCpuCount: 2 } },
    'spec.affinity.irqCpuCount',
    /irqCpuCount is only used when mode is auto/,
  );
});
