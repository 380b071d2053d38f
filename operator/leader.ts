// Leader election with a coordination.k8s.io/v1 Lease (docs/adr/0004). Every replica keeps its
// caches warm; only the holder of the lease reconciles. Expiry is judged on the local clock from
// when this replica last saw the record change (like client-go), so clock skew between nodes does
// not matter. Writes are optimistic (resourceVersion); a 409 just means "someone else won".
import type { Logger } from 'pino';
import { ApiError, type KubeClient, type KubeObject } from '../kube/client.ts';
import { errorMessage } from '../api/errors.ts';

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSec?: number;
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

  constructor(
    private readonly client: KubeClient,
    private readonly o: LeaderOptions,
    private readonly log: Logger,
  ) {}

  get isLeader(): boolean {
    return this.leading;
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
      if (ok && !this.leading) {
        this.leading = true;
        this.log.info({ identity: this.o.identity }, 'became leader');
        this.o.onStartedLeading();
      }
      if (!ok && this.leading && this.renewalExpired()) {
        this.leading = false;
        this.log.error('lost the leader lease');
        this.o.onStoppedLeading();
        return;
      }
      if (!this.stopped)
        this.timer = setTimeout(tick, this.o.renewEveryMs ?? Math.min(2000, (this.duration() * 1000) / 3));
    };
    void tick();
  }

  /** Stops renewing and, when leading, releases the lease so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (!this.leading) return;
    const lease = await this.client.get<Lease>(this.path).catch(() => undefined);
    if (lease?.spec?.holderIdentity === this.o.identity) {
      await this.client
        .request('PUT', this.path, {
          body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 } },
        })
        .catch(() => undefined);
    }
    this.leading = false;
  }

  private duration(): number {
    return this.o.leaseDurationSec ?? 15;
  }

  /** While leading, the lease counts as lost only once our own last renewal has expired. */
  private lastRenewed = 0;
  private renewalExpired(): boolean {
    return Date.now() - this.lastRenewed > this.duration() * 1000;
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    const mine = { holderIdentity: this.o.identity, leaseDurationSeconds: this.duration(), renewTime: microTime(now) };
    const lease = await this.client.get<Lease>(this.path);
    if (!lease) {
      await this.write('POST', this.path.replace(/\/[^/]+$/, ''), {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: this.o.name, namespace: this.o.namespace },
        spec: { ...mine, acquireTime: microTime(now), leaseTransitions: 0 },
      });
      return this.renewed();
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
    return this.renewed();
  }

  private renewed(): boolean {
    this.lastRenewed = Date.now();
    return true;
  }

  private async write(method: 'POST' | 'PUT', path: string, body: unknown): Promise<void> {
    try {
      await this.client.request(method, path, { body });
    } catch (e) {
      if (e instanceof ApiError && (e.status === 409 || e.status === 422))
        throw new Error('lost the race for the lease', { cause: e });
      throw e;
    }
  }
}
