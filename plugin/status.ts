// `kubectl tpfleet status`: every fleet (TransparentProxy), its nodes and what is wrong, from what
// the status subresource carries (the operator writes it; this reads nothing else, so `get`/`list`
// on transparentproxies is all it needs). Pure formatting of listed objects.
import type { TransparentProxyStatus } from '../api/transparentproxy-status.ts';

export interface Fleet {
  metadata: { name: string; namespace?: string; generation?: number };
  spec?: { replicas?: number };
  status?: TransparentProxyStatus;
}

/** Columns padded to their widest cell; two spaces between. */
export function table(rows: string[][], indent = ''): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => indent + r.map((cell, c) => (c < r.length - 1 ? cell.padEnd(widths[c]!) : cell)).join('  '));
}

const cond = (f: Fleet, type: string) => f.status?.conditions?.find((c) => c.type === type);

/** The problem a user should read first: a refused spec, else Degraded, else a stalled rollout. */
export function lastError(f: Fleet): string {
  const invalid = cond(f, 'InvalidSpec');
  if (invalid?.status === 'True') return `InvalidSpec: ${invalid.message ?? ''}`;
  const degraded = cond(f, 'Degraded');
  if (degraded?.status === 'True') return `${degraded.reason}: ${degraded.message ?? ''}`;
  if (f.status?.observedGeneration !== undefined && f.status.observedGeneration !== f.metadata.generation)
    return `the operator has not observed generation ${f.metadata.generation} yet`;
  return '-';
}

function nodeRows(f: Fleet): string[][] {
  return (f.status?.nodes ?? []).map((n) => [
    n.name,
    n.state,
    String(n.ready),
    n.zone ?? '-',
    n.traffic?.backend ?? '-',
    n.traffic ? String(n.traffic.connections) : '-',
    n.traffic ? String(n.traffic.errors) : '-',
    n.tuning ? n.tuning.reason : '-',
    n.policy ? `allow=${n.policy.allow} deny=${n.policy.deny} forward=${n.policy.forward}` : '-',
  ]);
}

export function formatStatus(fleets: Fleet[]): string {
  if (fleets.length === 0) return 'No TransparentProxies found.\n';
  const out: string[] = [];
  for (const f of [...fleets].sort((a, b) =>
    `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`),
  )) {
    const s = f.status;
    const head = [
      ['FLEET', 'READY', 'ACTIVE', 'REQUESTED', 'CANDIDATES', 'POLICY RULES'],
      [
        `${f.metadata.namespace}/${f.metadata.name}`,
        cond(f, 'Ready')?.status ?? 'Unknown',
        `${s?.readyReplicas ?? 0}/${s?.replicas ?? 0} ready`,
        f.spec?.replicas === undefined ? 'all' : String(f.spec.replicas),
        String(s?.candidates ?? 0),
        s?.policy ? String(s.policy.rules) : '-',
      ],
    ];
    out.push(...table(head));
    const nodes = nodeRows(f);
    if (nodes.length)
      out.push(
        ...table(
          [
            ['NODE', 'STATE', 'READY', 'ZONE', 'BACKEND', 'CONNECTIONS', 'ERRORS', 'TUNING', 'POLICY DECISIONS'],
            ...nodes,
          ],
          '  ',
        ),
      );
    else if (!s?.nodeCounts) out.push('  no active nodes');
    // Above 100 nodes the status lists only the nodes needing attention (docs/operator.md).
    const k = s?.nodeCounts;
    if (k)
      out.push(
        `  ${k.omitted} more node(s) not listed (${k.active} active, ${k.ready} ready, ${k.notReady} not ready, ${k.draining} draining, ${k.configRefused} refusing the config)`,
      );
    out.push(`  last error: ${lastError(f)}`, '');
  }
  return `${out.join('\n')}`;
}
