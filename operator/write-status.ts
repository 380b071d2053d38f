// The one writer of a TransparentProxy's status: server-side apply of the status subresource,
// skipped when the computed status equals the stored one (no hot loop, no empty writes). What is
// written is bounded at fleet scale (status-bounded.ts); the full view stays in memory for Events.
import { GROUP, KIND, VERSION } from '../api/transparentproxy.ts';
import { resourcePath } from '../kube/client.ts';
import type { ReconcileContext } from './context.ts';
import type { TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import { TP, type TransparentProxyObject } from './kinds.ts';
import { computeStatus, stableJson, type StatusInput } from './status.ts';
import { boundedStatus } from './status-bounded.ts';

export interface StatusWrite {
  /** The status with every node (what Events are derived from). */
  full: TransparentProxyStatus;
  /** The status written, when it differed from the stored one. */
  written?: TransparentProxyStatus;
}

/**
 * Writes status through the status subresource, only when it differs from what is stored.
 * A rejected spec keeps the stored node list as it is (computeStatus copies it), so it is not bounded again.
 */
export async function writeStatus(
  ctx: ReconcileContext,
  tp: TransparentProxyObject,
  input: StatusInput,
): Promise<StatusWrite> {
  const full = computeStatus(input);
  const status = input.invalid ? full : boundedStatus(full);
  if (stableJson(status) === stableJson(tp.status ?? {})) return { full };
  await ctx.client.apply(resourcePath(TP, tp.metadata.namespace, tp.metadata.name, 'status'), {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: KIND,
    metadata: { name: tp.metadata.name, namespace: tp.metadata.namespace },
    status,
  });
  return { full, written: status };
}
