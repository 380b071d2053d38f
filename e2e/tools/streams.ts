// Long-lived checksummed streams (issue 15's reload tests), run inside a namespace:
//   streams --to ip:port --count N [--every ms] [--chunk bytes] [--open-timeout ms]
// Opens N connections to a `peer.ts serve` (report mode: one JSON line, then an echo of every byte),
// prints {"ready":true,"open":N} once all are open, and on each connection writes `chunk` random
// bytes every `every` ms (staggered). On SIGTERM (or SIGINT) it stops writing, half-closes every
// connection, waits for each echo to end, and prints one line:
//   {"connections","ok","reset","mismatch","bytes","errors":{code: n}}
// ok: the echo ended cleanly and its SHA-256 equals that of what was sent; reset: the connection
// failed (ECONNRESET, EPIPE, an early end) at any point; mismatch: closed cleanly, other bytes.
import { createHash, randomBytes, type Hash } from 'node:crypto';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    to: { type: 'string' },
    count: { type: 'string', default: '100' },
    every: { type: 'string', default: '200' },
    chunk: { type: 'string', default: '512' },
    'open-timeout': { type: 'string', default: '20000' },
  },
});
const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const to = opt.to ?? '';
const host = to.slice(0, to.lastIndexOf(':')).replace(/^\[|\]$/g, ''),
  port = Number(to.slice(to.lastIndexOf(':') + 1));
const count = Number(opt.count),
  every = Number(opt.every),
  chunk = Number(opt.chunk);

interface Stream {
  sock: net.Socket;
  sent: Hash;
  got: Hash;
  header: boolean;
  bytes: number;
  failed?: string;
  ended: boolean;
  timer?: NodeJS.Timeout;
}

function open(): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
    const s: Stream = {
      sock,
      sent: createHash('sha256'),
      got: createHash('sha256'),
      header: false,
      bytes: 0,
      ended: false,
    };
    const t = setTimeout(() => reject(new Error('open timeout')), Number(opt['open-timeout']));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      s.failed ??= e.code ?? e.message;
      reject(e);
    });
    sock.on('data', (d: Buffer) => {
      let b = d;
      if (!s.header) {
        const nl = b.indexOf(10);
        if (nl < 0) return;
        s.header = true;
        b = b.subarray(nl + 1);
        clearTimeout(t);
        resolve(s);
      }
      s.got.update(b);
      s.bytes += b.length;
    });
    sock.on('end', () => {
      s.ended = true;
      if (!stopping) s.failed ??= 'ended early';
    });
    sock.on('close', () => {
      if (!s.ended) s.failed ??= 'closed';
    });
  });
}

let stopping = false;
const streams: Stream[] = [];

async function main(): Promise<void> {
  // Opened in batches: a burst of hundreds of SYNs would measure the accept queue, not the reload.
  for (let i = 0; i < count; i += 50) {
    const batch = await Promise.allSettled(Array.from({ length: Math.min(50, count - i) }, open));
    for (const r of batch) {
      if (r.status === 'rejected') {
        out({ ready: false, error: String((r.reason as Error).message) });
        process.exit(1);
      }
      streams.push(r.value);
    }
  }
  streams.forEach((s, i) => {
    const write = () => {
      if (stopping || s.failed) return;
      const b = randomBytes(chunk);
      s.sent.update(b);
      s.sock.write(b);
    };
    setTimeout(
      () => {
        write();
        s.timer = setInterval(write, every);
      },
      (i * every) / streams.length,
    );
  });
  out({ ready: true, open: streams.length });
}

async function finish(): Promise<void> {
  if (stopping) return;
  stopping = true;
  for (const s of streams) {
    clearInterval(s.timer);
    s.sock.end();
  }
  const deadline = Date.now() + 15_000;
  while (streams.some((s) => !s.ended && !s.failed) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  const errors: Record<string, number> = {};
  let ok = 0,
    reset = 0,
    mismatch = 0,
    bytes = 0;
  for (const s of streams) {
    bytes += s.bytes;
    const failed = s.failed ?? (s.ended ? undefined : 'no end after half-close');
    if (failed) {
      reset++;
      errors[failed] = (errors[failed] ?? 0) + 1;
    } else if (s.sent.digest('hex') === s.got.digest('hex')) ok++;
    else mismatch++;
    s.sock.destroy();
  }
  out({ connections: streams.length, ok, reset, mismatch, bytes, errors });
  process.exit(0);
}

process.on('SIGTERM', () => void finish());
process.on('SIGINT', () => void finish());
void main();
