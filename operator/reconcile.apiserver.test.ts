// Reconcile against a real kube-apiserver: objects, owner references, config propagation,
// InvalidSpec without partial changes, HPA, readiness and the deletion finalizer. No
// kube-controller-manager or kubelet runs here: where a test needs DaemonSet or Pod status it
// writes it the way the DaemonSet controller and the kubelet would, and says so.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parseNodeConfigText } from '../api/load.ts';
import { KubeClient, type KubeObject } from '../kube/client.ts';
import {
  activeLabelKey,
  CONFIG_HASH_ANNOTATION,
  FINALIZER,
  MODE_ANNOTATION,
  POD_HASH_ANNOTATION,
} from './render/names.ts';
import { completeLeaves, createNamespace, createNode, installCrd, tpPath, waitFor } from '../e2e/testenv/fixtures.ts';
import { startOperator, type RunningOperator } from '../e2e/testenv/operator.ts';
import { startTestEnv, type TestEnv } from '../e2e/testenv/testenv.ts';

let env: TestEnv, c: KubeClient, op: RunningOperator;
const NS = 'fleet';
type Obj = KubeObject & { spec?: any; status?: any; data?: Record<string, string> };

before(async () => {
  env = await startTestEnv();
  c = new KubeClient(env.kubeConfig, 'test-user');
  await installCrd(c);
  await createNamespace(c, NS);
  for (const n of ['n1', 'n2']) await createNode(c, n, { zone: 'z1' });
  op = await startOperator(env.kubeconfigPath, { cleanupTimeoutMs: 8000 });
});
after(async () => {
  await op?.stop();
  await env?.stop();
});

const get = (path: string) => c.get<Obj>(path);
const ds = (name: string) => get(`/apis/apps/v1/namespaces/${NS}/daemonsets/${name}`);
const cm = (name: string) => get(`/api/v1/namespaces/${NS}/configmaps/${name}-nodeconfig`);
const tp = (name: string) => get(tpPath(NS, name));
const cond = (o: Obj | undefined, type: string) =>
  o?.status?.conditions?.find((x: { type: string }) => x.type === type);
const createTp = (name: string, spec: object) =>
  c.create(tpPath(NS), { apiVersion: 'tpfleet.io/v1alpha1', kind: 'TransparentProxy', metadata: { name }, spec });

test('reconcile creates the fleet objects, owned by the TransparentProxy', async () => {
  const created = await createTp('web', { interception: { ports: [{ port: 80 }] }, proxy: { keepClientIp: true } });
  const d = await waitFor('DaemonSet', () => ds('web'));
  for (const path of [
    `/api/v1/namespaces/${NS}/serviceaccounts/web`,
    `/api/v1/namespaces/${NS}/configmaps/web-nodeconfig`,
    `/api/v1/namespaces/${NS}/services/web-metrics`,
    `/apis/apps/v1/namespaces/${NS}/daemonsets/web`,
  ]) {
    const o = await waitFor(path, () => get(path));
    assert.deepEqual(
      o.metadata.ownerReferences?.map((r) => [r.kind, r.name, r.uid, r.controller]),
      [['TransparentProxy', 'web', created.metadata.uid, true]],
      path,
    );
    assert.ok(
      (o.metadata as { managedFields?: { manager: string }[] }).managedFields?.some(
        (m) => m.manager === 'tpfleet-operator',
      ),
      `${path}: applied by the operator's field manager`,
    );
  }
  const config = parseNodeConfigText((await cm('web'))!.data!['nodeconfig.yaml']!);
  assert.deepEqual(config.interception.ports, [{ port: 80 }]);
  assert.equal(config.proxy.keepClientIp, true);
  const pod = d.spec.template.spec;
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.deepEqual(
    pod.initContainers.map((x: any) => [x.name, x.command[1], x.securityContext.privileged]),
    [['agent-apply', 'apply', true]],
  );
  const [sidecar, watch] = pod.containers;
  assert.equal(sidecar.securityContext.runAsNonRoot, true);
  assert.deepEqual(sidecar.securityContext.capabilities, { drop: ['ALL'], add: ['NET_RAW'] });
  // Readiness asks for this pod template's own sidecar (two pods share the port during a surge).
  const token = /^\/readyz\?template=([0-9a-f]{16})$/.exec(sidecar.readinessProbe.httpGet.path)?.[1];
  assert.ok(token, sidecar.readinessProbe.httpGet.path);
  assert.deepEqual(sidecar.command.slice(-2), ['--template', token]);
  assert.match(sidecar.readinessProbe.httpGet.host, /^127\.\d+\.\d+\.\d+$/, "the sidecar's own loopback address");
  assert.equal(sidecar.ports, undefined, 'no declared (host) port: it would block the surge pod');
  assert.equal(watch.securityContext.privileged, false);
  assert.deepEqual(d.spec.updateStrategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 });
  const t = await waitFor('status', async () => {
    const o = await tp('web');
    return o?.status?.observedGeneration === 1 && o;
  });
  assert.deepEqual(t.metadata.finalizers, [FINALIZER]);
  assert.equal(cond(t, 'InvalidSpec')?.status, 'False');
  assert.equal(t.status.replicas, 2, 'every candidate node is active when replicas is omitted');
  assert.equal(t.status.selector, 'app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=web');
  assert.equal(t.status.configHash, (await cm('web'))!.metadata.annotations![CONFIG_HASH_ANNOTATION]);
  assert.match(d.spec.template.metadata.annotations[POD_HASH_ANNOTATION], /^[0-9a-f]{16}$/);
});

test('a spec change reaches the ConfigMap in place (new config hash, same pod template); a restart field rolls the pods', async () => {
  const d0 = (await ds('web'))!;
  const hash0 = (await cm('web'))!.metadata.annotations![CONFIG_HASH_ANNOTATION];
  await c.mergePatch(tpPath(NS, 'web'), { spec: { interception: { ports: [{ port: 80 }, { port: 443 }] } } });
  const m = await waitFor('new config hash', async () => {
    const o = await cm('web');
    return o?.metadata.annotations?.[CONFIG_HASH_ANNOTATION] !== hash0 && o;
  });
  const config = parseNodeConfigText(m.data!['nodeconfig.yaml']!);
  assert.deepEqual(config.interception.ports, [{ port: 80 }, { port: 443 }]);
  const hash = m.metadata.annotations![CONFIG_HASH_ANNOTATION];
  await waitFor('status hash', async () => (await tp('web'))?.status?.configHash === hash);
  assert.equal((await ds('web'))!.metadata.generation, d0.metadata.generation, 'the nodes reload it: no rollout');
  assert.equal(
    m.metadata.annotations![POD_HASH_ANNOTATION],
    d0.spec.template.metadata.annotations[POD_HASH_ANNOTATION],
  );
  // A restart field (api/reload.ts): a new pod hash in the template, and the ConfigMap says so.
  await c.mergePatch(tpPath(NS, 'web'), { spec: { proxy: { backlog: 2048 } } });
  const d = await waitFor('new pod hash', async () => {
    const o = await ds('web');
    return (
      o?.spec.template.metadata.annotations[POD_HASH_ANNOTATION] !==
        d0.spec.template.metadata.annotations[POD_HASH_ANNOTATION] && o
    );
  });
  await waitFor(
    'the ConfigMap names the same pod hash',
    async () =>
      (await cm('web'))?.metadata.annotations?.[POD_HASH_ANNOTATION] ===
      d.spec.template.metadata.annotations[POD_HASH_ANNOTATION],
  );
});

test('a spec only the NodeConfig parser can reject yields InvalidSpec naming the field and changes nothing', async () => {
  const [d0, c0] = [await ds('web'), await cm('web')];
  // mark outside mask passes schema and CEL (CEL has no bit operations) but not api/nodeconfig.ts.
  await c.mergePatch(tpPath(NS, 'web'), {
    spec: { interception: { mark: 0x1000, mask: 0x2000 }, proxy: { image: 'registry.example/other:2' } },
  });
  const t = await waitFor('InvalidSpec', async () => {
    const o = await tp('web');
    return cond(o, 'InvalidSpec')?.status === 'True' && o;
  });
  assert.match(cond(t, 'InvalidSpec').message, /spec\.interception\.mark: must lie within mask/);
  assert.equal(cond(t, 'Ready').status, 'False');
  assert.equal(t.status.observedGeneration, t.metadata.generation);
  assert.equal(
    (await ds('web'))!.metadata.resourceVersion,
    d0!.metadata.resourceVersion,
    'DaemonSet untouched (image change not applied)',
  );
  assert.equal((await cm('web'))!.metadata.resourceVersion, c0!.metadata.resourceVersion, 'ConfigMap untouched');
  await c.mergePatch(tpPath(NS, 'web'), { spec: { interception: { mark: 0x2000 } } });
  await waitFor('valid again', async () => cond(await tp('web'), 'InvalidSpec')?.status === 'False');
  assert.equal((await ds('web'))!.spec.template.spec.containers[0].image, 'registry.example/other:2');
});

test('autoscaling.enabled creates an HPA on /scale; disabling deletes it', async () => {
  const hpaPath = `/apis/autoscaling/v2/namespaces/${NS}/horizontalpodautoscalers/web`;
  // The API server refuses autoscaling without spec.replicas (/scale would be unreadable).
  await assert.rejects(
    c.mergePatch(tpPath(NS, 'web'), { spec: { autoscaling: { enabled: true, maxReplicas: 2 } } }),
    /replicas is required when autoscaling is enabled/,
  );
  await c.mergePatch(tpPath(NS, 'web'), {
    spec: {
      replicas: 2,
      autoscaling: { enabled: true, minReplicas: 1, maxReplicas: 2, targetConnectionsPerProxy: 500 },
    },
  });
  const h = await waitFor('HPA', () => get(hpaPath));
  assert.deepEqual(h.spec.scaleTargetRef, { apiVersion: 'tpfleet.io/v1alpha1', kind: 'TransparentProxy', name: 'web' });
  assert.equal(h.spec.maxReplicas, 2);
  assert.equal(h.spec.metrics[0].pods.target.averageValue, '500');
  await c.mergePatch(tpPath(NS, 'web'), { spec: { replicas: null, autoscaling: { enabled: false } } });
  await waitFor('HPA deleted', async () => (await get(hpaPath)) === undefined);
});

/** What the DaemonSet controller writes once `ready` of `desired` pods run the current template. */
async function writeDaemonSetStatus(name: string, desired: number, ready: number): Promise<void> {
  const d = (await ds(name))!;
  await c.mergePatch(`/apis/apps/v1/namespaces/${NS}/daemonsets/${name}/status`, {
    status: {
      observedGeneration: d.metadata.generation,
      desiredNumberScheduled: desired,
      currentNumberScheduled: desired,
      updatedNumberScheduled: desired,
      numberReady: ready,
      numberAvailable: ready,
      numberMisscheduled: 0,
    },
  });
}

/** A proxy pod on `node` as the DaemonSet controller creates it and the kubelet reports it Ready. */
async function createReadyPod(tpName: string, node: string): Promise<void> {
  const d = (await ds(tpName))!;
  const pod = await c.create<Obj>(`/api/v1/namespaces/${NS}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `${tpName}-${node}`, labels: d.spec.template.metadata.labels },
    spec: { ...d.spec.template.spec, nodeName: node },
  });
  await c.mergePatch(`/api/v1/namespaces/${NS}/pods/${pod.metadata.name}/status`, {
    status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
  });
}

test('Ready follows the DaemonSet rollout and per-node pod readiness', async () => {
  await writeDaemonSetStatus('web', 2, 0);
  let t = await waitFor('not ready', async () => {
    const o = await tp('web');
    return cond(o, 'Ready')?.reason === 'NodesNotReady' && o;
  });
  assert.equal(cond(t, 'Degraded').status, 'True');
  await createReadyPod('web', 'n1');
  await createReadyPod('web', 'n2');
  await writeDaemonSetStatus('web', 2, 2);
  t = await waitFor('ready', async () => {
    const o = await tp('web');
    return cond(o, 'Ready')?.status === 'True' && o;
  });
  assert.equal(t.status.readyReplicas, 2);
  assert.deepEqual(
    t.status.nodes.map((n: any) => [n.name, n.state, n.ready]),
    [
      ['n1', 'Active', true],
      ['n2', 'Active', true],
    ],
  );
  assert.equal(cond(t, 'Progressing').status, 'False');
});

test('deletion: the finalizer switches the fleet to cleanup mode and waits for the nodes to report done', async () => {
  await c.delete(tpPath(NS, 'web'));
  const d = await waitFor('cleanup mode', async () => {
    const o = await ds('web');
    return o?.spec.template.metadata.annotations[MODE_ANNOTATION] === 'cleanup' && o;
  });
  assert.deepEqual(
    d.spec.template.spec.initContainers.map((x: any) => x.command.slice(0, 2)),
    [['tpfleet-agent', 'cleanup']],
  );
  assert.equal(d.spec.updateStrategy.rollingUpdate.maxUnavailable, '100%');
  await new Promise((r) => setTimeout(r, 1000));
  const t = await tp('web');
  assert.ok(t?.metadata.deletionTimestamp, 'still there while nodes clean up');
  assert.equal(cond(t, 'Progressing')?.reason, 'CleaningUp');
  // The node side reports "done" by its cleanup pod becoming Ready; the DaemonSet controller
  // aggregates that into this status (written here as it would).
  await writeDaemonSetStatus('web', 2, 2);
  await waitFor('TransparentProxy gone', async () => (await tp('web')) === undefined);
});

test('deletion also waits for a node still leaving after a scale-in, then clears its label', async () => {
  const label = activeLabelKey(NS, 'shrink');
  const labelOf = async (n: string) => (await get(`/api/v1/nodes/${n}`))?.metadata.labels?.[label];
  await createTp('shrink', { replicas: 2 });
  await waitFor('two active nodes', async () => (await labelOf('n1')) === 'true' && (await labelOf('n2')) === 'true');
  await c.mergePatch(tpPath(NS, 'shrink'), { spec: { replicas: 1 } });
  const leaving = await waitFor('one node leaving', async () => {
    const l = [(await labelOf('n1')) === 'leaving' && 'n1', (await labelOf('n2')) === 'leaving' && 'n2'].filter(
      Boolean,
    );
    return l.length === 1 && (l[0] as string);
  });
  await c.delete(tpPath(NS, 'shrink'));
  await waitFor(
    'cleanup mode',
    async () => (await ds('shrink'))?.spec.template.metadata.annotations[MODE_ANNOTATION] === 'cleanup',
  );
  await writeDaemonSetStatus('shrink', 1, 1); // the active node has cleaned up
  const t = await waitFor('waiting for the leaving node', async () => {
    const o = await tp('shrink');
    return /^1 of 2 nodes still removing their rules/.test(cond(o, 'Progressing')?.message ?? '') && o;
  });
  assert.ok(t.metadata.deletionTimestamp);
  assert.deepEqual(await completeLeaves(c, NS, 'shrink', label), [leaving], 'its leave pod now reports done');
  await waitFor('TransparentProxy gone', async () => (await tp('shrink')) === undefined);
  assert.equal(await labelOf(leaving), undefined, 'no label is left behind');
});

test('past --cleanup-timeout the finalizer stays while a node holds rules: Degraded names it', async () => {
  await createTp('stuck', {});
  await waitFor('DaemonSet', () => ds('stuck'));
  await waitFor('finalizer', async () => (await tp('stuck'))?.metadata.finalizers?.includes(FINALIZER));
  await createReadyPod('stuck', 'n2'); // a proxy pod runs on n2: its node has rules
  const start = Date.now();
  await c.delete(tpPath(NS, 'stuck'));
  await waitFor(
    'cleanup mode',
    async () => (await ds('stuck'))?.spec.template.metadata.annotations[MODE_ANNOTATION] === 'cleanup',
  );
  await writeDaemonSetStatus('stuck', 1, 0); // n2's cleanup pod never turns Ready (node unreachable)
  const t = await waitFor(
    'Degraded after the timeout',
    async () => {
      const o = await tp('stuck');
      return cond(o, 'Degraded')?.reason === 'CleanupTimedOut' && o;
    },
    20_000,
  );
  assert.ok(Date.now() - start >= 7000, `Degraded after ${Date.now() - start} ms for an 8 s timeout`);
  assert.match(cond(t, 'Degraded').message, /still waiting after 8s for nodes to remove their rules \(n2\)/);
  assert.ok(t.metadata.finalizers?.includes(FINALIZER), 'the finalizer stays');
  await new Promise((r) => setTimeout(r, 3000));
  assert.ok((await tp('stuck'))?.metadata.finalizers?.includes(FINALIZER), 'still there 3 s later');
  // The node reports done (its cleanup pod Ready): the deletion completes.
  await c.delete(`/api/v1/namespaces/${NS}/pods/stuck-n2`, { gracePeriodSeconds: '0' });
  await writeDaemonSetStatus('stuck', 1, 1);
  await waitFor('gone once the node is clean', async () => (await tp('stuck')) === undefined, 20_000);
});
