// `npm run cluster:up | cluster:down | cluster:status` (see supervisor.ts). `serve` is the detached
// supervisor that `up` starts; it is not meant to be run by hand.
import { clusterDir, down, hints, readUp, serve, up } from './supervisor.ts';

const cmd = process.argv[2];
const dir = clusterDir();
if (cmd === 'serve') await serve(dir);
else if (cmd === 'up') process.exitCode = await up(dir);
else if (cmd === 'down') process.exitCode = await down(dir);
else if (cmd === 'status') {
  const s = readUp(dir);
  console.log(s ? hints(s) : 'no tpfleet cluster is running');
} else {
  console.error('usage: up.ts up|down|status');
  process.exitCode = 2;
}
