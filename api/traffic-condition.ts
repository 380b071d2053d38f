// The per-node traffic pod condition (issue 18): the contract between the node agent, which reads
// its node's sidecar counters and its own state and publishes them on its own pod
// (daemonset/traffic-publish.ts), and the operator, which copies them into status.nodes[].traffic
// (operator/pods.ts). As the policy decisions (policy-condition.ts), the message carries the values
// ("backend=nftables verified=true connections=12 errors=0").
//
// Cheap by construction, so steady state writes nothing: the agent looks at most every
// TRAFFIC_PUBLISH_MS and publishes only a significant change (significantChange below); the
// operator's status write follows the pod condition, so it is bounded by the same rate per node.
import { z } from 'zod';

export const TRAFFIC_CONDITION_TYPE = 'tpfleet.io/Traffic';
export const TRAFFIC_PUBLISH_MS = 30_000;
/** Open connections must move by this many, and by this fraction, before they are published again. */
export const CONNECTIONS_ABS_THRESHOLD = 10;
export const CONNECTIONS_REL_THRESHOLD = 0.1;
const MAX = 1e15;

export const RULE_BACKENDS = ['nftables', 'iptables-nft', 'iptables-legacy'] as const;
export type RuleBackend = (typeof RULE_BACKENDS)[number];

export const NodeTraffic = z
  .object({
    backend: z.enum(RULE_BACKENDS).meta({ description: 'The rule backend the node agent installed with.' }),
    verified: z.boolean().meta({
      description:
        "The agent's read-back verification of its rules passed (at apply: the watch that publishes this only starts after it; drift is not re-read).",
    }),
    connections: z
      .number()
      .int()
      .min(0)
      .max(MAX)
      .meta({ description: 'Connections the sidecar holds open (tpfleet_proxy_connections_active).' }),
    errors: z.number().int().min(0).max(MAX).meta({
      description: 'Errors of the sidecar since it started, summed over reasons (tpfleet_proxy_errors_total).',
    }),
  })
  .strict()
  .meta({
    description: `Traffic of this node, as its agent published it (pod condition ${TRAFFIC_CONDITION_TYPE}): looked at every ${TRAFFIC_PUBLISH_MS / 1000} s, published only on a significant change.`,
  });
export type NodeTraffic = z.output<typeof NodeTraffic>;

const GAUGE = /^tpfleet_proxy_connections_active ([0-9.e+]+)$/;
const ERRORS = /^tpfleet_proxy_errors_total\{[^}]*\} ([0-9.e+]+)$/;

/** Open connections and total errors from a sidecar's /metrics text; undefined without the gauge. */
export function countsFromMetrics(text: string): { connections: number; errors: number } | undefined {
  let connections: number | undefined,
    errors = 0;
  for (const line of text.split('\n')) {
    const g = GAUGE.exec(line);
    if (g) connections = Math.round(Number(g[1]));
    const e = ERRORS.exec(line);
    if (e) errors += Math.round(Number(e[1]));
  }
  if (connections === undefined || !Number.isFinite(connections) || !Number.isFinite(errors)) return undefined;
  return { connections: Math.min(connections, MAX), errors: Math.min(errors, MAX) };
}

export const trafficMessage = (t: NodeTraffic) =>
  `backend=${t.backend} verified=${t.verified} connections=${t.connections} errors=${t.errors}`;

const MESSAGE = /^backend=([a-z-]+) verified=(true|false) connections=(\d{1,15}) errors=(\d{1,15})$/;

/** The values a condition message carries; undefined for anything else (a hand edit is not trusted). */
export function parseTrafficMessage(message: string | undefined): NodeTraffic | undefined {
  const m = MESSAGE.exec(message ?? '');
  if (!m || !(RULE_BACKENDS as readonly string[]).includes(m[1]!)) return undefined;
  return { backend: m[1] as RuleBackend, verified: m[2] === 'true', connections: Number(m[3]), errors: Number(m[4]) };
}

/** Worth a write: backend or verification changed, errors grew, or connections moved past both thresholds. */
export function significantChange(prev: NodeTraffic | undefined, next: NodeTraffic): boolean {
  if (!prev) return true;
  if (prev.backend !== next.backend || prev.verified !== next.verified || next.errors !== prev.errors) return true;
  const d = Math.abs(next.connections - prev.connections);
  if (d === 0) return false;
  // Down to zero always counts: an idle node should not keep showing its last busy number.
  if (next.connections === 0) return true;
  return d >= CONNECTIONS_ABS_THRESHOLD && d >= CONNECTIONS_REL_THRESHOLD * Math.max(prev.connections, 1);
}
