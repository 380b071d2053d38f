// The policy-decisions pod condition (issue 13): the contract between the node agent, which reads
// its node's sidecar counters and publishes their totals on its own pod (daemonset/policy-publish.ts),
// and the operator, which copies them into status.nodes[].policy (operator/pods.ts). The message
// carries the numbers ("allow=12 deny=3 forward=0 limited=0"): a condition is the one place of a pod
// the agent may write, and the operator already watches those pods.

export const POLICY_CONDITION_TYPE = 'tpfleet.io/PolicyDecisions';
/** The sidecar's closed action set (label action of tpfleet_proxy_policy_decisions_total). */
export const DECISION_ACTIONS = ['allow', 'deny', 'forward', 'limited'] as const;
export type DecisionTotals = Record<(typeof DECISION_ACTIONS)[number], number>;
/** Published at most this often per node: counts are for people, not for alerting (use /metrics). */
export const POLICY_PUBLISH_MIN_MS = 60_000;

const METRIC = 'tpfleet_proxy_policy_decisions_total';
const SAMPLE = new RegExp(
  `^${METRIC}\\{rule="[a-z0-9-]*",action="([a-z]+)"\\} ([0-9]+(?:\\.[0-9]+)?(?:e\\+?[0-9]+)?)$`,
);

/** Totals per action summed over rules from a sidecar's /metrics text; undefined without the metric. */
export function totalsFromMetrics(text: string): DecisionTotals | undefined {
  if (!text.includes(`# TYPE ${METRIC} counter`)) return undefined;
  const t: DecisionTotals = { allow: 0, deny: 0, forward: 0, limited: 0 };
  for (const line of text.split('\n')) {
    const m = SAMPLE.exec(line);
    if (m && (DECISION_ACTIONS as readonly string[]).includes(m[1]!))
      t[m[1] as keyof DecisionTotals] += Math.round(Number(m[2]));
  }
  return t;
}

export const decisionsMessage = (t: DecisionTotals) => DECISION_ACTIONS.map((a) => `${a}=${t[a]}`).join(' ');

const MESSAGE = /^allow=(\d{1,15}) deny=(\d{1,15}) forward=(\d{1,15}) limited=(\d{1,15})$/;

/** The totals a condition message carries; undefined for anything else (a hand edit is not trusted). */
export function parseDecisionsMessage(message: string | undefined): DecisionTotals | undefined {
  const m = MESSAGE.exec(message ?? '');
  if (!m) return undefined;
  return { allow: Number(m[1]), deny: Number(m[2]), forward: Number(m[3]), limited: Number(m[4]) };
}
