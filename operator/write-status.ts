// The one writer of a TransparentProxy's status: server-side apply of the status subresource,
// skipped when the computed status equals the stored one (no hot loop, no empty writes).
import { GROUP, KIND, VERSION } from '../api/transparentproxy.ts';
import { resourcePath } from '../kube/client.ts';
import type { ReconcileContext } from './context.ts';
import type { TransparentProxyStatus } from '../api/transparentproxy-status.ts';
import { TP, type TransparentProxyObject } from './kinds.ts';
import { computeStatus, stableJson, type StatusInput } from './status.ts';

/**
 * Writes status through the status subresource, only when it differs from what is stored.
 * Returns the status when it was written (the caller derives Events from the change), else undefined.
 */
export async function writeStatus(
  ctx: ReconcileContext,
  tp: TransparentProxyObject,
  input: StatusInput,
): Promise<TransparentProxyStatus | undefined> {
  const status = computeStatus(input);
  if (stableJson(status) === stableJson(tp.status ?? {})) return undefined;
  await ctx.client.apply(resourcePath(TP, tp.metadata.namespace, tp.metadata.name, 'status'), {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: KIND,
    metadata: { name: tp.metadata.name, namespace: tp.metadata.namespace },
    status,
  });
  return status;
}
