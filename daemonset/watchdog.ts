// The watchdog: every 250 ms it checks that the proxy (1) has a TCP socket in LISTEN on the
// listen port in this netns and (2) answers GET /healthz with 200 within 400 ms. After 2
// consecutive failures it switches our gate chain to bypass (FailOpen) or drop (FailClosed);
// after 2 consecutive successes it empties the gate again. It never touches any other rule.
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { hasListener } from './parse.ts';
import type { GateMode } from './types.ts';
import { errorMessage } from '../api/errors.ts';

export type Health = 'unknown' | 'healthy' | 'failed';

export interface Streaks {
  health: Health;
  ok: number;
  fail: number;
}

export const THRESHOLD = 2;

/** Pure hysteresis: returns the new streaks and the new health when it changes. */
export function step(s: Streaks, ok: boolean): { next: Streaks; changed?: Health } {
  const next: Streaks = { health: s.health, ok: ok ? s.ok + 1 : 0, fail: ok ? 0 : s.fail + 1 };
  if (next.ok >= THRESHOLD && s.health !== 'healthy') next.health = 'healthy';
  else if (next.fail >= THRESHOLD && s.health !== 'failed') next.health = 'failed';
  return next.health === s.health ? { next } : { next, changed: next.health };
}

export function gateFor(health: Health, policy: 'FailOpen' | 'FailClosed'): GateMode {
  if (health !== 'failed') return 'pass';
  return policy === 'FailOpen' ? 'bypass' : 'drop';
}

export function healthz(port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? undefined : `/healthz answered ${res.statusCode}`);
    });
    // `timeout` is idle time; the hard deadline covers a server that trickles bytes.
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => resolve(`/healthz: ${e.message}`));
    req.on('close', () => clearTimeout(timer));
    req.end();
  });
}

/** undefined when healthy, otherwise the reason. */
export async function probe(listenPort: number, metricsPort: number, timeoutMs: number): Promise<string | undefined> {
  const texts = await Promise.all(['/proc/net/tcp', '/proc/net/tcp6'].map((p) => readFile(p, 'utf8').catch(() => '')));
  if (!hasListener(texts, listenPort)) return `no TCP socket in LISTEN on port ${listenPort}`;
  return healthz(metricsPort, timeoutMs);
}

export interface WatchOptions {
  listenPort: number;
  metricsPort: number;
  policy: 'FailOpen' | 'FailClosed';
  writeGate: (mode: GateMode) => Promise<void>;
  /** Told each health change once its gate is written (agent-watch starts its self-tests on the first healthy). */
  onHealth?: (health: Health) => void;
  log: Logger;
  signal: AbortSignal;
  intervalMs?: number;
  timeoutMs?: number;
  /** While failed, re-assert the gate this often (a re-apply recreates an empty gate). */
  reassertMs?: number;
}

export async function watch(o: WatchOptions): Promise<void> {
  const interval = o.intervalMs ?? 250,
    timeout = o.timeoutMs ?? 400,
    reassert = o.reassertMs ?? 2000;
  let s: Streaks = { health: 'unknown', ok: 0, fail: 0 };
  let lastWrite = 0;
  let lastReason: string | undefined;
  o.log.info({ listenPort: o.listenPort, metricsPort: o.metricsPort, policy: o.policy }, 'watchdog started');
  while (!o.signal.aborted) {
    const started = Date.now();
    const reason = await probe(o.listenPort, o.metricsPort, timeout);
    if (reason) lastReason = reason;
    const { next, changed } = step(s, reason === undefined);
    s = next;
    const due = s.health === 'failed' && Date.now() - lastWrite > reassert;
    if (changed || due) {
      const mode = gateFor(s.health, o.policy);
      try {
        await o.writeGate(mode);
        lastWrite = Date.now();
        if (changed) o.onHealth?.(changed);
        if (changed)
          o.log.info(
            { health: s.health, gate: mode, reason: changed === 'failed' ? lastReason : undefined },
            'proxy health changed',
          );
      } catch (e) {
        // Leave the streak so the next tick retries the write.
        s = { ...s, health: 'unknown' };
        o.log.error({ err: errorMessage(e) }, 'could not write the gate chain');
      }
    }
    const wait = Math.max(0, interval - (Date.now() - started));
    await sleep(wait, undefined, { signal: o.signal }).catch(() => undefined); // aborted: loop ends
  }
  o.log.info('watchdog stopped');
}
