// The tuning pod condition: the contract between the node agent, which publishes it on its own pod
// (daemonset/tuning-publish.ts), and the operator, which copies reason and message into
// status.nodes[].tuning (operator/pods.ts) and derives Degraded from the reason (operator/status.ts).
//
// Meaning of status, as for every Kubernetes condition whose type names the good state (Ready,
// PodScheduled): True = the node's tuning is as asked (Applied; NotConfigured: nothing was asked),
// False = it is not, and the reason says why. The operator reads reason and message only.

export const TUNING_CONDITION_TYPE = 'tpfleet.io/Tuning';

/** Every reason the agent reports, with what it means where the name alone does not say. */
export const TUNING_REASONS = {
  Applied: '',
  NotConfigured: '',
  TuningDrift: 'a value tpfleet set was changed by someone else',
  TuningRefused: 'the kernel refused a write',
  IrqbalanceConflict: '',
  TuningPartial: 'keys or devices this node lacks',
} as const;
export type TuningReason = keyof typeof TUNING_REASONS;

/**
 * Reasons that degrade the fleet, worst first: someone fights our values, the kernel refused one,
 * irqbalance undoes the IRQ placement. TuningPartial (keys or devices a node lacks) is shown per
 * node but does not degrade: "reported, not fatal".
 */
export const DEGRADING_TUNING: readonly TuningReason[] = ['TuningDrift', 'TuningRefused', 'IrqbalanceConflict'];

/** Bounds of status.nodes[].tuning (api/transparentproxy-status.ts). */
export const TUNING_REASON_MAX = 64;
export const TUNING_MESSAGE_MAX = 1024;

export interface TuningCondition {
  type: typeof TUNING_CONDITION_TYPE;
  status: 'True' | 'False';
  reason: TuningReason;
  message: string;
}

/** The condition for a reason and message; the one place that says what status means. */
export function tuningCondition(reason: TuningReason, message: string): TuningCondition {
  const asked = reason === 'Applied' || reason === 'NotConfigured';
  return { type: TUNING_CONDITION_TYPE, status: asked ? 'True' : 'False', reason, message };
}
