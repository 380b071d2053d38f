// Runs the operator's controller in-process against a test API server (same code path as
// main.ts minus flag parsing and leader election), with its own metrics registry.
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Controller } from '../../operator/controller.ts';
import { KubeClient } from '../../kube/client.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { FIELD_MANAGER } from '../../operator/render/names.ts';
import { tenancy, type Tenancy } from '../../operator/tenancy.ts';
import { webhookConfiguration } from '../../operator/webhook/registration.ts';
import { startAdmission, type AdmissionSettings, type RunningAdmission } from '../../operator/webhook/run.ts';
import { WEBHOOK_PATH } from '../../operator/webhook/server.ts';

/** The webhook on 127.0.0.1:port, its Secret in tpfleet-system, registered as WEBHOOK_CONFIG (registerWebhook). */
export interface TestAdmission {
  port: number;
  validityMs?: number;
  caValidityMs?: number;
  checkMs?: number;
}
export const WEBHOOK_CONFIG = 'tpfleet-test';
const admissionSettings = (a: TestAdmission): AdmissionSettings => ({
  host: '127.0.0.1',
  port: a.port,
  webhookConfig: WEBHOOK_CONFIG,
  secret: { namespace: 'tpfleet-system', name: 'tpfleet-operator-webhook-tls' },
  hosts: ['127.0.0.1'],
  validityMs: a.validityMs ?? 3600_000,
  caValidityMs: a.caValidityMs ?? 24 * 3600_000,
  checkMs: a.checkMs ?? 60_000,
});

/** Registers the webhook (the chart's object, with a URL instead of the Service); caBundle is the operator's to fill. */
export async function registerWebhook(c: KubeClient, port: number): Promise<void> {
  await c.create(
    '/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations',
    webhookConfiguration(WEBHOOK_CONFIG, { url: `https://127.0.0.1:${port}${WEBHOOK_PATH}` }),
  );
}

export const TEST_TENANCY = tenancy({
  namespaces: ['*'],
  allowedImages: ['registry.example/'],
  allowControlPlane: false,
});

export interface RunningOperator {
  controller: Controller;
  metrics: OperatorMetrics;
  client: KubeClient;
  admission?: RunningAdmission;
  writes: () => number;
  stop: () => Promise<void>;
}

export async function startOperator(
  kubeconfigPath: string,
  o: { cleanupTimeoutMs?: number; image?: string; tenancy?: Tenancy; admission?: TestAdmission } = {},
): Promise<RunningOperator> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const metrics = new OperatorMetrics(false);
  const log = pino({ level: process.env.TPFLEET_TEST_LOG ?? 'silent' });
  let writes = 0;
  const client = new KubeClient(kc, FIELD_MANAGER, (verb) => {
    writes++;
    metrics.write(verb);
  });
  const controller = new Controller({
    client,
    metrics,
    log,
    workers: 2,
    settings: {
      defaultImage: o.image ?? 'registry.example/tpfleet-node:test',
      cleanupTimeoutMs: o.cleanupTimeoutMs ?? 60_000,
      // Most suites use namespaces of their own: every namespace, any registry.example image.
      tenancy: o.tenancy ?? TEST_TENANCY,
    },
  });
  await controller.startCaches();
  controller.startWorkers();
  const admission = o.admission
    ? await startAdmission(client, admissionSettings(o.admission), () => controller.view(), log)
    : undefined;
  return {
    controller,
    metrics,
    client,
    admission,
    writes: () => writes,
    stop: async () => {
      await admission?.stop();
      await controller.stop();
    },
  };
}
