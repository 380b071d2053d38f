// The `local` provider itself: from kind-config.yaml it makes the nodes kind would, and the real
// controllers act on them — the scheduler and DaemonSet controller place pods on labelled nodes,
// the HPA controller reads the custom metrics API and scales through /scale — and delete()
// leaves nothing behind. Needs root (a network namespace); the binaries build on first use.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import { localProvider, type LocalCluster } from './local.ts';

const KIND_CONFIG = join(import.meta.dirname, '..', '..', 'kind-config.yaml');
const CANDIDATE = 'tpfleet.io/proxy-candidate';

interface Pod {
  metadata: { name: string };
  spec: { nodeName?: string };
  status: { phase?: string; podIP?: string; hostIP?: string; conditions?: { type: string; status: string }[] };
}
interface Node {
  metadata: { name: string; labels: Record<string, string> };
  spec: { taints?: { key: string; effect: string }[] };
  status: { addresses: { type: string; address: string }[]; conditions: { type: string; status: string }[] };
}
const ready = (p: Pod) =>
  p.status.phase === 'Running' &&
  (p.status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True') ?? false);
const ip = (args: string[]) => new Promise<string>((resolve) => execFile('ip', args, (_e, out) => resolve(out)));
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('the local cluster provider', { concurrency: false }, async () => {
  const reason = await localProvider.unavailable();
  if (reason) {
    it('runs only as root', (t) => t.skip(reason));
    return;
  }
  let c: LocalCluster;
  const pods = async (ns: string, selector: string) =>
    (await kubectlJson<{ items: Pod[] }>(c, ['get', 'pods', '-n', ns, '-l', selector])).items;

  before(async () => {
    const t0 = Date.now();
    c = await localProvider.create(KIND_CONFIG);
    process.stdout.write(
      `local provider: cluster up in ${((Date.now() - t0) / 1000).toFixed(1)} s (binaries already built)\n`,
    );
  });
  after(async () => {
    await c?.delete();
  });

  it('registers the kind-config.yaml nodes, Ready, with their labels and the control-plane taint', async () => {
    const nodes = (await kubectlJson<{ items: Node[] }>(c, ['get', 'nodes'])).items;
    assert.deepEqual(nodes.map((n) => n.metadata.name).sort(), [
      'tpfleet-e2e-control-plane',
      'tpfleet-e2e-worker',
      'tpfleet-e2e-worker2',
      'tpfleet-e2e-worker3',
    ]);
    for (const declared of c.nodes) {
      const n = nodes.find((x) => x.metadata.name === declared.name)!;
      assert.ok(
        n.status.conditions.some((x) => x.type === 'Ready' && x.status === 'True'),
        `${n.metadata.name} Ready`,
      );
      for (const [k, v] of Object.entries({
        ...declared.labels,
        'kubernetes.io/hostname': declared.name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
      })) {
        assert.equal(n.metadata.labels[k], v, `${n.metadata.name} label ${k}`);
      }
      const cp = declared.role === 'control-plane';
      assert.equal('node-role.kubernetes.io/control-plane' in n.metadata.labels, cp, `${n.metadata.name} role label`);
      assert.deepEqual(
        (n.spec.taints ?? []).map((t) => `${t.key}:${t.effect}`),
        cp ? ['node-role.kubernetes.io/control-plane:NoSchedule'] : [],
      );
    }
    assert.deepEqual(
      c.nodes.filter((n) => n.labels[CANDIDATE] === 'true').map((n) => n.name),
      ['tpfleet-e2e-worker', 'tpfleet-e2e-worker2'],
    );
  });

  it('the controller-manager makes the default ServiceAccount of a new namespace, and its token authenticates', async () => {
    await kubectl(c, ['create', 'namespace', 'sa-check']);
    await waitFor(
      'ServiceAccount sa-check/default',
      async () =>
        (await kubectl(c, ['get', 'serviceaccount', 'default', '-n', 'sa-check', '-o', 'name'])).trim() || undefined,
      30_000,
    );
    await waitFor(
      'the kube-root-ca.crt ConfigMap',
      async () =>
        (await kubectl(c, ['get', 'configmap', 'kube-root-ca.crt', '-n', 'sa-check', '-o', 'name'])).trim() ||
        undefined,
      30_000,
    );
    // The suite runs the operator with its ServiceAccount's token: a bound token authenticates.
    const token = (await kubectl(c, ['create', 'token', 'default', '-n', 'sa-check', '--duration=10m'])).trim();
    const admin = parse(readFileSync(c.kubeconfigPath, 'utf8')) as { clusters: { cluster: Record<string, string> }[] };
    const saConfig = { kubeconfigPath: join(c.dir, 'sa-check.kubeconfig') };
    writeFileSync(
      saConfig.kubeconfigPath,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        'current-context': 'sa',
        clusters: [{ name: 'c', cluster: admin.clusters[0]!.cluster }],
        users: [{ name: 'sa', user: { token } }],
        contexts: [{ name: 'sa', context: { cluster: 'c', user: 'sa' } }],
      }),
      { mode: 0o600 },
    );
    const who = await kubectlJson(saConfig, ['auth', 'whoami']);
    assert.equal(who.status.userInfo.username, 'system:serviceaccount:sa-check:default');
  });

  it('a DaemonSet runs one Ready pod per selected node and follows node labels', async () => {
    const ds = {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { name: 'agent', namespace: 'default' },
      spec: {
        selector: { matchLabels: { app: 'agent' } },
        template: {
          metadata: { labels: { app: 'agent' } },
          spec: {
            nodeSelector: { [CANDIDATE]: 'true' },
            hostNetwork: true,
            initContainers: [{ name: 'init', image: 'example.invalid/init:1' }],
            containers: [{ name: 'agent', image: 'example.invalid/agent:1' }],
          },
        },
      },
    };
    await kubectl(c, ['apply', '-f', '-'], JSON.stringify(ds));
    const onNodes = (want: string[]) =>
      waitFor(
        `agent pods Running+Ready on exactly ${want}`,
        async () => {
          const ps = await pods('default', 'app=agent');
          const got = ps
            .filter(ready)
            .map((p) => p.spec.nodeName!)
            .sort();
          if (ps.length !== want.length || JSON.stringify(got) !== JSON.stringify(want))
            throw new Error(`pods on ${ps.map((p) => `${p.spec.nodeName}(${p.status.phase})`)}`);
          return ps;
        },
        60_000,
      );
    const ps = await onNodes(['tpfleet-e2e-worker', 'tpfleet-e2e-worker2']);
    const nodes = (await kubectlJson<{ items: Node[] }>(c, ['get', 'nodes'])).items;
    for (const p of ps) {
      const nodeIp = nodes
        .find((n) => n.metadata.name === p.spec.nodeName)!
        .status.addresses.find((a) => a.type === 'InternalIP')!.address;
      assert.equal(p.status.podIP, nodeIp, "a hostNetwork pod has its node's address");
    }
    await kubectl(c, ['label', 'node', 'tpfleet-e2e-worker3', `${CANDIDATE}=true`]);
    await onNodes(['tpfleet-e2e-worker', 'tpfleet-e2e-worker2', 'tpfleet-e2e-worker3']);
    await kubectl(c, ['label', 'node', 'tpfleet-e2e-worker3', `${CANDIDATE}-`]);
    await onNodes(['tpfleet-e2e-worker', 'tpfleet-e2e-worker2']); // the pod was deleted and is gone
    await kubectl(c, ['delete', 'daemonset', 'agent', '-n', 'default', '--wait=true']);
    await waitFor(
      'the agent pods to be gone',
      async () => ((await pods('default', 'app=agent')).length === 0 ? true : undefined),
      60_000,
    );
  });

  it('the HPA scales a Deployment up and down on a Pods custom metric set through the adapter', async () => {
    const ns = 'hpa-check',
      metric = 'requests_per_second';
    await kubectl(c, ['create', 'namespace', ns]);
    await kubectl(
      c,
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          {
            apiVersion: 'apps/v1',
            kind: 'Deployment',
            metadata: { name: 'web', namespace: ns },
            spec: {
              replicas: 1,
              selector: { matchLabels: { app: 'web' } },
              template: {
                metadata: { labels: { app: 'web' } },
                spec: { containers: [{ name: 'web', image: 'example.invalid/web:1' }] },
              },
            },
          },
          {
            apiVersion: 'autoscaling/v2',
            kind: 'HorizontalPodAutoscaler',
            metadata: { name: 'web', namespace: ns },
            spec: {
              scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'web' },
              minReplicas: 1,
              maxReplicas: 5,
              metrics: [
                {
                  type: 'Pods',
                  pods: { metric: { name: metric }, target: { type: 'AverageValue', averageValue: '10' } },
                },
              ],
              behavior: { scaleDown: { stabilizationWindowSeconds: 0 } },
            },
          },
        ],
      }),
    );
    const [first] = await waitFor(
      'one Ready web pod',
      async () => {
        const ps = (await pods(ns, 'app=web')).filter(ready);
        return ps.length === 1 ? ps : undefined;
      },
      60_000,
    );
    await c.setPodMetric!(ns, first!.metadata.name, metric, 30);
    const raw = JSON.parse(
      await kubectl(c, [
        'get',
        '--raw',
        `/apis/custom.metrics.k8s.io/v1beta2/namespaces/${ns}/pods/${first!.metadata.name}/${metric}`,
      ]),
    );
    assert.equal(raw.items[0].value, '30', 'the custom metrics API serves the value that was set');
    assert.equal(raw.items[0].describedObject.name, first!.metadata.name);
    // 30 per pod against a target average of 10: the HPA wants ceil(1 * 30 / 10) = 3 replicas.
    await waitFor(
      'the HPA to scale web to 3 Ready pods',
      async () => {
        const d = await kubectlJson(c, ['get', 'deployment', 'web', '-n', ns]);
        const n = (await pods(ns, 'app=web')).filter(ready).length;
        if (d.spec.replicas !== 3 || n !== 3) throw new Error(`spec.replicas=${d.spec.replicas} ready=${n}`);
        return true;
      },
      60_000,
    );
    const hpa = await kubectlJson(c, ['get', 'hpa', 'web', '-n', ns]);
    assert.equal(hpa.status.desiredReplicas, 3);
    assert.equal(
      hpa.status.currentMetrics[0].pods.current.averageValue,
      '30',
      'the HPA reports the average of the pods that have the metric',
    );
    // Load falls to 4 per pod on all three: ceil(3 * 4 / 10) = 2 (no scale-down stabilization here).
    for (const p of await pods(ns, 'app=web')) await c.setPodMetric!(ns, p.metadata.name, metric, 4);
    await waitFor(
      'the HPA to scale web down to 2',
      async () => {
        const d = await kubectlJson(c, ['get', 'deployment', 'web', '-n', ns]);
        const n = (await pods(ns, 'app=web')).length;
        if (d.spec.replicas !== 2 || n !== 2) throw new Error(`spec.replicas=${d.spec.replicas} pods=${n}`);
        return true;
      },
      60_000,
    );
  });

  it('delete() stops every process and removes its directory and network namespace', async () => {
    const pids = c.pids,
      dir = c.dir;
    assert.equal(
      pids.length,
      6,
      'etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, metrics adapter',
    );
    assert.ok(pids.every(alive), 'all running before delete()');
    await c.delete();
    await c.delete(); // idempotent
    assert.deepEqual(pids.filter(alive), [], 'no process left');
    assert.equal(existsSync(dir), false, 'data directory removed');
    assert.ok(!(await ip(['netns', 'list'])).includes(c.net.ns), 'network namespace removed');
    assert.ok(!(await ip(['-4', '-o', 'addr', 'show'])).includes(`${c.net.hostIp}/`), 'host address removed');
  });
});
