// Observing one TransparentProxy's fleet on a cluster, for the e2e tests: its proxy pods, the
// nodes carrying its activation label, "settled at n active nodes" (each with one Ready proxy pod
// and status.replicas agreeing), and "this node is back to its state before install".
import { activeLabelKey } from '../../operator/render/names.ts';
import { kubectlJson, waitFor } from './kube.ts';
import type { Cluster } from './provider.ts';
import { nodeNetState, stateDiff } from './traffic.ts';

export interface FleetPod {
  metadata: { name: string };
  spec: { nodeName?: string };
  status: { conditions?: { type: string; status: string }[] };
}
export const ready = (p: FleetPod) =>
  p.status.conditions?.some((x) => x.type === 'Ready' && x.status === 'True') ?? false;

export function fleet(c: Cluster, ns: string, name: string, before0: ReadonlyMap<string, string>) {
  const pods = async () =>
    (
      await kubectlJson<{ items: FleetPod[] }>(c, [
        'get',
        'pods',
        '-n',
        ns,
        '-l',
        `app.kubernetes.io/name=tpfleet,app.kubernetes.io/instance=${name}`,
      ])
    ).items;
  const tp = () => kubectlJson(c, ['get', 'transparentproxy', '-n', ns, name]);
  const activeNodes = async () =>
    (
      await kubectlJson<{ items: { metadata: { name: string; labels: Record<string, string> } }[] }>(c, [
        'get',
        'nodes',
      ])
    ).items
      .filter((n) => n.metadata.labels[activeLabelKey(ns, name)] === 'true')
      .map((n) => n.metadata.name)
      .sort();
  return {
    pods,
    tp,
    activeNodes,
    hpas: async () => (await kubectlJson<{ items: Record<string, any>[] }>(c, ['get', 'hpa', '-n', ns])).items,
    /** The Ready proxy pod on `node`. */
    podOn: async (node: string) => {
      const p = (await pods()).find((x) => x.spec.nodeName === node && ready(x));
      if (!p) throw new Error(`no Ready proxy pod of ${ns}/${name} on ${node}`);
      return p;
    },
    /** Exactly `n` active nodes, each with one Ready proxy pod, and status.replicas agrees. */
    settle: (n: number, timeoutMs = 180_000) =>
      waitFor(
        `${n} active node(s) with a Ready proxy pod`,
        async () => {
          const [active, ps, obj] = [await activeNodes(), await pods(), await tp()];
          const on = ps
            .filter(ready)
            .map((p) => p.spec.nodeName!)
            .sort();
          if (active.length !== n || JSON.stringify(on) !== JSON.stringify(active) || obj.status?.replicas !== n)
            throw new Error(`active=${active} podsReadyOn=${on} status.replicas=${obj.status?.replicas}`);
          return active;
        },
        timeoutMs,
      ),
    /** `node`'s rules, routes and sysctls are as before install (before0): it has left. */
    restored: (node: string) =>
      waitFor(
        `${node} restored as before install`,
        async () => {
          const now = await nodeNetState(c, node);
          const was = before0.get(node) ?? '';
          if (now !== was) throw new Error(`${node} still differs:\n${stateDiff(was, now) || '(line order)'}`);
          return true;
        },
        120_000,
      ),
  };
}
