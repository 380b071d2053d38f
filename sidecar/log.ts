// JSON logs (pino) to stdout at proxy.logLevel. One logger per process; workers add their id so
// lines from different workers can be told apart (pid is in every line too).
import { pino, type Logger } from 'pino';
import type { LOG_LEVELS } from '../api/fields.ts';

export type { Logger };
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, ...bindings },
      // Synchronous writes: a worker that exits right after its last line (drain, fatal error)
      // must not lose it, and per-connection lines exist only at debug.
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ dest: 1, sync: true }),
  );
}
