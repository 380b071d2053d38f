// UDP peers for the tests in network namespaces (dgram only: what a plain client or server sees).
//   serve --listen A:P,[B]:P   a socket per address: "probe" gets {src, dst} back as JSON (dst: the
//                              bound address, i.e. the address the client's datagram arrived at);
//                              anything else is echoed back unchanged
//   probe --to H:P             one "probe"; prints {ok, saw, from} (from: who the reply came from)
//   flows --to H:P --count N   N sockets (flows), one probe each, 250 at a time; prints {ok, failed}
//   poll --to H:P --count N --every MS
//                              a probe every MS ms on a new socket; one JSON line each: {at, ok, src}
//   stream --to H:P --count N --size B --rate PPS
//                              N datagrams of B bytes (sequence number, payload, SHA-1 prefix) at
//                              PPS, echoed; prints {sent, received, inOrder, badChecksum}
// Each prints one JSON line and exits 0; a timeout is a result, not an error.
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { parseArgs } from 'node:util';

const { positionals, values: o } = parseArgs({
  allowPositionals: true,
  options: {
    listen: { type: 'string' },
    to: { type: 'string' },
    count: { type: 'string', default: '1' },
    size: { type: 'string', default: '1200' },
    rate: { type: 'string', default: '2000' },
    every: { type: 'string', default: '100' },
    timeout: { type: 'string', default: '2000' },
  },
});
const out = (x: unknown): void => void process.stdout.write(`${JSON.stringify(x)}\n`);
const split = (hp: string): { host: string; port: number } => {
  const i = hp.lastIndexOf(':');
  return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) };
};
const join = (host: string, port: number) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
// 4 MiB buffers (this host's rmem_max): a peer in JavaScript must not be where datagrams are lost.
const BUF = { recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 };
const sock = (host: string) =>
  dgram.createSocket(host.includes(':') ? { type: 'udp6', ipv6Only: true, ...BUF } : { type: 'udp4', ...BUF });
const timeoutMs = Number(o.timeout);

function serve(): void {
  const list = (o.listen ?? '').split(',');
  for (const hp of list) {
    const { host, port } = split(hp);
    const s = sock(host);
    s.on('message', (msg, r) => {
      if (msg.toString() === 'probe')
        s.send(JSON.stringify({ src: join(r.address, r.port), dst: join(host, port) }), r.port, r.address);
      else s.send(msg, r.port, r.address);
    });
    s.bind(port, host, () => out({ listening: hp }));
  }
}

/** One probe; the socket stays open for `keep` (so concurrent and later probes use distinct ports: distinct flows). */
function probeOnce(to: string, keep?: dgram.Socket[]): Promise<{ ok: boolean; saw?: unknown; from?: string }> {
  const { host, port } = split(to);
  const s = sock(host);
  keep?.push(s);
  return new Promise((resolve) => {
    const timer = setTimeout(() => done({ ok: false }), timeoutMs);
    const done = (r: { ok: boolean; saw?: unknown; from?: string }) => {
      clearTimeout(timer);
      s.removeAllListeners('message');
      if (!keep) s.close();
      resolve(r);
    };
    s.on('message', (msg, r) => done({ ok: true, saw: JSON.parse(msg.toString()), from: join(r.address, r.port) }));
    s.on('error', () => done({ ok: false }));
    s.send('probe', port, host);
  });
}

async function flows(): Promise<void> {
  const n = Number(o.count);
  let ok = 0;
  const open: dgram.Socket[] = [];
  // Waves of 250 concurrent flows; every socket stays open to the end, so no port (no flow) repeats.
  for (let i = 0; i < n; i += 250) {
    const wave = await Promise.all(Array.from({ length: Math.min(250, n - i) }, () => probeOnce(o.to!, open)));
    ok += wave.filter((r) => r.ok).length;
  }
  for (const s of open) s.close();
  out({ ok, failed: n - ok });
}

const sha = (b: Buffer) => createHash('sha1').update(b).digest().subarray(0, 8);

async function stream(): Promise<void> {
  const n = Number(o.count),
    size = Number(o.size),
    rate = Number(o.rate);
  const { host, port } = split(o.to!);
  const s = sock(host);
  let received = 0,
    inOrder = 0,
    badChecksum = 0,
    next = 0;
  s.on('message', (msg) => {
    received++;
    const seq = msg.readUInt32BE(0);
    const body = msg.subarray(4, msg.length - 8);
    if (msg.length !== size || !sha(body).equals(msg.subarray(msg.length - 8))) badChecksum++;
    if (seq === next) inOrder++;
    next = seq + 1;
  });
  const payload = randomBytes(size - 12);
  const started = Date.now();
  for (let seq = 0; seq < n; seq++) {
    const msg = Buffer.alloc(size);
    msg.writeUInt32BE(seq, 0);
    payload.copy(msg, 4);
    msg.writeUInt32BE(seq, 4); // each payload differs: a reordered or mixed-up datagram fails its checksum
    sha(msg.subarray(4, size - 8)).copy(msg, size - 8);
    s.send(msg, port, host);
    const due = started + ((seq + 1) * 1000) / rate;
    if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
  }
  await new Promise((r) => setTimeout(r, timeoutMs));
  s.close();
  out({ sent: n, received, inOrder, badChecksum });
}

async function poll(): Promise<void> {
  for (let i = 0; i < Number(o.count); i++) {
    const at = Date.now();
    const r = (await probeOnce(o.to!)) as { ok: boolean; saw?: { src: string } };
    out({ at, ok: r.ok, src: r.saw?.src });
    const wait = at + Number(o.every) - Date.now();
    if (wait > 0) await new Promise((res) => setTimeout(res, wait));
  }
}

const mode = positionals[0];
if (mode === 'serve') serve();
else if (mode === 'probe') probeOnce(o.to!).then(out);
else if (mode === 'flows') void flows();
else if (mode === 'stream') void stream();
else if (mode === 'poll') void poll();
else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
