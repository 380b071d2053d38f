// The ValidatingWebhookConfiguration that sends TransparentProxy writes to the operator. The chart
// renders the same object (charts/tpfleet/templates/webhook.yaml; operator/gen/chart.test.ts
// compares the two); the tests register it with a URL instead of the Service.
//
// failurePolicy Fail: while no operator replica answers (all down, or not yet synced), creating or
// changing a TransparentProxy's spec fails at `kubectl apply` with "failed calling webhook" instead
// of being admitted unchecked; nothing already running is affected (the webhook sees only writes),
// and deleting one, status, finalizer and label writes are not refused (DELETE is not sent; updates
// that keep the spec are allowed). Ignore would let exactly the specs this webhook exists to refuse
// through whenever the operator restarts.
import { GROUP, PLURAL, VERSION } from '../../api/transparentproxy.ts';

export const WEBHOOK_NAME = 'validate.tpfleet.io';

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
