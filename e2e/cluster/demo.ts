// `npm run demo`: the whole product on its default, the local-real cluster (supervisor.ts; started
// if it is not running): the operator and chart installed by Helm, a TransparentProxy applied,
// real client traffic crossing a real node and what the server saw, scaling 1 -> 2 -> 1 with the
// node that left restored. The cluster and the TransparentProxy stay for the user to explore;
// `npm run cluster:down` removes everything. Every step is what a user would type with kubectl.
import { activeLabelKey } from '../../operator/render/names.ts';
import { kubectl, kubectlJson, waitFor } from './kube.ts';
import { clusterDir, readUp, up } from './supervisor.ts';
import { probe, sidecarAccepted, startServer } from './traffic.ts';
import { table } from '../table.ts';

const TP = 'demo';
const CANDIDATE = 'tpfleet.io/proxy-candidate';
const WORKLOAD = 'tpfleet.io/workload';
const METRICS_PORT = 15190;

const say = (s: string) => process.stdout.write(`${s}\n`);

interface Tp {
  status?: {
    replicas?: number;
    readyReplicas?: number;
    nodes?: { name: string; state: string; ready: boolean }[];
    conditions?: { type: string; status: string }[];
  };
}

async function main(): Promise<number> {
  if ((await up(clusterDir())) !== 0) return 1;
  const s = readUp()!;
  const c = { kubeconfigPath: s.kubeconfig };
  const ns = s.fleetNamespace;
  const label = activeLabelKey(ns, TP);
  const get = () => kubectlJson<Tp>(c, ['get', 'transparentproxy', '-n', ns, TP]);
  const settled = (n: number) =>
    waitFor(
      `${n} active node(s), Ready`,
      async () => {
        const o = await get();
        const ok =
          o.status?.replicas === n &&
          o.status.readyReplicas === n &&
          o.status.nodes?.every((x) => x.state === 'Active') &&
          o.status.conditions?.find((x) => x.type === 'Ready')?.status === 'True';
        return ok ? o.status!.nodes!.map((x) => x.name) : undefined;
      },
      180_000,
      1000,
    );

  say(
    `\n$ kubectl apply -f - (TransparentProxy ${ns}/${TP}: intercept TCP 8080 on 1 of the candidate nodes, keep the client's address)`,
  );
  await kubectl(
    c,
    ['apply', '-f', '-'],
    JSON.stringify({
      apiVersion: 'tpfleet.io/v1alpha1',
      kind: 'TransparentProxy',
      metadata: { name: TP, namespace: ns },
      spec: {
        nodeSelector: { [CANDIDATE]: 'true' },
        replicas: 1,
        interception: { ports: [{ port: 8080 }], failurePolicy: 'FailClosed' },
        proxy: { keepClientIp: true, metricsPort: METRICS_PORT, timeouts: { drain: '2s' } },
      },
    }),
  );
  const [active] = await settled(1);
  say(await kubectl(c, ['get', 'transparentproxy', '-n', ns]));

  const nodes = await kubectlJson<{ items: { metadata: { name: string; labels: Record<string, string> } }[] }>(c, [
    'get',
    'nodes',
  ]);
  const workload = nodes.items.find((n) => n.metadata.labels[WORKLOAD] === 'true')!.metadata.name;
  const proxyPod = async () =>
    (
      await kubectlJson<{ items: { metadata: { name: string }; spec: { nodeName: string } }[] }>(c, [
        'get',
        'pods',
        '-n',
        ns,
        '-l',
        `app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=${TP}`,
      ])
    ).items.find((p) => p.spec.nodeName === active)!.metadata.name;
  say(`a server pod on ${workload}, client pods on the active proxy node ${active}:`);
  const server = await startServer(c, 'default', workload, s.nodeImage);
  const host = server.includes(':') ? `[${server}]` : server;
  const rows: string[][] = [];
  for (const [what, port, id] of [
    ['intercepted (8080)', 8080, 'demo-a'],
    ['not intercepted (9090)', 9090, 'demo-b'],
  ] as const) {
    const pod = await proxyPod();
    const before = await sidecarAccepted(c, ns, pod, METRICS_PORT);
    const saw = await probe(c, 'default', active!, s.nodeImage, `${host}:${port}`, id);
    const via = (await sidecarAccepted(c, ns, pod, METRICS_PORT)) > before ? 'sidecar' : 'direct';
    rows.push([what, saw.clientIp, `${host}:${port}`, saw.dst, saw.src, via]);
  }
  say(
    table(
      ['connection', 'client pod', 'client asked for', 'server saw destination', 'server saw source', 'carried by'],
      rows,
    ),
  );

  say(`\n$ kubectl scale transparentproxy ${TP} -n ${ns} --replicas=2`);
  await kubectl(c, ['scale', 'transparentproxy', TP, '-n', ns, '--replicas=2']);
  say(`active nodes: ${(await settled(2)).join(', ')}`);
  say(`$ kubectl scale transparentproxy ${TP} -n ${ns} --replicas=1`);
  await kubectl(c, ['scale', 'transparentproxy', TP, '-n', ns, '--replicas=1']);
  const [stays] = await settled(1);
  const left = await waitFor(
    'the node that left to be restored',
    async () => {
      const all = await kubectlJson<{ items: { metadata: { name: string; labels: Record<string, string> } }[] }>(c, [
        'get',
        'nodes',
      ]);
      const labelled = all.items.filter((n) => n.metadata.labels[label] !== undefined).map((n) => n.metadata.name);
      return labelled.length === 1
        ? all.items.find((n) => n.metadata.labels[CANDIDATE] === 'true' && n.metadata.name !== stays)?.metadata.name
        : undefined;
    },
    180_000,
    1000,
  );
  say(`active node: ${stays}; ${left} drained, its rules, routes and tuning were restored, and it lost its label`);
  say(await kubectl(c, ['get', 'nodes', '-L', label, '-L', CANDIDATE]));
  say(
    `The cluster keeps running with ${ns}/${TP} applied. Try:\n  export KUBECONFIG=${s.kubeconfig}\n  kubectl describe transparentproxy -n ${ns} ${TP}\n  kubectl delete transparentproxy -n ${ns} ${TP}   # every node restored, then the fleet objects go\n  npm run cluster:down                                  # remove the cluster`,
  );
  return 0;
}

process.exitCode = await main().catch((e: Error) => {
  process.stderr.write(`demo failed: ${e.message}\n`);
  return 1;
});
