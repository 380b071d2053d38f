// The primary's HTTP endpoints: /metrics, /healthz, /readyz. Dual-stack when the host has IPv6.
// The port is shared (SO_REUSEPORT) with the sidecar of the pod a rollout replaces: for the few
// seconds both pods run on the node (maxSurge, ADR 0006), either one may answer a request there.
// So the kubelet's probes go to a second listener on the same port at this sidecar's own loopback
// address (api/probe-address.ts, from its --template token), which only it holds; and /readyz
// named with another template (/readyz?template=<token>) still answers 503, should two tokens ever
// map to one address.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { probeAddress } from '../api/probe-address.ts';

export interface Status {
  healthy(): boolean;
  ready(): boolean;
  metrics(): Promise<string>;
  contentType: string;
  /** The pod template token this sidecar was started with (--template); null when run by hand. */
  template?: string | null;
}

export function handler(status: Status): http.RequestListener {
  return (req, res) => {
    const [path, query] = (req.url ?? '/').split('?') as [string, string | undefined];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'method not allowed\n');
    // Answering at all proves the primary's event loop turns; the rest is about the workers.
    if (path === '/healthz') return status.healthy() ? reply(200, 'ok\n') : reply(503, 'no worker alive\n');
    if (path === '/readyz') {
      const asked = new URLSearchParams(query ?? '').get('template');
      if (asked !== null && asked !== (status.template ?? null)) {
        return reply(
          503,
          `not this pod's sidecar: asked for template ${asked}, this one runs ${status.template ?? '(none)'}\n`,
        );
      }
      return status.ready() ? reply(200, 'ready\n') : reply(503, 'not ready\n');
    }
    if (path === '/metrics') {
      status.metrics().then(
        (text) => reply(200, text, status.contentType),
        (e: Error) => reply(500, `metrics unavailable: ${e.message}\n`),
      );
      return;
    }
    reply(404, 'not found\n');
  };
}

/**
 * Listens on [::] (dual-stack: IPv4 too) or, where the host has no IPv6, on 0.0.0.0, with
 * SO_REUSEPORT so that the next pod's sidecar can bind while this one still serves. A listener
 * without SO_REUSEPORT (another program) still makes the bind fail with EADDRINUSE. With a
 * template, also on its probe address (same port; the kernel prefers the exact address).
 */
export async function serveStatus(
  port: number,
  status: Status,
  onError: (e: Error) => void,
  limits: StatusLimits = STATUS_LIMITS,
): Promise<http.Server> {
  const server = harden(http.createServer(serverOptions(limits), handler(status)), limits);
  try {
    await listen(server, port, '::');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') throw e;
    await listen(server, port, '0.0.0.0');
  }
  // Once listening, an accept error (EMFILE...) must not take the supervisor down with it.
  server.on('error', onError);
  if (status.template) {
    // The kubelet's probe target (render/daemonset.ts sets httpGet.host to the same address).
    // Its own connection budget: a flood on the node's addresses must not starve the kubelet's probes.
    const probes = harden(http.createServer(serverOptions(limits), handler(status)), limits);
    try {
      // The port actually bound (port 0 in tests picks one for the shared listener).
      await listen(probes, (server.address() as AddressInfo).port, probeAddress(status.template));
    } catch (e) {
      server.close();
      throw e;
    }
    probes.on('error', onError);
    server.on('close', () => probes.close());
  }
  return server;
}

/**
 * The status port listens on every node address without authentication (issue 12): a cap on open
 * connections (new ones beyond it are closed at once) and deadlines for the headers and the whole
 * request, so idle or slow clients cannot hold file descriptors or memory of the proxy.
 */
export interface StatusLimits {
  maxConnections: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
}
export const STATUS_LIMITS: StatusLimits = { maxConnections: 64, headersTimeoutMs: 5_000, requestTimeoutMs: 10_000 };

const serverOptions = (l: StatusLimits): http.ServerOptions => ({
  headersTimeout: l.headersTimeoutMs,
  requestTimeout: l.requestTimeoutMs,
});

function harden(server: http.Server, l: StatusLimits): http.Server {
  server.keepAliveTimeout = 5_000;
  server.maxConnections = l.maxConnections;
  server.maxHeadersCount = 32;
  // Node's own headersTimeout did not fire with several slow clients at once (measured, Node 24):
  // a deadline per connection for its first request's headers, and one for silence.
  const deadlines = new WeakMap<object, NodeJS.Timeout>();
  server.on('connection', (socket: Socket) => {
    const t = setTimeout(() => socket.destroy(), l.headersTimeoutMs);
    t.unref();
    deadlines.set(socket, t);
    socket.once('close', () => clearTimeout(t));
  });
  server.on('request', (req: http.IncomingMessage) => clearTimeout(deadlines.get(req.socket)));
  server.setTimeout(l.requestTimeoutMs, (socket) => socket.destroy());
  return server;
}

function listen(server: http.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, ipv6Only: false, reusePort: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
