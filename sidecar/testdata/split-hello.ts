// A TLS ClientHello for SERVERNAME sent one byte per TCP segment (Nagle off, a pause between bytes),
// then the first bytes of the reply: the proxy must reassemble the ClientHello to read its SNI.
//   split-hello.ts HOST PORT SERVERNAME  ->  {"ok": bool, "helloBytes": n, "reply": first byte, "error"?}
import net from 'node:net';
import { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';

const [host = '', port = '0', servername = ''] = process.argv.slice(2);

/** The ClientHello tls.connect writes first, captured without a network. */
function clientHello(): Promise<Buffer> {
  return new Promise((resolve) => {
    const wire = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        resolve(chunk);
        cb();
      },
    });
    // X25519 alone: a classic-size ClientHello (~300 bytes; the default adds a 1.2 KB post-quantum key
    // share), so one byte a millisecond stays within the policy's peek timeout.
    const t = tls.connect({ socket: wire, servername, rejectUnauthorized: false, ecdhCurve: 'X25519' });
    t.on('error', () => {});
    setTimeout(() => t.destroy(), 100);
  });
}

const hello = await clientHello();
const s = net.connect({ host, port: Number(port), noDelay: true });
s.on('error', (e: NodeJS.ErrnoException) => {
  console.log(JSON.stringify({ ok: false, helloBytes: hello.length, error: e.code }));
  process.exit(0);
});
s.once('data', (d: Buffer) => {
  // 0x16: a TLS handshake record (the ServerHello): the server got the whole ClientHello.
  console.log(JSON.stringify({ ok: d[0] === 0x16, helloBytes: hello.length, reply: d[0] }));
  s.destroy();
});
await new Promise((r) => s.once('connect', r));
for (const b of hello) {
  s.write(Buffer.of(b));
  await sleep(1);
}
