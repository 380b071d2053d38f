// Leader election with a coordination.k8s.io/v1 Lease (docs/adr/0004). Every replica keeps its
// caches warm; only the holder of the lease reconciles. Expiry is judged on the local clock from
// when this replica last saw the record change (like client-go), so clock skew between nodes does
// not matter. Writes are optimistic (resourceVersion); a 409 just means "someone else won".
// Fencing (issue 17): leadership ends at lastRenewal + renewDeadline (< leaseDuration), judged from
// when the renewal that succeeded was sent; a timer ends it on time even while a renewal hangs,
// and every lease request gives up after min(renewDeadline / 2, 5 s), not the client's 30 s.
// holds() is what the reconcile client checks before each write (main.ts), so a paused or
// partitioned leader writes nothing once a standby may have taken over.
import type { Logger } from 'pino';
import { ApiError, type KubeClient, type KubeObject } from '../kube/client.ts';
import { errorMessage } from '../api/errors.ts';

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSec?: number;
  /** How long after its last successful renewal a leader stops; default 2/3 of the lease duration. */
  renewDeadlineMs?: number;
  renewEveryMs?: number;
  onStartedLeading: () => void;
  /** Called once if the lease is lost; the process should exit (state may be half-written). */
  onStoppedLeading: () => void;
}

interface Lease extends KubeObject {
  spec?: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

/** MicroTime: RFC 3339 with exactly six fractional digits. */
const microTime = (d: Date) => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export class LeaderElector {
  private timer?: NodeJS.Timeout;
  private leading = false;
  private observed?: { record: string; at: number };
  private stopped = false;
  private deadline?: NodeJS.Timeout;

  constructor(
    private readonly client: KubeClient,
    private readonly o: LeaderOptions,
    private readonly log: Logger,
  ) {}

  get isLeader(): boolean {
    return this.leading;
  }
  /** Leading and within the renew deadline: this replica may write. */
  holds(): boolean {
    return this.leading && this.withinDeadline();
  }
  private withinDeadline(): boolean {
    return Date.now() < this.lastRenewed + this.renewDeadlineMs();
  }
  private get path(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.o.namespace}/leases/${this.o.name}`;
  }

  start(): void {
    const tick = async () => {
      if (this.stopped) return;
      let ok = false;
      try {
        ok = await this.tryAcquireOrRenew();
      } catch (e) {
        this.log.warn({ err: errorMessage(e) }, 'lease update failed');
      }
      if (this.stopped) return; // lost at the deadline (lose()) or stopped while this request waited
      if (!this.leading && ok && this.withinDeadline()) {
        this.leading = true;
        this.log.info({ identity: this.o.identity }, 'became leader');
        this.o.onStartedLeading();
      }
      if (this.leading && ok) this.armDeadline();
      if (this.leading && !this.holds()) return this.lose();
      if (!this.stopped)
        this.timer = setTimeout(tick, this.o.renewEveryMs ?? Math.min(2000, (this.duration() * 1000) / 3));
    };
    void tick();
  }

  /** Ends leadership at the renew deadline, even while a renewal is still waiting for an answer. */
  private armDeadline(): void {
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = setTimeout(
      () => {
        // A timer may fire a millisecond before the clock says the deadline passed: look again then.
        if (this.leading) this.holds() ? this.armDeadline() : this.lose();
      },
      Math.max(1, this.lastRenewed + this.renewDeadlineMs() - Date.now() + 1),
    );
  }

  private lose(): void {
    if (!this.leading) return;
    this.leading = false;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.deadline) clearTimeout(this.deadline);
    this.log.error(
      { renewDeadlineMs: this.renewDeadlineMs() },
      'lost the leader lease: not renewed within the deadline',
    );
    this.o.onStoppedLeading();
  }

  /** Stops renewing and, when leading, releases the lease so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.deadline) clearTimeout(this.deadline);
    if (!this.leading) return;
    const lease = await this.client
      .get<Lease>(this.path, { timeoutMs: this.requestTimeoutMs() })
      .catch(() => undefined);
    if (lease?.spec?.holderIdentity === this.o.identity) {
      await this.client
        .request('PUT', this.path, {
          body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 } },
          timeoutMs: this.requestTimeoutMs(),
        })
        .catch(() => undefined);
    }
    this.leading = false;
  }

  private duration(): number {
    return this.o.leaseDurationSec ?? 15;
  }

  /**
   * Below the lease duration: a standby takes over leaseDuration after it saw our last renewal,
   * which it cannot see before we sent it; stopping renewDeadline after sending it is therefore
   * always before that.
   */
  private renewDeadlineMs(): number {
    return Math.min(this.o.renewDeadlineMs ?? (this.duration() * 2000) / 3, this.duration() * 1000);
  }
  private requestTimeoutMs(): number {
    return Math.max(100, Math.min(this.renewDeadlineMs() / 2, 5000));
  }

  /** When the last renewal that succeeded was sent (0: never). */
  private lastRenewed = 0;

  private async tryAcquireOrRenew(): Promise<boolean> {
    const sent = Date.now();
    const now = new Date(sent);
    const mine = { holderIdentity: this.o.identity, leaseDurationSeconds: this.duration(), renewTime: microTime(now) };
    const lease = await this.client.get<Lease>(this.path, { timeoutMs: this.requestTimeoutMs() });
    if (!lease) {
      await this.write('POST', this.path.replace(/\/[^/]+$/, ''), {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: this.o.name, namespace: this.o.namespace },
        spec: { ...mine, acquireTime: microTime(now), leaseTransitions: 0 },
      });
      return this.renewed(sent);
    }
    const spec = lease.spec ?? {};
    const record = JSON.stringify(spec);
    if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
    const held = spec.holderIdentity && spec.holderIdentity !== this.o.identity;
    const expired = Date.now() - this.observed.at > (spec.leaseDurationSeconds ?? this.duration()) * 1000;
    if (held && !expired) return false;
    const takeover = spec.holderIdentity !== this.o.identity;
    const next = {
      ...lease,
      spec: {
        ...spec,
        ...mine,
        ...(takeover ? { acquireTime: microTime(now), leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
      },
    };
    await this.write('PUT', this.path, next);
    return this.renewed(sent);
  }

  private renewed(sent: number): boolean {
    this.lastRenewed = sent;
    return true;
  }

  private async write(method: 'POST' | 'PUT', path: string, body: unknown): Promise<void> {
    try {
      await this.client.request(method, path, { body, timeoutMs: this.requestTimeoutMs() });
    } catch (e) {
      if (e instanceof ApiError && (e.status === 409 || e.status === 422))
        throw new Error('lost the race for the lease', { cause: e });
      throw e;
    }
  }
}
