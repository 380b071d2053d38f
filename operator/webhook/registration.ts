// The ValidatingWebhookConfiguration that sends TransparentProxy writes to the operator. The chart
// renders the same object (charts/tpfleet/templates/webhook.yaml; operator/gen/chart.test.ts
// compares the two); the tests register it with a URL instead of the Service.
//
// failurePolicy Fail: while no operator replica answers (all down, or not yet synced), creating or
// changing a TransparentProxy's spec fails at `kubectl apply` with "failed calling webhook" instead
// of being admitted unchecked; nothing already running is affected (the webhook sees only writes),
// and deleting one, status, finalizer and label writes are not refused (DELETE is not sent; updates
// that keep the spec are not sent either: JUDGED_WRITES). Ignore would let exactly the specs this webhook exists to refuse
// through whenever the operator restarts.
import { GROUP, PLURAL, VERSION } from '../../api/transparentproxy.ts';

export const WEBHOOK_NAME = 'validate.tpfleet.io';

/**
 * What the webhook judges (server.ts admit(): creates, and updates of the spec of an object not being
 * deleted), said to the API server too, so it skips the call otherwise: with failurePolicy Fail and
 * no replica answering, every label, annotation and finalizer write was refused ("failed calling
 * webhook"), so a stuck deletion's finalizer could not be removed by hand with the operator down
 * (issue 20, path 1). has() first: a missing field is an evaluation error, which Fail turns into a
 * refusal. server.ts keeps the same checks, for registrations without this condition.
 */
export const JUDGED_WRITES =
  "request.operation == 'CREATE' || (!has(object.metadata.deletionTimestamp) && (has(object.spec) != has(oldObject.spec) || (has(object.spec) && object.spec != oldObject.spec)))";

export type ClientConfig =
  | { url: string }
  | { service: { namespace: string; name: string; port: number; path: string } };

export function webhookConfiguration(name: string, clientConfig: ClientConfig, caBundle?: string) {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingWebhookConfiguration',
    metadata: { name, labels: { 'app.kubernetes.io/name': 'tpfleet' } },
    webhooks: [
      {
        name: WEBHOOK_NAME,
        admissionReviewVersions: ['v1'],
        sideEffects: 'None',
        failurePolicy: 'Fail',
        matchPolicy: 'Equivalent',
        timeoutSeconds: 10,
        clientConfig: { ...clientConfig, ...(caBundle ? { caBundle } : {}) },
        matchConditions: [{ name: 'judged-writes', expression: JUDGED_WRITES }],
        rules: [
          {
            apiGroups: [GROUP],
            apiVersions: [VERSION],
            operations: ['CREATE', 'UPDATE'],
            resources: [PLURAL],
            scope: 'Namespaced',
          },
        ],
      },
    ],
  };
}
