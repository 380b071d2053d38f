// Benchmark peers: nginx (the HTTP server), iperf3 (the throughput server) and HAProxy in TPROXY mode
// (the proxy we compare against). Configs are rendered as text by pure functions.
import { createConnection } from 'node:net';
import { startInNs, type Proc } from '../proc.ts';

export function nginxConf(dir: string, listen: string[]): string {
  return `worker_processes 2;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path ${dir}/nginx-body;
  proxy_temp_path ${dir}/nginx-proxy;
  fastcgi_temp_path ${dir}/nginx-fastcgi;
  uwsgi_temp_path ${dir}/nginx-uwsgi;
  scgi_temp_path ${dir}/nginx-scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {
${listen.map((l) => `    listen ${l} reuseport backlog=4096;`).join('\n')}
    location / { return 200 "ok\\n"; }
  }
}
`;
}

/**
 * HAProxy as a transparent proxy: it accepts on the TPROXY port (`transparent`) and connects to each
 * connection's original destination (`server ... 0.0.0.0`), from the client's address when keepClientIp
 * (`usesrc clientip`). maxconn is bounded by the machine's hard nofile limit (reference pitfall 6).
 */
export function haproxyConf(opts: {
  dir: string;
  port: number;
  splice: boolean;
  keepClientIp: boolean;
  maxconn: number;
}): string {
  return `global
  nbthread 2
  maxconn ${opts.maxconn}
  stats socket ${opts.dir}/haproxy.sock mode 600 level admin
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
${opts.splice ? '  option splice-auto\n' : ''}frontend tproxy
  bind 0.0.0.0:${opts.port} transparent
  bind [::]:${opts.port} v6only transparent
  default_backend original_destination
backend original_destination
${opts.keepClientIp ? '  source 0.0.0.0 usesrc clientip\n' : ''}  server original 0.0.0.0
`;
}

export function startNginx(ns: string, confPath: string): Promise<Proc> {
  // nginx prints nothing when it starts; readiness is checked by the caller with a request.
  return startInNs(ns, ['nginx', '-c', confPath]);
}

export function startIperfServer(ns: string, bind: string): Promise<Proc> {
  return startInNs(ns, ['iperf3', '-s', '--forceflush', '-B', bind], { ready: /Server listening/ });
}

export function startHaproxy(ns: string, confPath: string): Promise<Proc> {
  return startInNs(ns, ['haproxy', '-db', '-f', confPath]);
}

/** Reads HAProxy's cumulative connection count from its stats socket (proves it was in the path). */
export function haproxyCumConns(sock: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createConnection(sock);
    let buf = '';
    s.on('connect', () => s.end('show info\n'));
    s.on('data', (d) => (buf += d));
    s.on('end', () => {
      const m = /^CumConns: (\d+)$/m.exec(buf);
      if (m) resolve(Number(m[1]));
      else reject(new Error(`no CumConns in haproxy info: ${buf.slice(0, 200)}`));
    });
    s.on('error', reject);
  });
}
