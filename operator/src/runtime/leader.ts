import * as k8s from '@kubernetes/client-node';
import { microTime } from '../kube/client.js';

export interface LeaderOptions {
  kc: k8s.KubeConfig;
  namespace: string;
  name: string;
  identity: string;
  /** How long a lease holds without renewal (s). */
  leaseDurationS: number;
  /** How often the holder renews, and a candidate retries (ms). */
  retryMs: number;
  now?: () => Date;
}

/**
 * Lease-based leader election (coordination.k8s.io/v1). Every update of the Lease carries the
 * resourceVersion it read, so two candidates can never both win. The leader renews every
 * `retryMs`; if it cannot renew before its lease would expire it calls `onLost` — the operator
 * exits then, because a process that was paused past its lease must not keep acting. A leader
 * whose own clock says its lease ran out since it last renewed (it was paused, or its renewals
 * were late) calls `onLost` before it touches the Lease again: another replica may have led and
 * stopped meanwhile, leaving the Lease free to take, and what this one still holds from before
 * the pause is stale (as client-go's elector stops leading past its renew deadline).
 */
export class LeaderElector {
  private readonly api: k8s.CoordinationV1Api;
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private lastRenew = 0;
  private stopped = false;

  constructor(private readonly o: LeaderOptions) {
    this.api = o.kc.makeApiClient(k8s.CoordinationV1Api);
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  /** Resolves when this process holds the lease; then keeps renewing until stopped or lost. */
  run(onLost: () => void): Promise<void> {
    return new Promise((resolve) => {
      const tick = async () => {
        if (this.stopped) return;
        if (this.lapsed()) return lose();
        try {
          // The lease runs from the renewal's time (its renewTime), not from the answer's.
          const at = this.now().getTime();
          const held = await this.tryAcquireOrRenew();
          if (held) {
            this.lastRenew = at;
            if (!this.leading) {
              this.leading = true;
              resolve();
            }
          } else if (this.leading) return lose();
        } catch {
          // fall through: checked below
        }
        if (this.lapsed()) return lose();
        this.timer = setTimeout(tick, this.o.retryMs);
      };
      const lose = () => {
        this.leading = false;
        onLost();
      };
      void tick();
    });
  }

  /**
   * True while this replica holds the lease by its own clock: it renewed less than a lease
   * duration minus one retry ago. A replica resumed after a pause sees false at once.
   */
  holds(): boolean {
    return this.leading && this.now().getTime() - this.lastRenew < this.o.leaseDurationS * 1000 - this.o.retryMs;
  }

  /** Leading, and the lease ran out by this replica's clock since it last renewed. */
  private lapsed(): boolean {
    return this.leading && this.now().getTime() - this.lastRenew > this.o.leaseDurationS * 1000;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.now();
    const spec = {
      holderIdentity: this.o.identity,
      leaseDurationSeconds: this.o.leaseDurationS,
      renewTime: microTime(now),
    };
    let lease: k8s.V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      try {
        await this.api.createNamespacedLease({
          namespace: this.o.namespace,
          body: { metadata: { name: this.o.name }, spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 } },
        });
        return true;
      } catch {
        return false;
      }
    }
    const holder = lease.spec?.holderIdentity;
    const renewed = lease.spec?.renewTime ? new Date(lease.spec.renewTime as unknown as string).getTime() : 0;
    const expired = renewed + (lease.spec?.leaseDurationSeconds ?? this.o.leaseDurationS) * 1000 < now.getTime();
    if (holder && holder !== this.o.identity && !expired) return false;
    const takeover = holder !== this.o.identity;
    try {
      await this.api.replaceNamespacedLease({
        name: this.o.name,
        namespace: this.o.namespace,
        body: {
          metadata: { name: this.o.name, resourceVersion: lease.metadata?.resourceVersion },
          spec: {
            ...spec,
            acquireTime: takeover ? microTime(now) : lease.spec?.acquireTime,
            leaseTransitions: (lease.spec?.leaseTransitions ?? 0) + (takeover ? 1 : 0),
          },
        },
      });
      return true;
    } catch (err) {
      // A conflict means someone else wrote the Lease first: not ours. Anything else (timeout,
      // 5xx, a brief RBAC hiccup) says nothing about who holds it; the caller keeps leading until
      // its own clock says the lease ran out, and the next read settles it.
      if ((err as { code?: number }).code === 409) return false;
      throw err;
    }
  }
}
