// The status as written: at fleet scale a list of every node would outgrow the object (about
// 1.5 MiB; a NodeSummary with its tuning, policy and traffic reports is up to a few hundred bytes,
// 5,000 of them several MiB), the status write would fail with 422 and /scale and the HPA would go
// stale. Above NODES_LISTED_MAX nodes the written list keeps only the nodes a person must look at,
// and nodeCounts counts all. Events are derived from the full view (transitions.ts), never from
// this list. Pure.
import { DEGRADING_TUNING } from '../api/tuning-condition.ts';
import {
  NODES_LISTED_MAX,
  type NodeCounts,
  type NodeSummary,
  type TransparentProxyStatus,
} from '../api/transparentproxy-status.ts';

const degradedTuning = (n: NodeSummary) =>
  n.tuning !== undefined && (DEGRADING_TUNING as readonly string[]).includes(n.tuning.reason);

/** Why a node is listed, most urgent first; undefined: Active, Ready and fine. */
function attention(n: NodeSummary): number | undefined {
  if (n.configRefused) return 0;
  if (n.state === 'Active' && !n.ready) return 1;
  if (n.state === 'Draining') return 2;
  if (degradedTuning(n)) return 3;
  return undefined;
}

export function nodeCounts(nodes: readonly NodeSummary[], listed: number): NodeCounts {
  const active = nodes.filter((n) => n.state === 'Active');
  const ready = active.filter((n) => n.ready).length;
  return {
    active: active.length,
    ready,
    notReady: active.length - ready,
    draining: nodes.length - active.length,
    configRefused: active.filter((n) => n.configRefused).length,
    tuningDegraded: active.filter(degradedTuning).length,
    omitted: nodes.length - listed,
  };
}

/** The status to write: unchanged up to NODES_LISTED_MAX nodes, else the bounded list plus counts. */
export function boundedStatus(full: TransparentProxyStatus): TransparentProxyStatus {
  const { nodeCounts: _stale, ...rest } = full;
  const nodes = full.nodes ?? [];
  if (nodes.length <= NODES_LISTED_MAX) return rest;
  const listed = nodes
    .map((n) => ({ n, rank: attention(n) }))
    .filter((x): x is { n: NodeSummary; rank: number } => x.rank !== undefined)
    .sort((a, b) => a.rank - b.rank || (a.n.name < b.n.name ? -1 : a.n.name > b.n.name ? 1 : 0))
    .slice(0, NODES_LISTED_MAX)
    .map((x) => x.n)
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { ...rest, nodes: listed, nodeCounts: nodeCounts(nodes, listed.length) };
}

/** A stored status whose node list is bounded (not every node is in it). */
export const isBounded = (s: TransparentProxyStatus | undefined): boolean => s?.nodeCounts !== undefined;
