// Per-node policy decision totals (issue 13): agent-watch reads its node's sidecar /metrics on the
// loopback address (hostNetwork: the node's), sums tpfleet_proxy_policy_decisions_total by action
// and publishes the totals as condition tpfleet.io/PolicyDecisions on its own pod, at most every
// POLICY_PUBLISH_MIN_MS and only when they changed; the operator copies them into
// status.nodes[].policy. Totals count since that sidecar started (a rollout starts them at 0). During
// the seconds of a surge rollout the loopback port may answer from the other pod's sidecar.
import http from 'node:http';
import type { Logger } from 'pino';
import {
  decisionsMessage,
  POLICY_CONDITION_TYPE,
  totalsFromMetrics,
  type DecisionTotals,
} from '../api/policy-condition.ts';
import { errorMessage } from '../api/errors.ts';
import type { AgentCondition, TuningPublisher } from './tuning-publish.ts';

/** GET http://127.0.0.1:<port>/metrics (2 s timeout, 4 MiB at most). */
export function scrapeMetrics(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: '/metrics', timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (body.length > 4 << 20) req.destroy(new Error('metrics larger than 4 MiB'));
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

export const policyCondition = (t: DecisionTotals): AgentCondition => ({
  type: POLICY_CONDITION_TYPE,
  status: 'True',
  reason: 'Counted',
  message: decisionsMessage(t),
});

/** One tick: scrape, publish when changed. Never throws (the watchdog beside it must keep running). */
export async function policyTick(
  scrape: () => Promise<string>,
  publisher: TuningPublisher,
  log: Logger,
): Promise<DecisionTotals | undefined> {
  let totals: DecisionTotals | undefined;
  try {
    totals = totalsFromMetrics(await scrape());
  } catch (e) {
    log.debug({ err: errorMessage(e) }, 'policy decisions: sidecar metrics not readable');
    return undefined;
  }
  if (!totals) return undefined; // a sidecar without the policy metric: nothing to say
  try {
    await publisher.publish(policyCondition(totals));
  } catch (e) {
    log.warn({ err: errorMessage(e) }, 'policy decisions not published');
  }
  return totals;
}
