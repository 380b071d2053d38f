// Starts the admission webhook beside the controller: certificates first (created if missing), then
// the HTTPS server on the caches, then the rotation loop that swaps the served certificate.
import type { Logger } from 'pino';
import type { KubeClient } from '../../kube/client.ts';
import type { ValidationView } from '../validate.ts';
import { CertRotator, type CertSettings } from './certs.ts';
import { startWebhook, type Webhook } from './server.ts';

export interface AdmissionSettings extends CertSettings {
  host: string;
  port: number;
}

export interface RunningAdmission {
  webhook: Webhook;
  rotator: CertRotator;
  stop: () => Promise<void>;
}

export async function startAdmission(
  client: KubeClient,
  s: AdmissionSettings,
  view: () => ValidationView,
  log: Logger,
): Promise<RunningAdmission> {
  const rotator = new CertRotator(client, s, log);
  const first = await rotator.tick();
  const webhook = await startWebhook({ host: s.host, port: s.port, certificate: first.serving, view, log });
  rotator.start((m) => {
    webhook.setCertificate(m.serving);
    log.info('webhook serving a new certificate');
  });
  return {
    webhook,
    rotator,
    stop: async () => {
      rotator.stop();
      await webhook.close();
    },
  };
}
