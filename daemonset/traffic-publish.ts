// Per-node traffic (issue 18): every TRAFFIC_PUBLISH_MS agent-watch reads its node's sidecar
// /metrics (open connections, errors) and publishes them with the rule backend as condition
// tpfleet.io/Traffic on its own pod, only when the change is significant (api/traffic-condition.ts):
// a busy node whose connection count wobbles writes nothing, so steady state stays write-free. The
// operator copies the values into status.nodes[].traffic. `verified` is true here: containers
// start only after the init container's apply verified its rules by read-back (drift is not re-read).
import type { Logger } from 'pino';
import {
  countsFromMetrics,
  significantChange,
  TRAFFIC_CONDITION_TYPE,
  trafficMessage,
  type NodeTraffic,
  type RuleBackend,
} from '../api/traffic-condition.ts';
import { errorMessage } from '../api/errors.ts';
import type { TuningPublisher } from './tuning-publish.ts';

/** One tick: scrape, publish when significant. Returns what is published now. Never throws. */
export async function trafficTick(
  scrape: () => Promise<string>,
  backend: RuleBackend | undefined,
  publisher: TuningPublisher,
  last: NodeTraffic | undefined,
  log: Logger,
): Promise<NodeTraffic | undefined> {
  if (!backend) return last; // nothing installed (no state file): nothing to report
  let counts: ReturnType<typeof countsFromMetrics>;
  try {
    counts = countsFromMetrics(await scrape());
  } catch (e) {
    log.debug({ err: errorMessage(e) }, 'traffic: sidecar metrics not readable');
    return last;
  }
  if (!counts) return last;
  const next: NodeTraffic = { backend, verified: true, ...counts };
  if (!significantChange(last, next)) return last;
  try {
    await publisher.publish({
      type: TRAFFIC_CONDITION_TYPE,
      status: 'True',
      reason: 'Observed',
      message: trafficMessage(next),
    });
    return next;
  } catch (e) {
    log.warn({ err: errorMessage(e) }, 'traffic not published');
    return last;
  }
}
