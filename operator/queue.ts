// Work queue of object keys ("namespace/name"), modelled on client-go's: a key is queued at most
// once (dirty set), is never processed by two workers at once (processing set; a key added while
// processing is requeued by done()), failures back off exponentially per key and forget() resets
// that. Delayed adds keep only the earliest deadline per key.
export interface QueueOptions {
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Called with the new depth whenever it changes (queue-depth gauge). */
  onDepth?: (depth: number) => void;
}

export class WorkQueue {
  private readonly items: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private waiters: ((key: string | undefined) => void)[] = [];
  private closed = false;

  constructor(private readonly o: QueueOptions = {}) {}

  get depth(): number {
    return this.items.length;
  }
  get isShutDown(): boolean {
    return this.closed;
  }

  add(key: string): void {
    if (this.closed || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.dirty.delete(key);
      this.processing.add(key);
      waiter(key);
      return;
    }
    this.items.push(key);
    this.o.onDepth?.(this.items.length);
  }

  addAfter(key: string, ms: number): void {
    if (this.closed) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = Date.now() + ms;
    const prev = this.delayed.get(key);
    if (prev && prev.at <= at) return;
    if (prev) clearTimeout(prev.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    timer.unref();
    this.delayed.set(key, { at, timer });
  }

  /** Requeues after base * 2^(failures so far), capped. Returns the delay used. */
  addRateLimited(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const delay = Math.min((this.o.baseDelayMs ?? 250) * 2 ** n, this.o.maxDelayMs ?? 300_000);
    this.addAfter(key, delay);
    return delay;
  }

  forget(key: string): void {
    this.failures.delete(key);
  }
  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Next key to process, or undefined once shut down. Call done(key) when finished. */
  get(): Promise<string | undefined> {
    const key = this.items.shift();
    if (key !== undefined) {
      this.dirty.delete(key);
      this.processing.add(key);
      this.o.onDepth?.(this.items.length);
      return Promise.resolve(key);
    }
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.closed) {
      this.dirty.delete(key);
      this.add(key);
    }
  }

  shutdown(): void {
    this.closed = true;
    for (const d of this.delayed.values()) clearTimeout(d.timer);
    this.delayed.clear();
    for (const w of this.waiters) w(undefined);
    this.waiters = [];
  }
}
