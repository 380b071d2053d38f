// The validating admission webhook (ADR 0016): the API server sends every create and update of a
// TransparentProxy here and the answer is validate.ts, the very check the reconcile makes, so a spec
// the operator would refuse fails `kubectl apply` naming the field, including what CEL cannot say
// (mark within mask, CIDR families, overlap after canonicalisation, the one-per-node conflict, the
// image allowlist). Served over HTTPS by every replica (leader or not) from the informer caches.
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { KubeObject } from '../../kube/client.ts';
import { KIND } from '../../api/transparentproxy.ts';
import { stableJson } from '../status.ts';
import { namespaceProblem } from '../tenancy.ts';
import { validate, type ValidationView } from '../validate.ts';
import type { KeyPair } from './x509.ts';

export const WEBHOOK_PATH = '/validate-transparentproxy';
/** The API server caps objects at ~1.5 MiB; an AdmissionReview carries the old object too. */
const MAX_BODY = 4 * 1024 * 1024;

export interface AdmissionRequest {
  uid: string;
  kind?: { group?: string; kind?: string };
  namespace?: string;
  operation?: string;
  object?: KubeObject & { spec?: unknown };
  oldObject?: (KubeObject & { spec?: unknown }) | null;
}
export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: { code: number; reason: string; message: string };
  warnings?: string[];
}

/** The answer to one request; pure. */
export function admit(req: AdmissionRequest, view: ValidationView, now: Date): AdmissionResponse {
  const allow = (warnings?: string[]): AdmissionResponse => ({
    uid: req.uid,
    allowed: true,
    ...(warnings && { warnings }),
  });
  const obj = req.object;
  if (req.kind?.kind !== KIND || !obj || (req.operation !== 'CREATE' && req.operation !== 'UPDATE')) return allow();
  // Finalizer removal, status and label writes must pass even for an object refused later (the
  // operator writes its finalizer on objects whose spec it then rejects): only a spec is judged.
  if (obj.metadata.deletionTimestamp) return allow();
  if (req.operation === 'UPDATE' && req.oldObject && stableJson(req.oldObject.spec) === stableJson(obj.spec))
    return allow();
  const namespace = req.namespace ?? obj.metadata.namespace ?? '';
  const candidate: KubeObject & { spec?: unknown } = {
    ...obj,
    metadata: {
      ...obj.metadata,
      namespace,
      // A new object is the newest one (seconds, as the API server will stamp it).
      creationTimestamp: obj.metadata.creationTimestamp ?? now.toISOString().replace(/\.\d+Z$/, 'Z'),
    },
  };
  const verdict = validate(candidate, view);
  const foreign = namespaceProblem(namespace, view.tenancy);
  if (verdict.ok) return allow(foreign ? [foreign] : undefined);
  return {
    uid: req.uid,
    allowed: false,
    status: { code: 422, reason: 'Invalid', message: verdict.problems.join('; ') },
  };
}

async function body(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) return undefined;
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export interface Webhook {
  server: Server;
  /** Serves a new certificate from the next handshake on. */
  setCertificate: (kp: KeyPair) => void;
  close: () => Promise<void>;
}

export function startWebhook(o: {
  host: string;
  port: number;
  certificate: KeyPair;
  view: () => ValidationView;
  log: Logger;
}): Promise<Webhook> {
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const reply = (code: number, obj: unknown) => {
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== WEBHOOK_PATH)
      return reply(404, { error: 'not found' });
    const text = await body(req);
    if (text === undefined) return reply(413, { error: 'request too large' });
    let review: { apiVersion?: string; request?: AdmissionRequest };
    try {
      review = JSON.parse(text);
    } catch {
      return reply(400, { error: 'not JSON' });
    }
    if (!review.request?.uid) return reply(400, { error: 'not an AdmissionReview request' });
    const response = admit(review.request, o.view(), new Date());
    if (!response.allowed) o.log.info({ uid: response.uid, message: response.status?.message }, 'admission refused');
    reply(200, { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response });
  };
  const server = createServer({ cert: o.certificate.cert, key: o.certificate.key }, (req, res) => {
    handle(req, res).catch((e: Error) => {
      o.log.warn({ err: e.message }, 'admission request failed');
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  // The API server times a webhook out after 10 s (timeoutSeconds); nothing here should take longer.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () =>
      resolve({
        server,
        setCertificate: (kp) => server.setSecureContext({ cert: kp.cert, key: kp.key }),
        close: () => new Promise((r) => server.close(() => r())),
      }),
    );
  });
}
