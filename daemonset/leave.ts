// A node leaving the active set (scale-in). The operator flips the node's activation label from
// "true" to "leaving" (operator/nodes.ts): the proxy pod there is deleted (its sidecar drains) and
// the leave DaemonSet's pod takes its place, whose privileged init container runs
// `tpfleet-agent cleanup --wait-port <metricsPort> --wait-timeout <s>`. Before the cleanup proper:
//   1. gate -> drain: new connections go direct at once, so the node's clients see no gap, while
//      flows the proxy holds keep diverting to it (the divert rule precedes the gate chain);
//   2. wait until the old sidecar's metrics port closes: the sidecar exits after its drain (bounded
//      by proxy.timeouts.drain), and removing the rules before that would cut its open flows.
// Then main.ts runs the same cleanup and tuning restore as a deletion, so the node ends exactly as
// it was before the first apply. Idempotent: with no state (already cleaned) nothing is waited for.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { writeGate } from './executor.ts';
import { readState } from './state.ts';
import { errorMessage } from '../api/errors.ts';

/** One probe: true when something accepts on 127.0.0.1:port, false when refused or silent. */
function accepting(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (open: boolean) => {
      s.destroy();
      resolve(open);
    };
    s.setTimeout(timeoutMs, () => done(true)); // a listener too busy to accept is still there
    s.once('connect', () => done(true));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code !== 'ECONNREFUSED'));
  });
}

/** Resolves true once nothing listens on 127.0.0.1:port, false when `timeoutMs` passed first. */
export async function waitPortClosed(port: number, timeoutMs: number, intervalMs = 200): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await accepting(port, Math.min(1000, timeoutMs)))) return true;
    if (Date.now() + intervalMs > deadline) return false;
    await sleep(intervalMs);
  }
}

export interface DrainOptions {
  stateDir: string;
  port: number;
  timeoutMs: number;
  dryRun: boolean;
  log: Logger;
  out: (t: string) => void;
}

/** Steps 1 and 2 above. Never throws: the cleanup after it must run whatever happens here. */
export async function drainBeforeCleanup(o: DrainOptions): Promise<void> {
  const state = readState(o.stateDir);
  if (!state) return; // nothing installed: nothing diverts to a proxy
  if (o.dryRun) {
    o.out(
      `would set the gate to drain (${state.backend}) and wait up to ${o.timeoutMs} ms for port ${o.port} to close`,
    );
    return;
  }
  try {
    await writeGate(state, 'drain');
    o.log.info({ backend: state.backend }, 'leaving: new connections now go direct');
  } catch (e) {
    // Rules may be half gone (a previous attempt): cleanup below removes whatever is left.
    o.log.warn({ err: errorMessage(e) }, 'leaving: could not set the drain gate');
  }
  const started = Date.now();
  const closed = await waitPortClosed(o.port, o.timeoutMs);
  if (closed) o.log.info({ port: o.port, waitedMs: Date.now() - started }, 'leaving: the proxy has stopped');
  else
    o.log.warn(
      { port: o.port, timeoutMs: o.timeoutMs },
      'leaving: the proxy still listens after the wait; cleaning up anyway',
    );
}
