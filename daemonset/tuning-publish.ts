// Publishes this node's tuning condition as a condition on the agent's OWN pod (pods/status), where
// the operator's pod informer picks it up for the TransparentProxy's status.nodes[].tuning.
//
// Invariants: one strategic-merge patch of status.conditions (merge key `type`, so the kubelet's
// own conditions are untouched); nothing is written when the condition is unchanged, neither against
// what we published last nor against what the pod already shows (a restarted container writes at
// most once); lastTransitionTime only moves when status flips. The service account may only
// get/patch pods/status in its own namespace (Role rendered by the operator).
import type { Logger } from 'pino';
import { ApiError, type KubeClient, type KubeObject } from '../kube/client.ts';
import { checkDrift } from './tuning/index.ts';
import { TUNING_CONDITION_TYPE, type TuningCondition } from '../api/tuning-condition.ts';
import { podCondition, readReport } from './tuning-report.ts';
import { errorMessage } from '../api/errors.ts';

export interface PodRef {
  namespace: string;
  name: string;
}

export const AGENT_FIELD_MANAGER = 'tpfleet-agent';
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** POD_NAME / POD_NAMESPACE (downward API) -> the pod to publish on; undefined when neither is set. */
export function podRefFromEnv(env: Record<string, string | undefined>): PodRef | undefined {
  const name = env.POD_NAME,
    namespace = env.POD_NAMESPACE;
  if (!name && !namespace) return undefined;
  if (!name || !namespace)
    throw new Error(
      `${name ? 'POD_NAMESPACE' : 'POD_NAME'} is not set (set both POD_NAME and POD_NAMESPACE, or neither)`,
    );
  for (const [k, v] of [
    ['POD_NAME', name],
    ['POD_NAMESPACE', namespace],
  ] as const) {
    if (!NAME.test(v)) throw new Error(`${k}: "${v}" is not a valid object name`);
  }
  return { namespace, name };
}

type PodStatus = KubeObject & { status?: { conditions?: (TuningCondition & { lastTransitionTime?: string })[] } };

const same = (
  a: Pick<TuningCondition, 'status' | 'reason' | 'message'>,
  b: Pick<TuningCondition, 'status' | 'reason' | 'message'>,
) => a.status === b.status && a.reason === b.reason && a.message === b.message;

export class TuningPublisher {
  private last?: TuningCondition;
  constructor(
    private readonly client: KubeClient,
    readonly pod: PodRef,
    private readonly now: () => Date = () => new Date(),
  ) {}

  private get path(): string {
    return `/api/v1/namespaces/${encodeURIComponent(this.pod.namespace)}/pods/${encodeURIComponent(this.pod.name)}/status`;
  }

  /** Writes `cond` on the pod unless it already shows it. Resolves true when a patch was sent. */
  async publish(cond: TuningCondition): Promise<boolean> {
    if (this.last && same(this.last, cond)) return false;
    const pod = await this.client.get<PodStatus>(this.path);
    if (!pod) throw new Error(`pod ${this.pod.namespace}/${this.pod.name} not found`);
    const old = pod.status?.conditions?.find((c) => c.type === TUNING_CONDITION_TYPE);
    if (old && same(old, cond)) {
      this.last = cond;
      return false;
    }
    const lastTransitionTime =
      old && old.status === cond.status && old.lastTransitionTime ? old.lastTransitionTime : this.now().toISOString();
    await this.client.request('PATCH', this.path, {
      body: { status: { conditions: [{ ...cond, lastTransitionTime }] } },
      contentType: 'application/strategic-merge-patch+json',
      query: { fieldManager: AGENT_FIELD_MANAGER },
    });
    this.last = cond;
    return true;
  }
}

/**
 * One watch tick: live drift + the stored report -> condition (root: a test tree, default /); logs when it changes, publishes when
 * a publisher exists. Never throws (the watchdog beside it must keep running); returns the condition.
 */
export async function tuningTick(
  o: { stateDir: string; root?: string },
  publisher: TuningPublisher | undefined,
  log: Logger,
  prev?: TuningCondition,
): Promise<TuningCondition | undefined> {
  let cond: TuningCondition;
  try {
    cond = podCondition(readReport(o.stateDir), checkDrift({ stateDir: o.stateDir, root: o.root }));
  } catch (e) {
    log.warn({ err: errorMessage(e) }, 'tuning status: cannot read the tuning state');
    return prev;
  }
  if (!prev || !same(prev, cond)) {
    const fields = { reason: cond.reason, message: cond.message };
    if (cond.reason === 'TuningDrift') log.warn(fields, 'tuning drift: a value we set was changed by someone else');
    else log.info(fields, 'tuning status');
  }
  try {
    if (publisher && (await publisher.publish(cond)))
      log.info({ pod: publisher.pod, reason: cond.reason }, 'tuning condition published');
  } catch (e) {
    const forbidden = e instanceof ApiError && e.status === 403;
    log.warn({ err: errorMessage(e), forbidden }, 'tuning condition not published');
  }
  return cond;
}
