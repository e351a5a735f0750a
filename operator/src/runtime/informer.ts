import * as k8s from '@kubernetes/client-node';

export interface Meta {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> };
}

export interface InformerOptions<T extends Meta> {
  kc: k8s.KubeConfig;
  /** API path of the collection, e.g. `/api/v1/pods` or `/apis/aethex.dev/v1alpha1/gameworlds`. */
  path: string;
  list: () => Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>;
  labelSelector?: string;
  /** Called for every object added, changed or deleted, and for every object at each resync. */
  onChange: (obj: T, deleted: boolean) => void;
  onError?: (err: unknown) => void;
  /** Re-deliver every cached object this often (level-triggered safety net). */
  resyncMs: number;
  /** Watches ask the server to end them after this long (a watch that outlives it is stalled). */
  watchTimeoutS?: number;
  random?: () => number;
}

const key = (o: Meta) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

/**
 * List-then-watch cache of one kind. Relists on 410 Gone (and on any other watch failure, after a
 * backoff), asks for bookmarks, gives every watch a server-side timeout and aborts one that
 * overstays it by 30 s (a stalled watch), and resyncs periodically.
 */
export class Informer<T extends Meta> {
  private readonly cache = new Map<string, T>();
  private resourceVersion = '';
  private request: AbortController | undefined;
  private stalledTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private failures = 0;
  private synced = false;
  /** Resolves once the first list has been delivered. */
  readonly ready: Promise<void>;
  private markReady!: () => void;
  restarts = 0;

  constructor(private readonly o: InformerOptions<T>) {
    this.ready = new Promise((r) => {
      this.markReady = r;
    });
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  start(): void {
    this.stopped = false;
    this.resyncTimer = setInterval(() => {
      for (const obj of this.cache.values()) this.o.onChange(obj, false);
    }, this.o.resyncMs);
    this.resyncTimer.unref();
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    clearTimeout(this.stalledTimer);
    this.request?.abort();
  }

  private async relist(): Promise<void> {
    const list = await this.o.list();
    const seen = new Set<string>();
    for (const obj of list.items) {
      seen.add(key(obj));
      this.cache.set(key(obj), obj);
      this.o.onChange(obj, false);
    }
    for (const [k, obj] of this.cache) {
      if (!seen.has(k)) {
        this.cache.delete(k);
        this.o.onChange(obj, true);
      }
    }
    this.resourceVersion = list.metadata?.resourceVersion ?? '';
    if (!this.synced) {
      this.synced = true;
      this.markReady();
    }
  }

  private async loop(): Promise<void> {
    if (this.stopped) return;
    try {
      if (this.resourceVersion === '') await this.relist();
      await this.watch();
      this.failures = 0;
    } catch (err) {
      this.failures++;
      this.o.onError?.(err);
      const wait = Math.min(30_000, 250 * 2 ** Math.min(this.failures, 7)) * (0.8 + 0.4 * (this.o.random ?? Math.random)());
      await new Promise((r) => setTimeout(r, wait).unref());
    }
    this.restarts++;
    void this.loop();
  }

  // One watch, from the last resourceVersion; resolves when it ends for any reason.
  private watch(): Promise<void> {
    const timeoutS = this.o.watchTimeoutS ?? Math.round(240 + 120 * (this.o.random ?? Math.random)());
    return new Promise<void>((resolve, reject) => {
      let gone = false;
      const params: Record<string, string | number | boolean> = {
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: timeoutS,
      };
      if (this.o.labelSelector) params.labelSelector = this.o.labelSelector;
      new k8s.Watch(this.o.kc)
        .watch(
          this.o.path,
          params,
          (phase, obj: T & { code?: number }) => {
            if (phase === 'ERROR') {
              if (obj.code === 410) {
                gone = true;
                this.resourceVersion = '';
              }
              return;
            }
            if (obj.metadata?.resourceVersion) this.resourceVersion = obj.metadata.resourceVersion;
            if (phase === 'BOOKMARK') return;
            if (phase === 'DELETED') this.cache.delete(key(obj));
            else this.cache.set(key(obj), obj);
            this.o.onChange(obj, phase === 'DELETED');
          },
          (err: unknown) => {
            clearTimeout(this.stalledTimer);
            this.request = undefined;
            const status = (err as { statusCode?: number; code?: number } | null)?.statusCode ?? (err as { code?: number } | null)?.code;
            if (status === 410 || gone) {
              this.resourceVersion = '';
              resolve();
            } else if (err && !this.stopped) reject(err);
            else resolve();
          },
        )
        .then((controller) => {
          this.request = controller;
          clearTimeout(this.stalledTimer);
          this.stalledTimer = setTimeout(() => controller.abort(), (timeoutS + 30) * 1000);
          this.stalledTimer.unref();
        }, reject);
    });
  }
}
