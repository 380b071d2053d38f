// `kubectl tpfleet rules NODE`: the rule set and policy routing a node enforces, as its node agent
// applied, read back and verified them. The agent's apply (the proxy pod's init container) prints
// that plan on stdout (daemonset/main.ts), so this reads the container's log through the API.
//
// Why the log and not exec or ssh: `get pods/log` is read-only and shows only what the agent chose
// to print. `create pods/exec` on these pods would be a root shell on the node (they run in the
// host network with NET_ADMIN, the init container privileged), and ssh needs node access. The log
// shows the plan of the pod's last apply; the watchdog's bypass/gate chains switch at runtime and
// are in the rules as empty chains (their state is in the sidecar's metrics, not here).
import type { KubeClient, KubeObject } from '../kube/client.ts';

export const APPLY_CONTAINER = 'agent-apply';

type Pod = KubeObject & {
  spec?: {
    nodeName?: string;
    initContainers?: { name: string }[];
    volumes?: { name: string; configMap?: { name: string } }[];
  };
  status?: { phase?: string };
};

/** Fleets (namespace/name) whose status lists the node, with its state there. */
export async function fleetsOnNode(
  c: KubeClient,
  node: string,
): Promise<{ namespace: string; name: string; state: string; selector?: string }[]> {
  const list = await c.list('/apis/tpfleet.io/v1alpha1/transparentproxies');
  type Tp = KubeObject & { status?: { selector?: string; nodes?: { name: string; state: string }[] } };
  return (list.items as Tp[]).flatMap((tp) => {
    const n = tp.status?.nodes?.find((x) => x.name === node);
    return n
      ? [
          {
            namespace: tp.metadata.namespace ?? '',
            name: tp.metadata.name,
            state: n.state,
            selector: tp.status?.selector,
          },
        ]
      : [];
  });
}

/** The fleet's proxy pod on a node (status.selector is the proxy pods' selector, as /scale uses it). */
export async function proxyPod(
  c: KubeClient,
  namespace: string,
  selector: string,
  node: string,
): Promise<Pod | undefined> {
  const pods = await c.list(`/api/v1/namespaces/${namespace}/pods`, {
    labelSelector: selector,
    fieldSelector: `spec.nodeName=${node}`,
  });
  // During a surge rollout two pods run on the node: the newest applied last.
  return (pods.items as Pod[]).sort((a, b) =>
    (b.metadata.creationTimestamp ?? '').localeCompare(a.metadata.creationTimestamp ?? ''),
  )[0];
}

/** The plan lines of an apply log: stdout lines, without the agent's JSON log lines (stderr). */
export function planFromLog(log: string): string {
  return log
    .split('\n')
    .filter((l) => !l.startsWith('{"level"'))
    .join('\n')
    .trim();
}

export async function rules(c: KubeClient, node: string): Promise<string> {
  const fleets = (await fleetsOnNode(c, node)).filter((f) => f.selector);
  if (fleets.length === 0) return `node ${node}: no TransparentProxy lists it (no tpfleet rules there)\n`;
  const out: string[] = [];
  for (const f of fleets) {
    out.push(`# fleet ${f.namespace}/${f.name}: node ${node} is ${f.state}`);
    const pod = await proxyPod(c, f.namespace, f.selector!, node);
    if (!pod) {
      out.push(
        `# no proxy pod on ${node}${f.state === 'Draining' ? ' (draining: its rules are being removed)' : ''}`,
        '',
      );
      continue;
    }
    const log = await c.request<string>('GET', `/api/v1/namespaces/${f.namespace}/pods/${pod.metadata.name}/log`, {
      query: { container: APPLY_CONTAINER },
      // The log endpoint answers text/plain and refuses an Accept without it or a wildcard.
      accept: '*/*',
    });
    out.push(`# from pod ${f.namespace}/${pod.metadata.name}, container ${APPLY_CONTAINER}`, planFromLog(log), '');
  }
  return `${out.join('\n')}\n`;
}
