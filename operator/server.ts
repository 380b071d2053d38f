// HTTP endpoints of the operator process: /metrics (Prometheus), /healthz (the process and its
// work loop are alive) and /readyz (caches synced and, when admission is on, the webhook serving;
// a replica waiting for the lease is ready too, it serves admission and just does not reconcile).
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface Probes {
  healthy: () => boolean;
  ready: () => boolean;
}

export function startServer(host: string, port: number, registry: Registry, probes: Probes): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const plain = (code: number, text: string) => {
      res.writeHead(code, { 'Content-Type': 'text/plain' });
      res.end(text);
    };
    if (path === '/healthz') return plain(probes.healthy() ? 200 : 503, probes.healthy() ? 'ok\n' : 'unhealthy\n');
    if (path === '/readyz') return plain(probes.ready() ? 200 : 503, probes.ready() ? 'ok\n' : 'not ready\n');
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': registry.contentType });
          res.end(text);
        },
        (e: Error) => plain(500, `${e.message}\n`),
      );
      return;
    }
    plain(404, 'not found\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
