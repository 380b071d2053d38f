// Messages between the primary and its workers (cluster IPC). Small and closed on purpose.
/** ready: listening; `cpus` is the CPU list the worker verified it is pinned to (when pinned). */
export type ToPrimary = { t: 'ready'; cpus?: string };
export type ToWorker = { t: 'drain' };

export const isToPrimary = (m: unknown): m is ToPrimary =>
  typeof m === 'object' && m !== null && (m as ToPrimary).t === 'ready';

export function toPrimary(m: ToPrimary): void {
  process.send?.(m);
}
