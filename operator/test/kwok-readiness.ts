import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';

// Stands in for the kubelet's readiness reports in one namespace, for tests that run longer than
// a minute on the test environment's kwok nodes.
//
// Why: kwok posts its nodes' status about every 58 s and keeps no node Lease, while the
// controller-manager's node monitor gives a node 50 s (`--node-monitor-grace-period`). So every
// minute each kwok node turns NotReady for a few seconds, the node lifecycle controller marks
// every pod on it `Ready=False` ("Controller detected that all Nodes are not-Ready" in
// kube-controller-manager.log), and nothing marks them ready again: a real kubelet would report
// its probes again, kwok readies a pod only once (its pod-ready stage needs a pod without an IP).
// A world whose pods were ready a minute ago would stay `Ready=False` for ever.
//
// This watch puts `Ready=True` back on a pod that kwok had readied (it has an IP, phase Running)
// and that is not being deleted — what the kubelet would do for a healthy shard. The pods still
// flip to not ready for a moment every minute, which the operator sees as a fault like any other.
// Once the test environment gives kwok node leases (`--node-lease-duration-seconds`) or the
// controller-manager a longer grace period, this is a no-op and can go.

export class KwokReadiness {
  /** Pods put back to ready. */
  restored = 0;
  /** When each was (Date.now()). */
  readonly restoredAt: number[] = [];
  private stopped = false;
  private abort: AbortController | undefined;
  private rv = '';
  private readonly core: k8s.CoreV1Api;
  private readonly inFlight = new Set<string>();

  constructor(
    private readonly kc: k8s.KubeConfig,
    private readonly ns: string,
  ) {
    this.core = kc.makeApiClient(k8s.CoreV1Api);
  }

  async start(): Promise<void> {
    const list = await this.core.listNamespacedPod({ namespace: this.ns });
    for (const p of list.items) this.check(p);
    this.rv = list.metadata?.resourceVersion ?? '';
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const gone = await new Promise<boolean>((resolve) => {
        let expired = false;
        new k8s.Watch(this.kc)
          .watch(
            `/api/v1/namespaces/${this.ns}/pods`,
            { resourceVersion: this.rv, allowWatchBookmarks: true, timeoutSeconds: 60 },
            (phase: string, p: k8s.V1Pod & { code?: number }) => {
              if (phase === 'ERROR') {
                expired ||= p.code === 410;
                return;
              }
              if (p.metadata?.resourceVersion) this.rv = p.metadata.resourceVersion;
              if (phase === 'ADDED' || phase === 'MODIFIED') this.check(p);
            },
            () => resolve(expired),
          )
          .then(
            (a) => {
              this.abort = a;
            },
            () => resolve(false),
          );
      });
      if (this.stopped) return;
      if (gone) {
        const list = await this.core.listNamespacedPod({ namespace: this.ns }).catch(() => undefined);
        for (const p of list?.items ?? []) this.check(p);
        this.rv = list?.metadata?.resourceVersion ?? '';
      } else {
        await sleep(100);
      }
    }
  }

  private check(p: k8s.V1Pod): void {
    const name = p.metadata?.name as string;
    const ready = p.status?.conditions?.find((c) => c.type === 'Ready');
    if (this.stopped || this.inFlight.has(name) || p.metadata?.deletionTimestamp || p.status?.phase !== 'Running' || !p.status?.podIP)
      return;
    if (ready?.status !== 'False') return;
    this.inFlight.add(name);
    this.core
      .patchNamespacedPodStatus(
        {
          name,
          namespace: this.ns,
          body: {
            metadata: { uid: p.metadata?.uid },
            status: { conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: new Date() }] },
          },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch),
      )
      .then(
        () => {
          this.restored++;
          this.restoredAt.push(Date.now());
        },
        () => undefined, // gone or replaced meanwhile: nothing to restore
      )
      .finally(() => this.inFlight.delete(name));
  }
}
