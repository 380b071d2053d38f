// Runs the operator's controller in-process against a test API server (same code path as
// main.ts minus flag parsing and leader election), with its own metrics registry.
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Controller } from '../../operator/controller.ts';
import { KubeClient } from '../../kube/client.ts';
import { OperatorMetrics } from '../../operator/metrics.ts';
import { FIELD_MANAGER } from '../../operator/render/names.ts';

export interface RunningOperator {
  controller: Controller;
  metrics: OperatorMetrics;
  client: KubeClient;
  writes: () => number;
  stop: () => Promise<void>;
}

export async function startOperator(
  kubeconfigPath: string,
  o: { cleanupTimeoutMs?: number; image?: string } = {},
): Promise<RunningOperator> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const metrics = new OperatorMetrics(false);
  let writes = 0;
  const client = new KubeClient(kc, FIELD_MANAGER, (verb) => {
    writes++;
    metrics.write(verb);
  });
  const controller = new Controller({
    client,
    metrics,
    log: pino({ level: process.env.TPFLEET_TEST_LOG ?? 'silent' }),
    workers: 2,
    settings: {
      defaultImage: o.image ?? 'registry.example/tpfleet-node:test',
      cleanupTimeoutMs: o.cleanupTimeoutMs ?? 60_000,
    },
  });
  await controller.startCaches();
  controller.startWorkers();
  return { controller, metrics, client, writes: () => writes, stop: () => controller.stop() };
}
