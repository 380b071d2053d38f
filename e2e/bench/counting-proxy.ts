// A plain-HTTP proxy in front of a test API server that counts what one client sends, by verb
// (watch, list, get, create, update, patch, delete) and resource. The API server's own
// apiserver_request_total has no per-client label, so the operator under measurement talks to the
// API server through this proxy (which adds the admin client certificate) and nothing else does.
import * as http from 'node:http';
import * as https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

export interface Counted {
  /** "verb resource" → requests */
  counts: Map<string, number>;
  port: number;
  reset(): Map<string, number>;
  close(): Promise<void>;
}

/** "verb resource" of a request path, as the API server's metrics would name it. */
export function classify(method: string, url: string): string {
  const u = new URL(url, 'http://x');
  const seg = u.pathname.split('/').filter(Boolean);
  const rest = seg[0] === 'api' ? seg.slice(2) : seg[0] === 'apis' ? seg.slice(3) : seg;
  const path = rest[0] === 'namespaces' && rest.length >= 3 ? rest.slice(2) : rest;
  const [resource = seg.join('/'), name, sub] = path;
  const r = sub ? `${resource}/${sub}` : resource;
  if (method === 'GET') return `${u.searchParams.get('watch') ? 'watch' : name ? 'get' : 'list'} ${r}`;
  const verb = { POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' }[method] ?? method.toLowerCase();
  return `${verb} ${r}`;
}

export async function startCountingProxy(server: string, kc: KubeConfig): Promise<Counted> {
  let counts = new Map<string, number>();
  const proxy = http.createServer(async (req, res) => {
    const key = classify(req.method ?? 'GET', req.url ?? '/');
    counts.set(key, (counts.get(key) ?? 0) + 1);
    const { host: _host, ...headers } = req.headers;
    const opts: https.RequestOptions = { method: req.method, headers };
    await kc.applyToHTTPSOptions(opts);
    const up = https.request(`${server}${req.url}`, opts, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  return {
    get counts() {
      return counts;
    },
    port: (proxy.address() as { port: number }).port,
    reset() {
      const was = counts;
      counts = new Map();
      return was;
    },
    close: async () => {
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    },
  };
}
