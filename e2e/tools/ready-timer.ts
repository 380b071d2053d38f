// Start-up time as a kubelet would see it: spawns a command, polls GET http://127.0.0.1:PORT/readyz every
// 2 ms from this process (no per-poll process start), prints {"readyMs":N} at the first 200 and stops
// the command. Runs inside the namespace the command runs in.
//   ready-timer.ts --port P -- argv...
import { spawn } from 'node:child_process';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values: o, positionals: argv } = parseArgs({ allowPositionals: true, options: { port: { type: 'string' } } });
const ready = (): Promise<boolean> =>
  new Promise((resolve) => {
    const req = http.get(
      { host: '127.0.0.1', port: Number(o.port), path: '/readyz', agent: false, timeout: 200 },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
  });
const t0 = performance.now();
const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
child.on('exit', (code) => {
  console.log(JSON.stringify({ exited: code }));
  process.exit(1);
});
while (!(await ready())) await new Promise((r) => setTimeout(r, 2));
console.log(JSON.stringify({ readyMs: Math.round(performance.now() - t0) }));
child.removeAllListeners('exit');
child.kill('SIGTERM');
await new Promise((r) => child.on('exit', r));
