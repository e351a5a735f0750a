import type * as k8s from '@kubernetes/client-node';
import { GAMEWORLD_GROUP, GAMEWORLD_PLURAL, GAMEWORLD_VERSION, type GameWorld, LABELS } from '../api/gameworld.js';
import { type KubeClient, KubeError } from '../kube/client.js';
import type { Metrics } from '../metrics.js';
import type { Reconciler } from '../reconcile/reconciler.js';
import { Informer } from './informer.js';
import { WorkQueue } from './workqueue.js';

export interface ControllerOptions {
  kc: k8s.KubeConfig;
  kube: KubeClient;
  reconciler: Reconciler;
  metrics: Metrics;
  /** Namespace to watch; '' for all. */
  namespace: string;
  workers: number;
  resyncMs: number;
  log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void; error: (o: object, m: string) => void };
}

/**
 * Informers on GameWorlds and on the operator's pods feed one keyed work queue (`namespace/name`
 * of the world); workers run the reconciler. A pod event enqueues its world, so a dead or deleted
 * shard is noticed at once, and every world is reconciled again at least every `resyncMs`.
 */
export class Controller {
  private readonly queue: WorkQueue;
  private readonly worlds: Informer<GameWorld>;
  private readonly pods: Informer<k8s.V1Pod>;

  constructor(private readonly o: ControllerOptions) {
    this.queue = new WorkQueue(
      async (key) => {
        const [ns, name] = key.split('/') as [string, string];
        const end = o.metrics.reconcileDuration.startTimer();
        try {
          const out = await o.reconciler.reconcile(ns, name);
          return out.requeueAfterMs;
        } finally {
          end();
          for (const [verb, n] of Object.entries(o.kube.requests)) o.metrics.apiRequests.set({ verb }, n);
          o.metrics.queueDepth.set(this.queue.depth);
        }
      },
      { workers: o.workers },
      (key, err, retryInMs) => {
        const reason = err instanceof KubeError ? `http_${err.status}` : 'error';
        o.metrics.errors.inc({ reason });
        o.log.warn({ world: key, err: (err as Error).message, retry_in_ms: retryInMs }, 'reconcile failed; will retry');
      },
    );
    const nsPath = o.namespace ? `/namespaces/${o.namespace}` : '';
    this.worlds = new Informer<GameWorld>({
      kc: o.kc,
      path: `/apis/${GAMEWORLD_GROUP}/${GAMEWORLD_VERSION}${nsPath}/${GAMEWORLD_PLURAL}`,
      list: () => o.kube.listWorlds(o.namespace),
      resyncMs: o.resyncMs,
      onChange: (w) => this.queue.add(`${w.metadata.namespace}/${w.metadata.name}`),
      onError: (err) => o.log.warn({ err: (err as Error).message }, 'GameWorld watch failed; relisting'),
    });
    this.pods = new Informer<k8s.V1Pod>({
      kc: o.kc,
      path: `/api/v1${nsPath}/pods`,
      labelSelector: `${LABELS.managedBy}=aethex-operator`,
      list: () => o.kube.listManagedPods(o.namespace),
      resyncMs: o.resyncMs * 10,
      onChange: (p) => {
        const world = p.metadata?.labels?.[LABELS.world];
        if (world && p.metadata?.namespace) this.queue.add(`${p.metadata.namespace}/${world}`);
      },
      onError: (err) => o.log.warn({ err: (err as Error).message }, 'pod watch failed; relisting'),
    });
  }

  async start(): Promise<void> {
    this.worlds.start();
    this.pods.start();
    await Promise.all([this.worlds.ready, this.pods.ready]);
    this.o.log.info({ worlds: this.worlds.list().length }, 'caches synced; reconciling');
  }

  stop(): void {
    this.worlds.stop();
    this.pods.stop();
    this.queue.stop();
  }
}
