// Scripted TCP peers for the relay tests (sidecar/relay.test.ts), run inside network namespaces.
// The client's first line names what the server does; both ends print one JSON line per result.
//
//   serve --listen ip:port            the server side: reads the client's first line, then
//       echo        echo every byte, half-close when the client does
//       reset       reset the connection at once
//       tick MS     write "." every 100 ms for MS ms (one-way traffic), then go quiet
//       slow        read 1 byte a second, never write (a slow reader)
//       bulk N      send N random bytes, then half-close
//     and prints {"closed":true,"error"?,"cmd"} when a connection ends.
//   client --to ip:port --cmd CMD [--bytes N] [--seconds S]
//       echo        send N random bytes after the line, half-close, read the echo: sha256 of each way
//       reset       ask the server to reset: prints the error the client saw
//       reset-self  exchange a line, then reset from the client side
//       quiet       exchange a line, then wait for the proxy to close (idle): prints closedAfterMs
//       tick        ask for MS ms of ticks (--bytes is MS), wait for the close: ticks and closedAfterMs
//       slow        write random bytes as fast as the path takes them for S seconds: prints bytes sent
//       bulk        ask for N bytes, read them: prints received, sha256 and the end
//       say         send --text's parts (split on |, one segment each, 150 ms apart), then read for
//                   --seconds: prints what came back and how the connection ended
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { positionals, values: opt } = parseArgs({
  allowPositionals: true,
  options: {
    listen: { type: 'string' },
    to: { type: 'string' },
    cmd: { type: 'string' },
    bytes: { type: 'string', default: '0' },
    seconds: { type: 'string', default: '5' },
    text: { type: 'string', default: '' },
  },
});
const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const sha = () => createHash('sha256');

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

function serveOne(s: net.Socket, line: string, rest: Buffer): void {
  const [cmd, arg] = line.split(' ');
  if (cmd === 'echo') {
    if (rest.length) s.write(rest);
    s.pipe(s);
  } else if (cmd === 'reset') s.resetAndDestroy();
  else if (cmd === 'tick') {
    const iv = setInterval(() => s.write('.'), 100);
    setTimeout(() => clearInterval(iv), Number(arg));
    s.on('close', () => clearInterval(iv));
  } else if (cmd === 'slow') {
    s.pause();
    const iv = setInterval(() => s.read(1), 1000);
    s.on('close', () => clearInterval(iv));
  } else if (cmd === 'bulk') {
    let left = Number(arg);
    const chunk = randomBytes(1 << 16);
    const pump = (): void => {
      while (left > 0) {
        const part = chunk.subarray(0, Math.min(left, chunk.length));
        left -= part.length;
        if (!s.write(part)) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
  }
}

function serve(): void {
  const { host, port } = hostPort(opt.listen ?? '');
  const srv = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    let buf = Buffer.alloc(0),
      cmd = '';
    let error: string | undefined;
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => out({ closed: true, cmd, ...(error ? { error } : {}) }));
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const nl = buf.indexOf(10);
      if (nl < 0) return;
      s.off('data', onData);
      cmd = buf.subarray(0, nl).toString();
      serveOne(s, cmd, buf.subarray(nl + 1));
    };
    s.on('data', onData);
    s.on('end', () => !s.writableEnded && cmd !== 'echo' && s.end());
  });
  srv.listen({ host, port, backlog: 4096, ipv6Only: host.includes(':') }, () => out({ listening: opt.listen }));
  process.on('SIGTERM', () => process.exit(0));
}

/** Connects and sends the command line; resolves with the socket and what happened to it. */
function open(line: string): { s: net.Socket; t0: number; ended: Promise<{ error?: string; at: number }> } {
  const { host, port } = hostPort(opt.to ?? '');
  const s = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
  s.write(`${line}\n`);
  let error: string | undefined;
  s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
  const ended = new Promise<{ error?: string; at: number }>((r) =>
    s.on('close', () => r({ ...(error ? { error } : {}), at: Date.now() })),
  );
  return { s, t0: Date.now(), ended };
}

async function client(): Promise<void> {
  const n = Number(opt.bytes);
  const cmd = opt.cmd ?? '';
  if (cmd === 'echo') {
    const { s, ended } = open('echo');
    const sent = sha(),
      got = sha();
    let received = 0;
    s.on('data', (d: Buffer) => {
      received += d.length;
      got.update(d);
    });
    const data = randomBytes(n);
    sent.update(data);
    s.end(data);
    const e = await ended;
    return out({ ok: !e.error, received, sentSha: sent.digest('hex'), receivedSha: got.digest('hex'), ...e });
  }
  if (cmd === 'reset' || cmd === 'quiet' || cmd === 'reset-self') {
    const { s, t0, ended } = open(cmd === 'reset' ? 'reset' : 'echo');
    if (cmd !== 'reset') {
      s.write('x');
      await new Promise((r) => s.once('data', r));
      if (cmd === 'reset-self') s.resetAndDestroy();
    }
    const e = await ended;
    return out({ ...e, closedAfterMs: e.at - t0 });
  }
  if (cmd === 'tick') {
    const { s, t0, ended } = open(`tick ${n}`);
    let ticks = 0;
    s.on('data', (d: Buffer) => (ticks += d.length));
    const e = await ended;
    return out({ ...e, ticks, closedAfterMs: e.at - t0 });
  }
  if (cmd === 'slow') {
    const { s } = open('slow');
    const chunk = randomBytes(1 << 16);
    let sent = 0,
      stop = false;
    const pump = (): void => {
      while (!stop && s.write(chunk)) sent += chunk.length;
      if (stop) return;
      s.once('drain', () => {
        sent += chunk.length;
        pump();
      });
    };
    pump();
    await new Promise((r) => setTimeout(r, Number(opt.seconds) * 1000));
    stop = true;
    out({ sent: sent - s.writableLength });
    return void s.destroy();
  }
  if (cmd === 'bulk') {
    const { s, ended } = open(`bulk ${n}`);
    const got = sha();
    let received = 0,
      end = false;
    s.on('data', (d: Buffer) => {
      received += d.length;
      got.update(d);
    });
    s.on('end', () => {
      end = true;
      s.end();
    });
    const e = await ended;
    return out({ received, end, receivedSha: got.digest('hex'), ...e });
  }
  if (cmd === 'say') {
    const { host, port } = hostPort(opt.to ?? '');
    const s = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
    let got = '',
      error: string | undefined;
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    const closed = new Promise((r) => s.on('close', r));
    await Promise.race([new Promise((r) => s.once('connect', r)), closed]);
    for (const part of (opt.text ?? '').split('|')) {
      if (part) s.write(part.replace(/\\n/g, '\n'));
      await new Promise((r) => setTimeout(r, 150));
    }
    await Promise.race([closed, new Promise((r) => setTimeout(r, Number(opt.seconds) * 1000))]);
    s.destroy();
    return out({ got, ...(error ? { error } : {}) });
  }
  console.error(`unknown --cmd ${cmd}`);
  process.exit(2);
}

if (positionals[0] === 'serve') serve();
else if (positionals[0] === 'client') await client();
else {
  console.error('usage: scenario.ts serve|client ...');
  process.exit(2);
}
