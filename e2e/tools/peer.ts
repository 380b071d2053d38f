// Test peers that run inside a network namespace (`ip netns exec NS node --import tsx e2e/tools/peer.ts ...`)
// and print one JSON line per result, so tests in the root namespace can read what each end saw.
//
//   serve  --listen ip:port[,ip:port...] [--mode report|hold]
//          report: on accept, write one JSON line {"dst","src"} (what this server saw), then echo every byte
//                  back and half-close when the client does. hold: accept and keep connections open.
//   probe  --to ip:port [--timeout ms]           one connection: prints {"ok", "saw":{dst,src}, "local"} or {"ok":false,"error"}
//   transfer --to ip:port --bytes N              sends N random bytes, half-closes, reads the echo: prints sha256s
//   many   --to ip:port --count N [--timeout ms] N concurrent probes: prints {"ok": n, "failed": n, "errors": {...}}
//   poll   --to ip:port --every ms --timeout ms --count N   N probes, one every `every` ms: prints one line per
//          attempt {"t": start time (epoch ms), "ok", "error"?} so a test can see when behaviour changed
//   chat   --to ip:port --count N --every ms    one connection, N echo round trips `every` ms apart: prints
//          {"ready":true} after the first, then {"ok", "rounds", "saw"} (a long-lived flow across events)
//   hold   --to ip:port --count N                opens N idle connections, prints {"held": n}, keeps them until SIGTERM
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { positionals, values: opt } = parseArgs({
  allowPositionals: true,
  options: {
    listen: { type: 'string' },
    mode: { type: 'string', default: 'report' },
    to: { type: 'string' },
    bytes: { type: 'string', default: '1048576' },
    count: { type: 'string', default: '1' },
    timeout: { type: 'string', default: '5000' },
    every: { type: 'string', default: '100' },
  },
});

const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

const fmt = (a: string | undefined, p: number | undefined) => (a?.includes(':') ? `[${a}]:${p}` : `${a}:${p}`);

function serve(): void {
  const held: net.Socket[] = [];
  for (const l of (opt.listen ?? '').split(',')) {
    const { host, port } = hostPort(l);
    const srv = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
      s.on('error', () => s.destroy());
      if (opt.mode === 'hold') {
        held.push(s);
        return;
      }
      s.write(
        `${JSON.stringify({ dst: fmt(s.localAddress, s.localPort), src: fmt(s.remoteAddress, s.remotePort) })}\n`,
      );
      s.pipe(s); // echo; pipe() ends our side when the client ends its side (half-close honoured)
    });
    // ipv6Only: [::] and 0.0.0.0 on the same port are two separate listeners here.
    srv.listen({ host, port, backlog: 4096, ipv6Only: host.includes(':') }, () => out({ listening: l }));
  }
  process.on('SIGTERM', () => process.exit(0));
}

/** Connects, reads the server's JSON line; resolves with what the server saw. */
function probe(to: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const { host, port } = hostPort(to);
  return new Promise((resolve) => {
    const s = net.connect({ host, port, allowHalfOpen: true });
    let buf = '';
    const done = (r: Record<string, unknown>) => {
      clearTimeout(t);
      s.destroy();
      resolve(r);
    };
    const t = setTimeout(() => done({ ok: false, error: 'ETIMEDOUT' }), timeoutMs);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) done({ ok: true, saw: JSON.parse(buf.slice(0, nl)), local: fmt(s.localAddress, s.localPort) });
    });
    s.on('error', (e: NodeJS.ErrnoException) => done({ ok: false, error: e.code ?? e.message }));
    s.on('end', () => done({ ok: false, error: 'closed before reply' }));
  });
}

function transfer(to: string, total: number): void {
  const { host, port } = hostPort(to);
  const sent = createHash('sha256'),
    got = createHash('sha256');
  let received = 0,
    header = true,
    pending = Buffer.alloc(0);
  const s = net.connect({ host, port, allowHalfOpen: true }, () => {
    let left = total;
    const chunk = randomBytes(1 << 16);
    const pump = () => {
      while (left > 0) {
        const part = left >= chunk.length ? chunk : chunk.subarray(0, left);
        left -= part.length;
        sent.update(part);
        if (!s.write(part)) return void s.once('drain', pump);
      }
      s.end(); // half-close: the echo must still arrive in full after this
    };
    pump();
  });
  s.on('data', (d: Buffer) => {
    if (header) {
      // strip the server's JSON line
      pending = Buffer.concat([pending, d]);
      const nl = pending.indexOf(10);
      if (nl < 0) return;
      header = false;
      d = pending.subarray(nl + 1);
    }
    received += d.length;
    got.update(d);
  });
  s.on('end', () =>
    out({ ok: true, sent: total, received, sentSha: sent.digest('hex'), receivedSha: got.digest('hex') }),
  );
  s.on('error', (e: NodeJS.ErrnoException) => out({ ok: false, error: e.code ?? e.message, received }));
}

async function many(to: string, count: number, timeoutMs: number): Promise<void> {
  const results = await Promise.all(Array.from({ length: count }, () => probe(to, timeoutMs)));
  const errors: Record<string, number> = {};
  for (const r of results) if (!r.ok) errors[String(r.error)] = (errors[String(r.error)] ?? 0) + 1;
  out({ ok: results.filter((r) => r.ok).length, failed: results.filter((r) => !r.ok).length, errors });
}

async function hold(to: string, count: number): Promise<void> {
  const { host, port } = hostPort(to);
  const socks: net.Socket[] = [];
  let failed = 0;
  for (let i = 0; i < count; i += 500) {
    // in batches: a SYN flood would only measure the backlog
    await Promise.all(
      Array.from(
        { length: Math.min(500, count - i) },
        () =>
          new Promise<void>((res) => {
            const s = net.connect({ host, port }, () => {
              socks.push(s);
              res();
            });
            s.on('error', () => {
              failed++;
              res();
            });
          }),
      ),
    );
  }
  out({ held: socks.length, failed });
  process.on('SIGTERM', () => process.exit(0));
  setInterval(() => undefined, 1 << 30); // keep the connections until SIGTERM
}

async function poll(to: string, count: number, everyMs: number, timeoutMs: number): Promise<void> {
  const pending: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const t = Date.now();
    pending.push(probe(to, timeoutMs).then((r) => out({ t, ok: r.ok, ...(r.ok ? {} : { error: r.error }) })));
    await new Promise((res) => setTimeout(res, everyMs));
  }
  await Promise.all(pending);
  out({ done: true });
}

function chat(to: string, rounds: number, everyMs: number, timeoutMs: number): void {
  const { host, port } = hostPort(to);
  const s = net.connect({ host, port });
  let buf = '',
    saw: unknown,
    done = 0;
  const fail = (error: string) => {
    out({ ok: false, rounds: done, error, saw });
    process.exit(0);
  };
  let timer = setTimeout(() => fail('ETIMEDOUT'), timeoutMs);
  s.setEncoding('utf8');
  s.on('error', (e: NodeJS.ErrnoException) => fail(e.code ?? e.message));
  s.on('end', () => fail('closed by peer'));
  s.on('data', (d: string) => {
    buf += d;
    if (saw === undefined) {
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      saw = JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      s.write('ping\n');
      return;
    }
    if (!buf.endsWith('ping\n')) return;
    buf = '';
    clearTimeout(timer);
    if (++done === 1) out({ ready: true, saw });
    if (done >= rounds) {
      out({ ok: true, rounds: done, saw });
      s.destroy();
      return;
    }
    timer = setTimeout(() => fail('ETIMEDOUT'), everyMs + timeoutMs);
    setTimeout(() => s.write('ping\n'), everyMs);
  });
}

const to = opt.to ?? '';
switch (positionals[0]) {
  case 'serve':
    serve();
    break;
  case 'probe':
    probe(to, Number(opt.timeout)).then(out);
    break;
  case 'transfer':
    transfer(to, Number(opt.bytes));
    break;
  case 'many':
    void many(to, Number(opt.count), Number(opt.timeout));
    break;
  case 'hold':
    void hold(to, Number(opt.count));
    break;
  case 'chat':
    chat(to, Number(opt.count), Number(opt.every), Number(opt.timeout));
    break;
  case 'poll':
    void poll(to, Number(opt.count), Number(opt.every), Number(opt.timeout));
    break;
  default:
    console.error('usage: peer.ts serve|probe|transfer|many|hold ...');
    process.exit(2);
}
