import * as k8s from '@kubernetes/client-node';
import {
  FIELD_MANAGER,
  GAMEWORLD_GROUP,
  GAMEWORLD_PLURAL,
  GAMEWORLD_VERSION,
  type GameWorld,
  type GameWorldStatus,
  LABELS,
} from '../api/gameworld.js';
import type { Manifest } from '../reconcile/desired.js';

/** Verbs the operator counts: reads and writes it issued to the API server. */
export type Verb = 'get' | 'list' | 'create' | 'apply' | 'patch' | 'delete';

/**
 * A MicroTime as the API server parses it (RFC 3339 with six fractional digits); client-node's
 * serializer would send a Date with three, which the server refuses.
 */
export function microTime(d: Date): k8s.V1MicroTime {
  return d.toISOString().replace(/Z$/, '000Z') as unknown as k8s.V1MicroTime;
}

/** An error from the API server with its HTTP status (0 when the request never got an answer). */
export class KubeError extends Error {
  constructor(
    readonly status: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KubeError';
  }
}

function wrap(what: string, err: unknown): KubeError {
  const e = err as { code?: number; body?: unknown };
  let detail = '';
  try {
    detail = typeof e.body === 'string' ? ((JSON.parse(e.body) as { message?: string }).message ?? e.body) : '';
  } catch {
    detail = String(e.body);
  }
  return new KubeError(typeof e.code === 'number' ? e.code : 0, `${what}: ${detail || (err as Error).message}`, { cause: err });
}

/**
 * The operator's only door to the Kubernetes API: the few calls reconciling needs. Every write
 * that changes an existing object carries a precondition (resourceVersion or uid), so a stale
 * leader's write is refused (409) instead of overwriting a newer state. `requests` counts calls.
 */
export class KubeClient {
  readonly requests: Record<Verb, number> = { get: 0, list: 0, create: 0, apply: 0, patch: 0, delete: 0 };
  private readonly objects: k8s.KubernetesObjectApi;
  private readonly custom: k8s.CustomObjectsApi;
  private readonly core: k8s.CoreV1Api;
  private readonly events: k8s.EventsV1Api;

  /**
   * `mayWrite` is asked before every write; false refuses it (a leader that may have lost its lease,
   * e.g. after being paused, must not act on what it read before).
   */
  constructor(
    readonly kc: k8s.KubeConfig,
    private readonly mayWrite: () => boolean = () => true,
  ) {
    this.objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.events = kc.makeApiClient(k8s.EventsV1Api);
  }

  private guard(): void {
    if (!this.mayWrite()) throw new KubeError(0, 'refusing to write: this replica does not hold the lease');
  }

  /** Writes issued so far (everything but get and list). */
  get writes(): number {
    return this.requests.create + this.requests.apply + this.requests.patch + this.requests.delete;
  }

  async getWorld(namespace: string, name: string): Promise<GameWorld | undefined> {
    this.requests.get++;
    try {
      return (await this.custom.getNamespacedCustomObject({
        group: GAMEWORLD_GROUP,
        version: GAMEWORLD_VERSION,
        namespace,
        plural: GAMEWORLD_PLURAL,
        name,
      })) as GameWorld;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw wrap(`get GameWorld ${namespace}/${name}`, err);
    }
  }

  async listWorlds(namespace: string): Promise<{ items: GameWorld[]; metadata?: { resourceVersion?: string } }> {
    this.requests.list++;
    const base = { group: GAMEWORLD_GROUP, version: GAMEWORLD_VERSION, plural: GAMEWORLD_PLURAL };
    try {
      return (
        namespace ? await this.custom.listNamespacedCustomObject({ ...base, namespace }) : await this.custom.listClusterCustomObject(base)
      ) as {
        items: GameWorld[];
        metadata?: { resourceVersion?: string };
      };
    } catch (err) {
      throw wrap('list GameWorlds', err);
    }
  }

  async listManagedPods(namespace: string): Promise<k8s.V1PodList> {
    this.requests.list++;
    const labelSelector = `${LABELS.managedBy}=aethex-operator`;
    try {
      return namespace
        ? await this.core.listNamespacedPod({ namespace, labelSelector })
        : await this.core.listPodForAllNamespaces({ labelSelector });
    } catch (err) {
      throw wrap('list pods', err);
    }
  }

  async listShardPods(namespace: string, world: string): Promise<k8s.V1Pod[]> {
    this.requests.list++;
    try {
      return (await this.core.listNamespacedPod({ namespace, labelSelector: `${LABELS.world}=${world}` })).items;
    } catch (err) {
      throw wrap(`list pods of ${namespace}/${world}`, err);
    }
  }

  /** Reads a child's annotations, resourceVersion, owners' uids and (a ConfigMap's) data, or undefined if it does not exist. */
  async observe(
    m: Manifest,
  ): Promise<
    { annotations: Record<string, string>; resourceVersion?: string; owners: string[]; data?: Record<string, string> } | undefined
  > {
    this.requests.get++;
    try {
      const got = await this.objects.read({
        apiVersion: m.apiVersion,
        kind: m.kind,
        metadata: { name: m.metadata.name, namespace: m.metadata.namespace },
      });
      const data = (got as { data?: Record<string, string> }).data;
      return {
        annotations: got.metadata?.annotations ?? {},
        resourceVersion: got.metadata?.resourceVersion,
        owners: (got.metadata?.ownerReferences ?? []).map((o) => o.uid),
        ...(data ? { data } : {}),
      };
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw wrap(`read ${m.kind} ${m.metadata.name}`, err);
    }
  }

  /** Server-side apply under the operator's field manager; give `metadata.resourceVersion` to apply only over that version. */
  async apply(m: Manifest): Promise<void> {
    this.guard();
    this.requests.apply++;
    try {
      await this.objects.patch(m as k8s.KubernetesObject, undefined, undefined, FIELD_MANAGER, true, k8s.PatchStrategy.ServerSideApply);
    } catch (err) {
      throw wrap(`apply ${m.kind} ${m.metadata.name}`, err);
    }
  }

  /** Creates an object; an existing one with the same name is a 409 KubeError. */
  async create(m: Manifest): Promise<void> {
    this.guard();
    this.requests.create++;
    try {
      await this.objects.create(m as k8s.KubernetesObject, undefined, undefined, FIELD_MANAGER);
    } catch (err) {
      throw wrap(`create ${m.kind} ${m.metadata.name}`, err);
    }
  }

  /** Deletes a pod only if it is still the one observed (uid and resourceVersion preconditions). */
  async deletePod(namespace: string, name: string, uid: string, resourceVersion: string): Promise<void> {
    this.guard();
    this.requests.delete++;
    try {
      await this.core.deleteNamespacedPod({ name, namespace, body: { preconditions: { uid, resourceVersion } } });
    } catch (err) {
      if ((err as { code?: number }).code === 404) return;
      throw wrap(`delete pod ${name}`, err);
    }
  }

  /** Replaces the world's status, refused if the world changed since `resourceVersion`. */
  async patchStatus(world: GameWorld, status: GameWorldStatus): Promise<void> {
    this.guard();
    this.requests.patch++;
    try {
      await this.custom.patchNamespacedCustomObjectStatus(
        {
          group: GAMEWORLD_GROUP,
          version: GAMEWORLD_VERSION,
          namespace: world.metadata.namespace,
          plural: GAMEWORLD_PLURAL,
          name: world.metadata.name,
          body: { metadata: { resourceVersion: world.metadata.resourceVersion }, status },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    } catch (err) {
      throw wrap(`patch status of ${world.metadata.name}`, err);
    }
  }

  /** Sets the world's finalizers, refused if the world changed since it was read. */
  async setFinalizers(world: GameWorld, finalizers: string[]): Promise<void> {
    this.guard();
    this.requests.patch++;
    try {
      await this.custom.patchNamespacedCustomObject(
        {
          group: GAMEWORLD_GROUP,
          version: GAMEWORLD_VERSION,
          namespace: world.metadata.namespace,
          plural: GAMEWORLD_PLURAL,
          name: world.metadata.name,
          body: { metadata: { resourceVersion: world.metadata.resourceVersion, finalizers } },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    } catch (err) {
      throw wrap(`set finalizers of ${world.metadata.name}`, err);
    }
  }

  /** Records a Kubernetes Event on the world (best effort: an event lost is not an error). */
  async event(world: GameWorld, type: 'Normal' | 'Warning', reason: string, note: string, now: Date): Promise<void> {
    this.requests.create++;
    await this.events
      .createNamespacedEvent({
        namespace: world.metadata.namespace,
        body: {
          // A trailing dash: the API server refuses a generateName ending in a dot (422), and did for every Event.
          metadata: { generateName: `${world.metadata.name}-` },
          eventTime: microTime(now),
          reportingController: 'aethex.dev/operator',
          reportingInstance: 'aethex-operator',
          action: 'Reconcile',
          type,
          reason,
          note: note.slice(0, 1024),
          regarding: {
            apiVersion: world.apiVersion,
            kind: world.kind,
            name: world.metadata.name,
            namespace: world.metadata.namespace,
            uid: world.metadata.uid,
          },
        },
      })
      .catch(() => undefined);
  }
}
