// One TransparentProxy per node. The node agent owns node-wide names (the nftables table
// `inet tpfleet`, the fwmark ip rule and route table, the TPROXY listen port): a second object on
// the same node would replace the first one's rules and its cleanup would remove them. So the
// nodes two objects' nodeSelectors match must not overlap; when they do, the older object
// (creation time, then namespace/name) keeps them and the newer one is refused like an invalid
// spec: nothing is applied for it and its status names the other object and the shared nodes.
// Labels only, not readiness or taints: a node going NotReady must not hand it to the other
// object for a while (the outcome would flap with node health). Pure over the caches.
import type { TransparentProxySpec } from '../api/transparentproxy.ts';
import type { KubeObject } from '../kube/client.ts';
import { renderedSpec } from './render/nodeconfig.ts';
import { matchesSelector } from './scheduling.ts';

const SHOWN = 10;

/** Names of the nodes whose labels the selector matches (sorted). */
const matching = (nodes: KubeObject[], selector?: Record<string, string>) =>
  nodes
    .filter((n) => matchesSelector(n, selector))
    .map((n) => n.metadata.name)
    .sort();

const age = (o: KubeObject) =>
  [o.metadata.creationTimestamp ?? '', o.metadata.namespace ?? '', o.metadata.name] as const;
function older(a: KubeObject, b: KubeObject): boolean {
  const [x, y] = [age(a), age(b)];
  for (let k = 0; k < x.length; k++) if (x[k] !== y[k]) return x[k]! < y[k]!;
  return false;
}

/**
 * The problem to report when an older object's nodeSelector already matches nodes this one's does,
 * or undefined. An older object whose spec does not render keeps the nodes its last applied
 * DaemonSet selects (`applied`: its template's node selector, or undefined when it never ran): it
 * keeps running there (InvalidSpec changes nothing), so those nodes are not free (issue 20).
 */
export function nodeConflict(
  tp: KubeObject,
  spec: TransparentProxySpec,
  proxies: KubeObject[],
  nodes: KubeObject[],
  applied: (o: KubeObject) => Record<string, string> | undefined = () => undefined,
): string | undefined {
  const mine = new Set(matching(nodes, spec.nodeSelector));
  if (mine.size === 0) return undefined;
  const rivals = proxies
    .filter((o) => o.metadata.uid !== tp.metadata.uid && older(o, tp))
    .sort((a, b) => (older(a, b) ? -1 : 1));
  for (const other of rivals) {
    const r = renderedSpec(other);
    const selector = r.ok ? r.value.spec.nodeSelector : applied(other);
    if (!r.ok && selector === undefined) continue; // never applied: takes no nodes
    const shared = matching(nodes, selector).filter((n) => mine.has(n));
    if (shared.length === 0) continue;
    const list =
      shared.slice(0, SHOWN).join(', ') + (shared.length > SHOWN ? ` and ${shared.length - SHOWN} more` : '');
    return (
      `spec.nodeSelector: node(s) ${list} are also selected by TransparentProxy ${other.metadata.namespace}/${other.metadata.name}, ` +
      'which is older; one TransparentProxy per node (the node agent owns one nftables table, fwmark rule and listen port per node): ' +
      'make the nodeSelectors select disjoint nodes'
    );
  }
  return undefined;
}

/**
 * The other half of a conflict that arose after both objects ran (a node relabelled to match both
 * selectors): the newer object is refused, but InvalidSpec changes nothing, so its DaemonSet still
 * runs on the shared nodes. The older object reports it too (Degraded NodesShared), naming the
 * newer object and the nodes, so the overlap shows on both (issue 20). undefined: none.
 */
export function sharedWithNewer(
  tp: KubeObject,
  spec: TransparentProxySpec,
  proxies: KubeObject[],
  nodes: KubeObject[],
  applied: (o: KubeObject) => Record<string, string> | undefined,
): string | undefined {
  const mine = new Set(matching(nodes, spec.nodeSelector));
  if (mine.size === 0) return undefined;
  const newer = proxies
    .filter((o) => o.metadata.uid !== tp.metadata.uid && older(tp, o))
    .sort((a, b) => (older(a, b) ? -1 : 1));
  for (const other of newer) {
    const selector = applied(other);
    if (selector === undefined) continue; // never ran: it holds no node
    const shared = matching(nodes, selector).filter((n) => mine.has(n));
    if (shared.length === 0) continue;
    const list =
      shared.slice(0, SHOWN).join(', ') + (shared.length > SHOWN ? ` and ${shared.length - SHOWN} more` : '');
    return (
      `node(s) ${list} also run TransparentProxy ${other.metadata.namespace}/${other.metadata.name} (newer, refused, ` +
      "but its DaemonSet from before still runs there): two fleets on one node replace and remove each other's rules; " +
      'change its nodeSelector or the node labels'
    );
  }
  return undefined;
}
