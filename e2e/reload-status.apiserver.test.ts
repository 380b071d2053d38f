// Reload in place against a real kube-apiserver (issue 15): the node agent's ConfigMap watch and its
// Reloader, authenticated as the fleet's ServiceAccount through the Role the operator rendered (get
// and watch on that one ConfigMap, by name), see a spec change within seconds, without a new pod
// template; the config condition they publish reaches status.nodes[].configHash, Progressing and,
// for a change the node refuses, Degraded naming the field. The node steps are a stand-in here (the
// netns tier, e2e/reload.test.ts, applies real rules): it refuses one routing table, as preflight
// does for a table another owner uses. No kubelet or DaemonSet controller runs: the test creates
// the proxy pod from the DaemonSet's template and writes the status those would.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { configCondition, CONFIG_CONDITION_TYPE, POD_HASH_ANNOTATION } from '../api/reload.ts';
import { DATAPATH_CONDITION_TYPE, datapathCondition } from '../api/selftest.ts';
import { watchConfigMap } from '../daemonset/configmap-watch.ts';
import { Reloader, writeLive } from '../daemonset/reload.ts';
import { AGENT_FIELD_MANAGER, TuningPublisher } from '../daemonset/tuning-publish.ts';
import { ApiError, KubeClient, type KubeObject } from '../kube/client.ts';
import { createNamespace, createNode, installCrd, tpPath, waitFor } from './testenv/fixtures.ts';
import { startOperator, type RunningOperator } from './testenv/operator.ts';
import { startTestEnv, type TestEnv } from './testenv/testenv.ts';

let env: TestEnv, c: KubeClient, op: RunningOperator, agent: KubeClient, live: string;
const NS = 'fleet';
type Obj = KubeObject & { spec?: any; status?: any; data?: Record<string, string> };
const log = pino({ level: process.env.TPFLEET_TEST_LOG ?? 'silent' });
const ac = new AbortController();
let watching: Promise<void> | undefined;

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-admin');
  await installCrd(c);
  await createNamespace(c, NS);
  await createNamespace(c, 'other');
  await createNode(c, 'n1', { zone: 'z1' });
  op = await startOperator(env.kubeconfigPath);
  const kc = new KubeConfig();
  kc.loadFromFile(
    await env.userKubeconfig(`system:serviceaccount:${NS}:web`, [
      'system:serviceaccounts',
      `system:serviceaccounts:${NS}`,
      'system:authenticated',
    ]),
  );
  agent = new KubeClient(kc, AGENT_FIELD_MANAGER);
  live = mkdtempSync(join(tmpdir(), 'tpfleet-reload-live-'));
});
after(async () => {
  ac.abort();
  await watching;
  await op?.stop();
  await env?.stop();
  if (live) rmSync(live, { recursive: true, force: true });
});

const tp = () => c.get<Obj>(tpPath(NS, 'web'));
const cond = (o: Obj | undefined, type: string) =>
  o?.status?.conditions?.find((x: { type: string }) => x.type === type);
const node = (o: Obj | undefined) => o?.status?.nodes?.find((n: { name: string }) => n.name === 'n1');
const cmPath = `/api/v1/namespaces/${NS}/configmaps/web-nodeconfig`;
const dsPath = `/apis/apps/v1/namespaces/${NS}/daemonsets/web`;

test('a running fleet: the agent on n1 starts from the applied config and reports its hash', async () => {
  await c.create(tpPath(NS), {
    apiVersion: 'tpfleet.io/v1alpha1',
    kind: 'TransparentProxy',
    metadata: { name: 'web' },
    spec: { interception: { ports: [{ port: 80 }] } },
  });
  const ds = await waitFor('DaemonSet', () => c.get<Obj>(dsPath));
  const cm = await waitFor('ConfigMap', () => c.get<Obj>(cmPath));
  await c.create(`/api/v1/namespaces/${NS}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'web-n1',
      labels: ds.spec.template.metadata.labels,
      annotations: ds.spec.template.metadata.annotations,
    },
    spec: { ...ds.spec.template.spec, nodeName: 'n1' },
  });
  await c.mergePatch(`/api/v1/namespaces/${NS}/pods/web-n1/status`, {
    status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
  });
  await c.mergePatch(`${dsPath}/status`, {
    status: {
      observedGeneration: ds.metadata.generation,
      desiredNumberScheduled: 1,
      currentNumberScheduled: 1,
      updatedNumberScheduled: 1,
      numberReady: 1,
      numberMisscheduled: 0,
    },
  });
  // What the init container's `apply --live-dir` leaves: the document it applied.
  writeLive(live, cm.data!['nodeconfig.yaml']!);
  const reloader = new Reloader({
    liveDir: live,
    podHash: ds.spec.template.metadata.annotations[POD_HASH_ANNOTATION],
    log,
    node: {
      apply: async (config) => {
        // As the kernel refusing one write of the in-place retune (daemonset/tuning-reload.netns.test.ts).
        if (config.tuning.sysctls.overrides['net.ipv4.tcp_fin_timeout'] === '7')
          throw new Error('tuning.sysctls: the kernel refused net.ipv4.tcp_fin_timeout=7 (EINVAL)');
        if (config.interception.routingTable === 3333)
          throw new Error(
            'preflight refused to apply (nothing was changed): ip -4 route table 3333 already holds a route we did not create',
          );
      },
      reassertGate: async () => undefined,
    },
    publish: (r) =>
      new TuningPublisher(agent, { namespace: NS, name: 'web-n1' }, undefined, CONFIG_CONDITION_TYPE)
        .publish(configCondition(r))
        .then(() => undefined),
  });
  watching = watchConfigMap({
    client: agent,
    namespace: NS,
    name: 'web-nodeconfig',
    onObject: (o) => reloader.offer(o),
    log,
    signal: ac.signal,
  });
  const hash = cm.metadata.annotations!['tpfleet.io/config-hash'];
  await waitFor('n1 reports the hash', async () => node(await tp())?.configHash === hash || undefined);
  assert.equal(cond(await tp(), 'Progressing')?.status, 'False');
});

test('a spec change reaches the node through the watch in seconds, with no new pod template', async () => {
  const gen = (await c.get<Obj>(dsPath))!.metadata.generation;
  const old = (await tp())!.status.configHash;
  const t0 = Date.now();
  await c.mergePatch(tpPath(NS, 'web'), {
    spec: { interception: { ports: [{ port: 80 }, { port: 443 }], destinations: { exclude: ['10.1.0.0/16'] } } },
  });
  const hash = await waitFor('the new config hash', async () => {
    const h = (await tp())?.status?.configHash;
    return (h && h !== old && h) || undefined;
  });
  await waitFor('n1 enforces it', async () => node(await tp())?.configHash === hash || undefined, 10_000);
  const ms = Date.now() - t0;
  process.stdout.write(`# spec patch to status.nodes[n1].configHash: ${ms} ms\n`);
  assert.ok(ms < 5000, `${ms} ms`);
  const o = await tp();
  assert.equal(cond(o, 'Progressing')?.status, 'False');
  assert.equal(cond(o, 'Degraded')?.status, 'False');
  assert.equal((await c.get<Obj>(dsPath))!.metadata.generation, gen, 'no rollout');
});

test('a change the node refuses: it keeps the last good hash, Degraded names the node and the field', async () => {
  const before = node(await tp())!.configHash;
  await c.mergePatch(tpPath(NS, 'web'), { spec: { interception: { routingTable: 3333 } } });
  const o = await waitFor('Degraded ConfigRefused', async () => {
    const x = await tp();
    return (cond(x, 'Degraded')?.reason === 'ConfigRefused' && x) || undefined;
  });
  assert.equal(node(o)!.configHash, before, 'the previous config stays in force');
  assert.match(node(o)!.configRefused, /^changing interception\.routingTable: preflight refused .*table 3333/);
  assert.match(cond(o, 'Degraded')!.message, /config refused on 1 node .*n1: changing interception\.routingTable/);
  // Fixed by the next spec: the refusal clears.
  await c.mergePatch(tpPath(NS, 'web'), { spec: { interception: { routingTable: 2000 } } });
  await waitFor('Degraded clears', async () => cond(await tp(), 'Degraded')?.status === 'False' || undefined);
});

test('tuning (ADR 0020): a net.* sysctl change applies in place and a refused one is Degraded; affinity rolls', async () => {
  const gen = (await c.get<Obj>(dsPath))!.metadata.generation;
  const sysctls = (overrides: Record<string, number>) => ({ spec: { tuning: { sysctls: { overrides } } } });
  const old = (await tp())!.status.configHash;
  const t0 = Date.now();
  await c.mergePatch(tpPath(NS, 'web'), sysctls({ 'net.ipv4.tcp_fin_timeout': 20 }));
  const hash = await waitFor('the new config hash', async () => {
    const h = (await tp())?.status?.configHash;
    return (h && h !== old && h) || undefined;
  });
  await waitFor('n1 enforces it', async () => node(await tp())?.configHash === hash || undefined, 10_000);
  process.stdout.write(`# tuning patch to status.nodes[n1].configHash: ${Date.now() - t0} ms\n`);
  assert.equal((await c.get<Obj>(dsPath))!.metadata.generation, gen, 'no rollout for a net.* sysctl');

  await c.mergePatch(tpPath(NS, 'web'), sysctls({ 'net.ipv4.tcp_fin_timeout': 7 }));
  const o = await waitFor('Degraded ConfigRefused', async () => {
    const x = await tp();
    return (cond(x, 'Degraded')?.reason === 'ConfigRefused' && x) || undefined;
  });
  assert.equal(node(o)!.configHash, hash, 'the last good tuning stays in force');
  assert.match(node(o)!.configRefused, /^changing tuning\.sysctls\.overrides\.net\.ipv4\.tcp_fin_timeout: .*refused/);
  assert.equal((await c.get<Obj>(dsPath))!.metadata.generation, gen, 'still no rollout');
  await c.mergePatch(tpPath(NS, 'web'), sysctls({ 'net.ipv4.tcp_fin_timeout': 21 }));
  await waitFor('Degraded clears', async () => cond(await tp(), 'Degraded')?.status === 'False' || undefined);

  await c.mergePatch(tpPath(NS, 'web'), { spec: { tuning: { affinity: { mode: 'auto' } } } });
  await waitFor(
    'an affinity change rolls the pods (a new pod template)',
    async () => (await c.get<Obj>(dsPath))!.metadata.generation !== gen || undefined,
  );
});

test('the datapath readiness gate (ADR 0021): the pod template names it, the agent account publishes it', async () => {
  const ds = await c.get<Obj>(dsPath);
  assert.deepEqual(ds?.spec.template.spec.readinessGates, [{ conditionType: DATAPATH_CONDITION_TYPE }]);
  const pub = new TuningPublisher(agent, { namespace: NS, name: 'web-n1' }, undefined, DATAPATH_CONDITION_TYPE);
  const pod = () => c.get<Obj>(`/api/v1/namespaces/${NS}/pods/web-n1`);
  assert.equal(await pub.publish(datapathCondition('ProbeFailed', 'IPv4: no reply within 2000 ms')), true);
  assert.equal(cond(await pod(), DATAPATH_CONDITION_TYPE)?.status, 'False');
  assert.equal(await pub.publish(datapathCondition('Passed', 'IPv4, IPv6 to 198.51.100.2, 2001:db8:7470::2')), true);
  const got = cond(await pod(), DATAPATH_CONDITION_TYPE);
  assert.equal(got?.status, 'True');
  assert.equal(got?.reason, 'Passed');
  // The other conditions the agent owns are untouched by this one (strategic merge by type).
  assert.ok(cond(await pod(), CONFIG_CONDITION_TYPE), 'the config condition is still there');
});

test("the agent's account reads its own ConfigMap only: no other one, no list", async () => {
  await c.create('/api/v1/namespaces/fleet/configmaps', {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'secret-ish' },
    data: { a: 'b' },
  });
  const status = (p: Promise<unknown>) =>
    p.then(
      () => 200,
      (e) => (e instanceof ApiError ? e.status : 0),
    );
  assert.equal(await status(agent.get(cmPath)), 200);
  assert.equal(await status(agent.request('GET', '/api/v1/namespaces/fleet/configmaps/secret-ish')), 403);
  assert.equal(await status(agent.list('/api/v1/namespaces/fleet/configmaps')), 403);
  assert.equal(await status(agent.request('GET', '/api/v1/namespaces/other/configmaps/web-nodeconfig')), 403);
});
