// Test fixture: one long-lived connection driven from stdin, for the drain test.
//   held-client.ts HOST PORT
// Prints {"connected":...} once connected, {"data":...} for every chunk received, each stdin line
// is sent as is (with its newline), stdin EOF half-closes, and {"closed":true,"error"?} ends it.
import net from 'node:net';
import { createInterface } from 'node:readline';

const [host = '', port = '0'] = process.argv.slice(2);
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const s = net.connect({ host, port: Number(port), allowHalfOpen: true }, () => out({ connected: s.localAddress }));
let error: string | undefined;
s.setEncoding('utf8');
s.on('data', (d: string) => out({ data: d }));
s.on('end', () => s.end());
s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
s.on('close', () => {
  out({ closed: true, ...(error ? { error } : {}) });
  process.exit(0);
});
createInterface({ input: process.stdin })
  .on('line', (line) => s.write(`${line}\n`))
  .on('close', () => s.end());
