// Messages between the primary and its workers (cluster IPC). Small and closed on purpose.
export type ToPrimary = { t: 'ready' };
export type ToWorker = { t: 'drain' };

export const isToPrimary = (m: unknown): m is ToPrimary =>
  typeof m === 'object' && m !== null && (m as ToPrimary).t === 'ready';

export function toPrimary(m: ToPrimary): void {
  process.send?.(m);
}
