// Golden files for the rendered objects (operator/render/testdata). A rendering change shows up
// as a reviewable diff; regenerate with TPFLEET_UPDATE_GOLDEN=1 after checking it is intended.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { parseNodeConfigText } from '../../api/load.ts';
import { assertGolden } from '../../e2e/golden.ts';
import type { KubeObject } from '../../kube/client.ts';
import { probeAddress } from '../../api/probe-address.ts';
import { renderDaemonSet } from './daemonset.ts';
import { activeLabelKey } from './names.ts';
import { renderNodeConfig } from './nodeconfig.ts';
import {
  renderAgentRole,
  renderAgentRoleBinding,
  renderConfigMap,
  renderHpa,
  renderMetricsService,
  renderServiceAccount,
} from './objects.ts';

const sample = (f: string) =>
  parse(readFileSync(join(import.meta.dirname, '..', 'samples', f), 'utf8')) as KubeObject & { spec: unknown };
const tpOf = (s: KubeObject): KubeObject => ({
  ...s,
  metadata: { ...s.metadata, uid: '00000000-0000-4000-8000-000000000001' },
});

function golden(name: string, value: unknown): void {
  assertGolden(
    join(import.meta.dirname, 'testdata', name),
    stringify(value, { lineWidth: 0, aliasDuplicateObjects: false }),
  );
}

test('full sample: NodeConfig, ConfigMap, DaemonSet (run and cleanup), Service, HPA', () => {
  const s = sample('full.yaml');
  const r = renderNodeConfig(s.spec);
  assert.ok(r.ok);
  const tp = tpOf(s);
  // The rendered document is what the node agent will parse.
  const config = parseNodeConfigText(r.value.yaml);
  assert.deepEqual(r.value.config, config, 'the operator renders from the same NodeConfig the nodes parse');
  assert.equal(config.interception.mark, 0x1000);
  assert.equal(config.proxy.timeouts.drain, 45_000);
  assert.equal(config.tuning.sysctls.profile, 'throughput', 'spec.tuning reaches the node agent');
  assert.equal(config.tuning.affinity.workerCpus, '2-5');
  golden('nodeconfig-full.yaml', parse(r.value.yaml));
  golden('configmap-full.yaml', renderConfigMap(tp, r.value.yaml, r.value.hash, r.value.podHash));
  const input = {
    tp,
    spec: r.value.spec,
    proxy: r.value.config.proxy,
    podHash: r.value.podHash,
    defaultImage: 'unused',
    activeLabel: activeLabelKey('tpfleet-fleet', 'egress'),
  };
  golden('daemonset-full.yaml', renderDaemonSet({ ...input, mode: 'run' }));
  golden('daemonset-full-cleanup.yaml', renderDaemonSet({ ...input, mode: 'cleanup' }));
  const leave = renderDaemonSet({ ...input, mode: 'leave' }) as any;
  golden('daemonset-full-leave.yaml', leave);
  // The leave DaemonSet goes exactly where the label says "leaving", and its pods are never the
  // proxy DaemonSet's nor /scale's (the HPA's pod metrics).
  const run = renderDaemonSet({ ...input, mode: 'run' }) as any;
  assert.notEqual(leave.metadata.name, run.metadata.name);
  assert.deepEqual(leave.spec.template.spec.nodeSelector, {
    'kubernetes.io/os': 'linux',
    [input.activeLabel]: 'leaving',
  });
  const matches = (sel: Record<string, string>, labels: Record<string, string>) =>
    Object.entries(sel).every(([k, v]) => labels[k] === v);
  assert.equal(matches(run.spec.selector.matchLabels, leave.spec.template.metadata.labels), false);
  assert.equal(matches(leave.spec.selector.matchLabels, run.spec.template.metadata.labels), false);
  assert.deepEqual(leave.spec.template.spec.initContainers[0].command.slice(-4), [
    '--wait-port',
    '15190',
    '--wait-timeout',
    '55',
  ]);
  assert.throws(
    () => renderDaemonSet({ ...input, activeLabel: undefined, mode: 'leave' }),
    /leave mode needs activeLabel/,
  );
  // Proxy pods never go to a node still leaving (its cleanup would race their apply), even when
  // every candidate is active and no label selector applies.
  const everyCandidate = renderDaemonSet({ ...input, activeLabel: undefined, mode: 'run' }) as any;
  assert.deepEqual(
    everyCandidate.spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution
      .nodeSelectorTerms,
    [{ matchExpressions: [{ key: input.activeLabel, operator: 'NotIn', values: ['leaving'] }] }],
  );
  assert.equal(leave.spec.template.spec.affinity, undefined);
  golden('service-full.yaml', renderMetricsService(tp, r.value.config));
  golden('serviceaccount-full.yaml', renderServiceAccount(tp));
  golden('role-full.yaml', renderAgentRole(tp));
  golden('rolebinding-full.yaml', renderAgentRoleBinding(tp));
});

test('API credentials reach only the agent-watch container, which knows its own pod', () => {
  const s = sample('full.yaml');
  const r = renderNodeConfig(s.spec);
  assert.ok(r.ok);
  const input = {
    tp: tpOf(s),
    spec: r.value.spec,
    proxy: r.value.config.proxy,
    podHash: r.value.podHash,
    defaultImage: 'unused',
  };
  type C = {
    name: string;
    env?: { name: string; valueFrom: { fieldRef: { fieldPath: string } } }[];
    volumeMounts?: { name: string; mountPath: string }[];
  };
  const pod = (renderDaemonSet({ ...input, mode: 'run' }) as any).spec.template.spec;
  assert.equal(pod.automountServiceAccountToken, false, 'no pod-wide token');
  const all: C[] = [...pod.initContainers, ...pod.containers];
  const withToken = all.filter((c) => c.volumeMounts?.some((m) => m.name === 'kube-api-access')).map((c) => c.name);
  assert.deepEqual(withToken, ['agent-watch']);
  const watch = all.find((c) => c.name === 'agent-watch')!;
  assert.equal(
    watch.volumeMounts!.find((m) => m.name === 'kube-api-access')!.mountPath,
    '/var/run/secrets/kubernetes.io/serviceaccount',
  );
  assert.deepEqual(
    watch.env!.map((e) => [e.name, e.valueFrom.fieldRef.fieldPath]),
    [
      ['POD_NAME', 'metadata.name'],
      ['POD_NAMESPACE', 'metadata.namespace'],
      ['POD_HASH', "metadata.annotations['tpfleet.io/pod-hash']"],
    ],
  );
  const cleanup = (renderDaemonSet({ ...input, mode: 'cleanup' }) as any).spec.template.spec;
  assert.ok(
    !cleanup.volumes.some((v: { name: string }) => v.name === 'kube-api-access'),
    'cleanup mode holds no credentials',
  );
});

test('upstream credentials: each named Secret mounted whole (items, no subPath) into the sidecar alone', () => {
  const s = sample('full.yaml');
  const spec = s.spec as any;
  const upstream = (name: string, secret?: string) => ({
    name,
    type: 'SOCKS5',
    address: 'socks.corp.example:1080',
    ...(secret ? { credentialsSecret: { name: secret } } : {}),
  });
  const ds = (upstreams: unknown[]) => {
    const r = renderNodeConfig({ ...spec, policy: { ...spec.policy, upstreams } });
    assert.ok(r.ok, r.ok ? '' : r.problems.join('; '));
    const d = renderDaemonSet({
      tp: tpOf(s),
      spec: r.value.spec,
      proxy: r.value.config.proxy,
      podHash: r.value.podHash,
      defaultImage: 'unused',
      mode: 'run',
    }) as any;
    return { pod: d.spec.template.spec, hash: r.value.hash, yaml: r.value.yaml };
  };
  const corp = upstream('corp', 'corp-proxy');
  // Two upstreams sharing a Secret mount it once; an upstream without one mounts nothing.
  const { pod, hash, yaml } = ds([corp, upstream('socks', 'corp-proxy'), upstream('open')]);
  const creds = pod.volumes.filter((v: any) => v.secret);
  assert.deepEqual(creds, [
    {
      name: creds[0]!.name,
      secret: {
        secretName: 'corp-proxy',
        items: [
          { key: 'username', path: 'username' },
          { key: 'password', path: 'password' },
        ],
        defaultMode: 0o444,
      },
    },
  ]);
  assert.match(creds[0]!.name, /^creds-[0-9a-f]{16}$/);
  const mounts = (c: any) => (c.volumeMounts ?? []).filter((m: any) => m.name === creds[0]!.name);
  const [sidecar, ...others] = [...pod.containers, ...pod.initContainers].sort((a: any) =>
    a.name === 'sidecar' ? -1 : 1,
  );
  assert.equal(sidecar.name, 'sidecar');
  assert.deepEqual(mounts(sidecar), [
    { name: creds[0]!.name, mountPath: '/etc/tpfleet-credentials/corp-proxy', readOnly: true },
  ]);
  assert.ok(!mounts(sidecar)[0]!.subPath, 'no subPath: the kubelet would never refresh it');
  assert.deepEqual(
    others.filter((c: any) => mounts(c).length).map((c: any) => c.name),
    [],
    'only the sidecar sees them',
  );
  assert.ok(!mounts(sidecar)[0]!.mountPath.startsWith('/etc/tpfleet/'), 'not inside the read-only config mount');
  // The NodeConfig names the Secret, nothing more; adding an upstream with a Secret changes both the
  // config hash and the pod template (a rollout), removing it takes the volume away again.
  assert.match(yaml, /credentialsSecret:\n\s+name: corp-proxy/);
  const more = ds([corp, upstream('socks', 'socks-creds')]);
  assert.notEqual(more.hash, hash);
  assert.deepEqual(
    more.pod.volumes.filter((v: any) => v.secret).map((v: any) => v.secret.secretName),
    ['corp-proxy', 'socks-creds'],
  );
  const none = ds([upstream('corp')]);
  assert.deepEqual(
    none.pod.volumes.filter((v: any) => v.secret),
    [],
    'no Secret, no volume',
  );
  const r = renderNodeConfig(spec);
  assert.ok(r.ok);
  const cleanup = renderDaemonSet({
    tp: tpOf(s),
    spec: r.value.spec,
    proxy: r.value.config.proxy,
    podHash: r.value.podHash,
    defaultImage: 'unused',
    mode: 'cleanup',
  }) as any;
  assert.ok(
    !cleanup.spec.template.spec.volumes.some((v: any) => v.secret),
    'cleanup mode mounts no credentials (a deleted Secret never blocks the restore)',
  );
});

test('autoscaling sample: an HPA on the TransparentProxy /scale with the connections metric', () => {
  const s = sample('autoscaling.yaml');
  const r = renderNodeConfig(s.spec);
  assert.ok(r.ok);
  golden('hpa-autoscaling.yaml', renderHpa(tpOf(s), r.value.spec));
});

test('utilization: the HPA aims at percent of maxConnections and scales out only after the window', () => {
  const s = sample('autoscaling.yaml');
  const spec = {
    ...(s.spec as any),
    proxy: { maxConnections: 150 },
    autoscaling: { enabled: true, maxReplicas: 3, utilization: {} },
  };
  const r = renderNodeConfig(spec);
  assert.ok(r.ok);
  const hpa = renderHpa(tpOf(s), r.value.spec) as any;
  assert.equal(hpa.spec.metrics[0].pods.target.averageValue, '105', '70 % of 150 by default');
  assert.deepEqual(hpa.spec.behavior.scaleUp, { stabilizationWindowSeconds: 30 }, '30 s by default');
  const r2 = renderNodeConfig({
    ...spec,
    proxy: { maxConnections: 1 },
    autoscaling: { enabled: true, maxReplicas: 3, utilization: { percent: 10, window: '2m' } },
  });
  assert.ok(r2.ok);
  const hpa2 = renderHpa(tpOf(s), r2.value.spec) as any;
  assert.equal(hpa2.spec.metrics[0].pods.target.averageValue, '1', 'never a zero target');
  assert.equal(hpa2.spec.behavior.scaleUp.stabilizationWindowSeconds, 120);
  const fixed = renderHpa(
    tpOf(s),
    renderNodeConfig(s.spec).ok ? (renderNodeConfig(s.spec) as any).value.spec : {},
  ) as any;
  assert.equal(fixed.spec.behavior.scaleUp, undefined, 'targetConnectionsPerProxy keeps the HPA default scale-up');
});

test('the config hash depends on the node config only, and changes with it', () => {
  const a = renderNodeConfig({ interception: { ports: [{ port: 80 }] }, proxy: { image: 'a:1' } });
  const b = renderNodeConfig({
    interception: { ports: [{ port: 80 }] },
    proxy: { image: 'b:2', resources: { limits: { memory: '1Gi' } } },
  });
  const c = renderNodeConfig({ interception: { ports: [{ port: 81 }] } });
  assert.ok(a.ok && b.ok && c.ok);
  assert.equal(a.value.hash, b.value.hash, 'image/resources are pod settings (the DaemonSet rolls on them by itself)');
  assert.notEqual(a.value.hash, c.value.hash);
});

test('the readiness probe and the sidecar carry one token of their pod template; any template change changes it', () => {
  const s = sample('full.yaml');
  const tp = tpOf(s);
  const ds = (spec: unknown) => {
    const r = renderNodeConfig(spec);
    assert.ok(r.ok);
    return renderDaemonSet({
      tp,
      spec: r.value.spec,
      proxy: r.value.config.proxy,
      podHash: r.value.podHash,
      defaultImage: 'registry.example/tpfleet-node:1',
      mode: 'run',
    }) as any;
  };
  const tokenOf = (d: any) => {
    const c = d.spec.template.spec.containers.find((x: { name: string }) => x.name === 'sidecar');
    const t = /^\/readyz\?template=([0-9a-f]{16})$/.exec(c.readinessProbe.httpGet.path)?.[1];
    assert.ok(t, c.readinessProbe.httpGet.path);
    assert.deepEqual(c.command.slice(-2), ['--template', t], 'the sidecar knows the token its probe asks for');
    // Both probes go to the sidecar's own loopback address (the status port is shared during a surge).
    assert.equal(c.readinessProbe.httpGet.host, probeAddress(t));
    assert.equal(c.livenessProbe.httpGet.host, probeAddress(t));
    return t;
  };
  const base = tokenOf(ds(s.spec));
  assert.equal(tokenOf(ds(s.spec)), base, 'same input, same token');
  const spec = s.spec as any;
  // A change that needs a new process (rolls through the pod hash) and a pod-only change (image)
  // both change it: the old pod's sidecar never answers the new pod's probe as ready. A change
  // applied in place (an idle timeout) leaves the template alone: no rollout (api/reload.ts).
  assert.notEqual(tokenOf(ds({ ...spec, proxy: { ...spec.proxy, listenPort: 15111 } })), base);
  assert.equal(
    tokenOf(ds({ ...spec, proxy: { ...spec.proxy, timeouts: { ...spec.proxy?.timeouts, idle: '301s' } } })),
    base,
  );
  assert.notEqual(tokenOf(ds({ ...spec, proxy: { ...spec.proxy, image: 'registry.example/tpfleet-node:2' } })), base);
  const run = ds(s.spec);
  assert.deepEqual(
    run.spec.updateStrategy.rollingUpdate,
    { maxSurge: 1, maxUnavailable: 0 },
    'new pod beside the old one',
  );
  assert.ok(
    run.spec.template.spec.containers.every((c: { ports?: unknown }) => c.ports === undefined),
    'no declared (host) port',
  );
  assert.equal(
    run.spec.template.metadata.annotations['tpfleet.io/metrics-port'],
    String(spec.proxy?.metricsPort ?? 15190),
  );
});

test('active-node label keys fit a label name and stay distinct when truncated', () => {
  assert.equal(activeLabelKey('ns', 'web'), 'active.tpfleet.io/ns.web');
  const long1 = activeLabelKey('a'.repeat(40), 'b'.repeat(40)),
    long2 = activeLabelKey('a'.repeat(40), `${'b'.repeat(39)}c`);
  for (const k of [long1, long2]) assert.match(k.split('/')[1]!, /^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/);
  assert.notEqual(long1, long2);
});

test('a malformed spec (wrong types anywhere) yields problems naming the field, never an exception', () => {
  const cases: [unknown, string][] = [
    ['text', 'spec'],
    [42, 'spec'],
    [[], 'spec'],
    [{ interception: 'x' }, 'spec.interception'],
    [{ interception: { ports: 'x' } }, 'spec.interception.ports'],
    [{ proxy: { timeouts: { idle: 5 } } }, 'spec.proxy.timeouts.idle'],
    [{ replicas: '3' }, 'spec.replicas'],
    [{ tolerations: [null] }, 'spec.tolerations[0]'],
  ];
  for (const [spec, field] of cases) {
    const r = renderNodeConfig(spec);
    assert.equal(r.ok, false, JSON.stringify(spec));
    if (!r.ok)
      assert.ok(
        r.problems.some((p) => p.startsWith(field)),
        `${JSON.stringify(spec)}: ${r.problems.join('; ')}`,
      );
  }
});

test('in-place changes leave the pod template alone; restart fields, the image and upstream Secrets change it', () => {
  const s = sample('full.yaml');
  const tp = tpOf(s);
  const spec = s.spec as any;
  const render = (x: unknown) => {
    const r = renderNodeConfig(x);
    assert.ok(r.ok, JSON.stringify(r));
    const d = renderDaemonSet({
      tp,
      spec: r.value.spec,
      proxy: r.value.config.proxy,
      podHash: r.value.podHash,
      defaultImage: 'registry.example/tpfleet-node:1',
      mode: 'run',
    }) as any;
    return {
      template: JSON.stringify(d.spec.template),
      hash: r.value.hash,
      cm: renderConfigMap(tp, r.value.yaml, r.value.hash, r.value.podHash),
    };
  };
  const base = render(spec);
  const inPlace = {
    'exclusion CIDR': { ...spec, interception: { ...spec.interception, destinations: { exclude: ['10.99.0.0/16'] } } },
    ports: { ...spec, interception: { ...spec.interception, ports: [{ port: 81 }] } },
    'routing table': { ...spec, interception: { ...spec.interception, routingTable: 2345 } },
    'idle timeout': { ...spec, proxy: { ...spec.proxy, timeouts: { ...spec.proxy.timeouts, idle: '17s' } } },
    'log level': { ...spec, proxy: { ...spec.proxy, logLevel: 'debug' } },
    maxConnections: { ...spec, proxy: { ...spec.proxy, maxConnections: 777 } },
    'policy default': { ...spec, policy: { ...spec.policy, defaultAction: 'Deny' } },
  };
  for (const [what, x] of Object.entries(inPlace)) {
    const r = render(x);
    assert.notEqual(r.hash, base.hash, `${what}: a new config hash (the nodes reload)`);
    assert.equal(r.template, base.template, `${what}: the pod template is unchanged (no rollout)`);
    assert.equal(r.cm.metadata.annotations['tpfleet.io/pod-hash'], base.cm.metadata.annotations['tpfleet.io/pod-hash']);
  }
  const restart = {
    listenPort: { ...spec, proxy: { ...spec.proxy, listenPort: 15222 } },
    drain: { ...spec, proxy: { ...spec.proxy, timeouts: { ...spec.proxy.timeouts, drain: '7s' } } },
    failurePolicy: { ...spec, interception: { ...spec.interception, failurePolicy: 'FailClosed' } },
    'tuning key': {
      ...spec,
      tuning: { ...spec.tuning, sysctls: { profile: 'none', overrides: { 'net.core.somaxconn': 2048 } } },
    },
    image: { ...spec, proxy: { ...spec.proxy, image: 'registry.example/tpfleet-node:2' } },
    'upstream Secret': {
      ...spec,
      policy: {
        ...spec.policy,
        upstreams: spec.policy.upstreams.map((u: any) => ({ ...u, credentialsSecret: { name: 'other' } })),
      },
    },
  };
  for (const [what, x] of Object.entries(restart))
    assert.notEqual(render(x).template, base.template, `${what}: the pod template changes (the pods roll)`);
});
