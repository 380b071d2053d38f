// Which TransparentProxies claim which nodes, kept current by the informer handlers (controller.ts).
// A change to one object or one node then re-enqueues only the objects it can affect, and the
// one-per-node checks (conflicts.ts) look only at objects that share a node, instead of every
// object against every other over every node (quadratic in fleets, issue 17).
// An object claims the nodes its spec's nodeSelector matches and the nodes its live DaemonSet's
// selector matches (an object whose spec is rejected keeps running there): the same two sources
// conflicts.ts judges by. Labels only, as there.
import type { KubeObject } from '../kube/client.ts';
import { matchesSelector } from './scheduling.ts';

export type Selector = Record<string, string>;

export class ClaimIndex {
  private readonly selectors = new Map<string, Selector[]>();
  private readonly claimed = new Map<string, Set<string>>();
  private readonly claimants = new Map<string, Set<string>>();

  /**
   * Sets the selectors of object `key` (none: it claims nothing) over the nodes as cached now.
   * Returns the other objects claiming a node it claimed before or claims now.
   */
  setProxy(key: string, selectors: Selector[], nodes: readonly KubeObject[]): Set<string> {
    const before = this.claimed.get(key) ?? new Set<string>();
    const after = new Set<string>();
    if (selectors.length)
      for (const n of nodes) if (selectors.some((s) => matchesSelector(n, s))) after.add(n.metadata.name);
    const affected = this.claimantsOf([...before, ...after], key);
    for (const n of before) if (!after.has(n)) this.unclaim(n, key);
    for (const n of after) this.claim(n, key);
    this.selectors.set(key, selectors);
    this.claimed.set(key, after);
    return affected;
  }

  /** Object `key` is gone: returns the objects that claimed a node it claimed. */
  removeProxy(key: string): Set<string> {
    const before = this.claimed.get(key) ?? new Set<string>();
    const affected = this.claimantsOf(before, key);
    for (const n of before) this.unclaim(n, key);
    this.selectors.delete(key);
    this.claimed.delete(key);
    return affected;
  }

  /** A node was added, changed or deleted: returns the objects claiming it before or now. */
  setNode(node: KubeObject, deleted: boolean): Set<string> {
    const name = node.metadata.name;
    const affected = new Set(this.claimants.get(name));
    for (const [key, selectors] of this.selectors) {
      const claims = !deleted && selectors.some((s) => matchesSelector(node, s));
      if (claims) {
        this.claim(name, key);
        this.claimed.get(key)?.add(name);
        affected.add(key);
      } else if (this.claimants.get(name)?.has(key)) {
        this.unclaim(name, key);
        this.claimed.get(key)?.delete(name);
      }
    }
    return affected;
  }

  /** The other objects claiming one of the nodes object `key` claims (its possible rivals). */
  rivals(key: string): Set<string> {
    return this.claimantsOf(this.claimed.get(key) ?? [], key);
  }

  private claimantsOf(nodes: Iterable<string>, except: string): Set<string> {
    const out = new Set<string>();
    for (const n of nodes) for (const k of this.claimants.get(n) ?? []) if (k !== except) out.add(k);
    return out;
  }
  private claim(node: string, key: string): void {
    const s = this.claimants.get(node);
    if (s) s.add(key);
    else this.claimants.set(node, new Set([key]));
  }
  private unclaim(node: string, key: string): void {
    const s = this.claimants.get(node);
    s?.delete(key);
    if (s?.size === 0) this.claimants.delete(node);
  }
}
