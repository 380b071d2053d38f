// Warning Events on a TransparentProxy, for `kubectl describe` and `kubectl get events`. One Event
// per change of what is wrong, not per reconcile: the caller compares with the stored status
// (the operator's only memory), so a requeue or an operator restart repeats nothing. Best effort,
// as client-go's recorder is: a failed Event is logged and never fails the reconcile.
import { hostname } from 'node:os';
import { GROUP, KIND, VERSION } from '../api/transparentproxy.ts';
import type { KubeObject } from '../kube/client.ts';
import { errorMessage } from '../api/errors.ts';
import type { ReconcileContext } from './context.ts';
import { MANAGED_BY } from './render/names.ts';

export async function warn(ctx: ReconcileContext, tp: KubeObject, reason: string, message: string): Promise<void> {
  const namespace = tp.metadata.namespace ?? '';
  const now = ctx.now();
  // client-go's naming: the object's name and the time in hex (here with a random tail).
  const tail = Math.floor(Math.random() * 0x10000)
    .toString(16)
    .padStart(4, '0');
  const name = `${tp.metadata.name}.${now.getTime().toString(16)}${tail}`;
  try {
    await ctx.client.create(`/api/v1/namespaces/${namespace}/events`, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace },
      involvedObject: {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: KIND,
        name: tp.metadata.name,
        namespace,
        uid: tp.metadata.uid,
        resourceVersion: tp.metadata.resourceVersion,
      },
      type: 'Warning',
      reason,
      message: message.slice(0, 1024),
      source: { component: MANAGED_BY },
      reportingComponent: MANAGED_BY,
      reportingInstance: hostname().slice(0, 128),
      firstTimestamp: now.toISOString(),
      lastTimestamp: now.toISOString(),
      count: 1,
    });
  } catch (e) {
    ctx.log.warn({ tp: `${namespace}/${tp.metadata.name}`, reason, err: errorMessage(e) }, 'could not record an Event');
  }
}
