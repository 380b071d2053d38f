// The webhook's TLS material, created and rotated by the operator itself (no cert-manager needed):
// a CA and a serving certificate in one Secret, the CA bundle written into the
// ValidatingWebhookConfiguration so the API server trusts it. Every replica runs this loop (every
// replica serves the webhook): it re-reads the Secret, replaces what is missing or due (less than a
// third of its lifetime left) and serves what the Secret holds. A new CA is added to the bundle
// before anything it signed is served, and the previous CA stays in the bundle until it expires, so
// a rotation never refuses a request. Writes use the Secret's resourceVersion: when two replicas
// rotate at once one wins and the other adopts its result on its next look.
import type { Logger } from 'pino';
import { ApiError, type KubeClient, type KubeObject } from '../../kube/client.ts';
import { errorMessage } from '../../api/errors.ts';
import { issue, servesFor, splitPem, type KeyPair } from './x509.ts';
import { X509Certificate } from 'node:crypto';

export interface CertSettings {
  secret: { namespace: string; name: string };
  /** The ValidatingWebhookConfiguration whose caBundle we keep; absent: none is registered. */
  webhookConfig?: string;
  /** DNS names and IPs the serving certificate names (the webhook Service's DNS name). */
  hosts: string[];
  validityMs: number;
  caValidityMs: number;
  checkMs: number;
}

/** What the Secret holds: the CA bundle (current CA first), the current CA's key, the serving pair. */
export interface Material {
  bundle: string[];
  caKey: string;
  serving: KeyPair;
}

const KEYS = { bundle: 'ca.crt', caKey: 'ca.key', cert: 'tls.crt', key: 'tls.key' } as const;
const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, 'base64').toString('utf8') : '');

export function decode(secret: KubeObject | undefined): Material | undefined {
  const d = (secret as { data?: Record<string, string> } | undefined)?.data;
  if (!d) return undefined;
  const bundle = splitPem(unb64(d[KEYS.bundle]));
  const caKey = unb64(d[KEYS.caKey]);
  const serving = { cert: unb64(d[KEYS.cert]), key: unb64(d[KEYS.key]) };
  if (!bundle.length || !caKey || !serving.cert || !serving.key) return undefined;
  return { bundle, caKey, serving };
}

export function encode(m: Material): Record<string, string> {
  return {
    [KEYS.bundle]: b64(m.bundle.join('')),
    [KEYS.caKey]: b64(m.caKey),
    [KEYS.cert]: b64(m.serving.cert),
    [KEYS.key]: b64(m.serving.key),
  };
}

function validity(pem: string): { from: number; to: number } | undefined {
  try {
    const x = new X509Certificate(pem);
    return { from: Date.parse(x.validFrom), to: Date.parse(x.validTo) };
  } catch {
    return undefined;
  }
}
/** Less than a third of its lifetime left (or unreadable). */
function due(pem: string, now: number): boolean {
  const v = validity(pem);
  return !v || v.to - now < (v.to - v.from) / 3;
}

/**
 * What the Secret should hold at `now`: `m` itself when nothing is due (returns undefined), else the
 * replacement and why. Pure apart from key generation.
 */
export function renew(
  m: Material | undefined,
  s: CertSettings,
  now: Date,
): { next: Material; why: string } | undefined {
  const t = now.getTime();
  // Backdated a little: the API server's clock may be behind ours.
  const notBefore = (ms: number) => new Date(t - Math.min(5 * 60_000, ms / 10));
  const newCa = () =>
    issue({
      commonName: `tpfleet-webhook-ca-${t.toString(36)}`,
      notBefore: notBefore(s.caValidityMs),
      notAfter: new Date(t + s.caValidityMs),
    });
  let why = '';
  let ca: KeyPair, bundle: string[];
  if (!m) {
    ca = newCa();
    bundle = [ca.cert];
    why = 'created';
  } else {
    ca = { cert: m.bundle[0] ?? '', key: m.caKey };
    bundle = m.bundle.filter((c) => (validity(c)?.to ?? 0) > t);
    if (due(ca.cert, t)) {
      ca = newCa();
      bundle = [ca.cert, ...bundle];
      why = 'CA rotated';
    }
  }
  let serving = m?.serving;
  if (why || !serving || due(serving.cert, t) || !servesFor(serving.cert, ca.cert, s.hosts)) {
    const caEnd = validity(ca.cert)?.to ?? t + s.validityMs;
    serving = issue({
      commonName: s.hosts[0] ?? 'tpfleet-webhook',
      notBefore: notBefore(s.validityMs),
      notAfter: new Date(Math.min(t + s.validityMs, caEnd)),
      hosts: s.hosts,
      issuer: ca,
    });
    why ||= 'serving certificate renewed';
  }
  if (!why && bundle.length === m?.bundle.length) return undefined;
  return { next: { bundle, caKey: ca.key, serving }, why: why || 'expired CA dropped from the bundle' };
}

/** How long a new CA sits in the caBundle before anything it signed is served. */
const CA_PROPAGATION_MS = 2000;

export class CertRotator {
  private timer?: NodeJS.Timeout;
  private busy = false;
  current?: Material;

  constructor(
    private readonly client: KubeClient,
    private readonly s: CertSettings,
    private readonly log: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  private get path() {
    return `/api/v1/namespaces/${this.s.secret.namespace}/secrets/${this.s.secret.name}`;
  }

  /** One look: renews what is due, keeps the caBundle, returns what to serve. */
  async tick(): Promise<Material> {
    const live = await this.client.get(this.path);
    const have = decode(live);
    const plan = renew(have, this.s, this.now());
    let m = have;
    if (plan) {
      // The API server must trust the new CA before a certificate it signed is served: the bundle
      // first, then a pause for the API server to pick it up (its informer), then the Secret, which
      // every replica serves from.
      if (plan.next.bundle[0] !== have?.bundle[0]) {
        await this.ensureBundle(plan.next.bundle);
        if (have) await new Promise((r) => setTimeout(r, CA_PROPAGATION_MS));
      }
      m = await this.write(live, plan.next);
      this.log.info({ secret: this.path, why: plan.why }, 'webhook certificate written');
    }
    if (!m) throw new Error('webhook certificate: no material');
    await this.ensureBundle(m.bundle);
    this.current = m;
    return m;
  }

  private async write(live: KubeObject | undefined, next: Material): Promise<Material | undefined> {
    const data = encode(next);
    try {
      if (!live) {
        await this.client.create(`/api/v1/namespaces/${this.s.secret.namespace}/secrets`, {
          apiVersion: 'v1',
          kind: 'Secret',
          type: 'Opaque',
          metadata: { name: this.s.secret.name, labels: { 'app.kubernetes.io/managed-by': 'tpfleet-operator' } },
          data,
        });
      } else {
        await this.client.mergePatch(this.path, { metadata: { resourceVersion: live.metadata.resourceVersion }, data });
      }
      return next;
    } catch (e) {
      // Another replica wrote first: serve what it wrote.
      if (e instanceof ApiError && (e.status === 409 || e.status === 422))
        return decode(await this.client.get(this.path));
      throw e;
    }
  }

  /** Sets caBundle on every webhook of the configuration that does not have exactly `bundle`. */
  private async ensureBundle(bundle: string[]): Promise<void> {
    if (!this.s.webhookConfig) return;
    const path = `/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/${this.s.webhookConfig}`;
    const cfg = await this.client.get<KubeObject & { webhooks?: { clientConfig?: { caBundle?: string } }[] }>(path);
    if (!cfg) {
      this.log.warn({ webhookConfig: this.s.webhookConfig }, 'ValidatingWebhookConfiguration not found');
      return;
    }
    const want = b64(bundle.join(''));
    const ops = (cfg.webhooks ?? []).flatMap((w, i) =>
      w.clientConfig?.caBundle === want
        ? []
        : [{ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: want }],
    );
    if (ops.length) await this.client.jsonPatch(path, ops);
  }

  /** Looks every checkMs; `onChange` gets each new serving pair. Errors are logged and retried. */
  start(onChange: (m: Material) => void): void {
    let served = this.current?.serving.cert;
    const look = () => {
      if (this.busy) return; // a look (with its CA pause) outlasted the interval
      this.busy = true;
      this.tick()
        .then(
          (m) => {
            if (m.serving.cert !== served) {
              served = m.serving.cert;
              onChange(m);
            }
          },
          (e) => this.log.warn({ err: errorMessage(e) }, 'webhook certificate check failed'),
        )
        .finally(() => {
          this.busy = false;
        });
    };
    this.timer = setInterval(look, this.s.checkMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
