// The data engine in a test process of its own (sidecar/hook.test.ts), with a small decision hook:
// what TypeScript policy code (the egress-control issue) will build on. Runs inside a namespace:
//   engine-host.ts --port P [--threads N] [--peek] [--hold-ms MS] [--elsewhere ip:port] [--deny-port P]
// Hook: with --peek it reads the client's first line (asking for more bytes until a newline, the
// end of the client's stream or the hold timeout): "deny..." resets, "elsewhere..." goes to
// --elsewhere, anything else (and no bytes at all) to the original destination. Without --peek it
// decides at accept: destination port --deny-port resets, others forward.
// Prints {"ready":true} once listening, one {"decided":...} line per answer, and the engine's
// counters as {"stats":{...}} for every "stats" line on stdin.
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Engine, type HeldConnection, type Verdict } from '../../sidecar/engine.ts';

const { values: o } = parseArgs({
  options: {
    port: { type: 'string' },
    threads: { type: 'string', default: '2' },
    peek: { type: 'boolean', default: false },
    'hold-ms': { type: 'string', default: '1000' },
    elsewhere: { type: 'string' },
    'deny-port': { type: 'string', default: '0' },
  },
});
const out = (x: unknown): void =>
  void process.stdout.write(`${JSON.stringify(x, (_, v) => (typeof v === 'bigint' ? String(v) : v))}\n`);

function decide(c: HeldConnection): Verdict {
  if (!o.peek) return c.dst.port === Number(o['deny-port']) ? { action: 'reset' } : { action: 'forward' };
  const nl = c.bytes.indexOf(10);
  if (nl < 0 && !c.complete && !c.timedOut) return { action: 'more' };
  const line = c.bytes.subarray(0, nl < 0 ? c.bytes.length : nl).toString();
  if (line.startsWith('deny')) return { action: 'reset' };
  if (line.startsWith('elsewhere') && o.elsewhere) {
    const i = o.elsewhere.lastIndexOf(':');
    return { action: 'forward-to', address: o.elsewhere.slice(0, i), port: Number(o.elsewhere.slice(i + 1)) };
  }
  return { action: 'forward' };
}

const engine = Engine.start(
  {
    threads: Number(o.threads),
    listenPort: Number(o.port),
    backlog: 1024,
    ipv4: true,
    ipv6: true,
    keepClientIp: true,
    cpus: null,
    connectTimeoutMs: 2000,
    idleTimeoutMs: 60_000,
    holdTimeoutMs: Number(o['hold-ms']),
    maxConnections: 1000,
    hook: true,
    peek: o.peek ?? false,
    logConnections: false,
    splice: true,
    audit: false,
    auditPerSecond: 100,
    udp: false,
    udpIdleTimeoutMs: 60_000,
    udpMaxFlows: 1000,
    faultKind: 0,
    faultAfterMs: 0,
  },
  {
    onEvent: (e) => out({ event: e }),
    onDecide: (c) => {
      const v = decide(c);
      out({
        decided: v.action,
        bytes: c.bytes.length,
        complete: c.complete,
        timedOut: c.timedOut,
        dst: `${c.dst.address}:${c.dst.port}`,
      });
      return v;
    },
  },
);
out({ ready: true, threads: engine.threads.length });
createInterface({ input: process.stdin }).on('line', (l) => l.trim() === 'stats' && out({ stats: engine.stats() }));
// The engine's event channel does not keep a process alive (by design); this host has nothing else.
setInterval(() => {}, 1 << 30);
process.on('SIGTERM', () => {
  engine.stop();
  process.exit(0);
});
