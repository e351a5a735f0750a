/** The GameWorld API as declared by crds/gameworld.yaml. */
export const GAMEWORLD_GROUP = 'aethex.dev';
export const GAMEWORLD_VERSION = 'v1alpha1';
export const GAMEWORLD_KIND = 'GameWorld';
export const GAMEWORLD_PLURAL = 'gameworlds';
export const GAMEWORLD_API_VERSION = `${GAMEWORLD_GROUP}/${GAMEWORLD_VERSION}`;

/** Labels the operator puts on every child, and the one that protects a live match. */
export const LABELS = {
  world: 'aethex.dev/world',
  instance: 'aethex.dev/instance',
  shard: 'aethex.dev/shard',
  /** Set to `Allocated` (by the allocator) on the pods of an instance in use: never removed by scale-down or updates. */
  state: 'aethex.dev/state',
  managedBy: 'app.kubernetes.io/managed-by',
  name: 'app.kubernetes.io/name',
  partOf: 'app.kubernetes.io/part-of',
} as const;
export const ALLOCATED = 'Allocated';
/** Annotation holding the hash of everything that shapes a shard pod; a change means "roll it". */
export const TEMPLATE_HASH = 'aethex.dev/template-hash';
export const FIELD_MANAGER = 'aethex-operator';
export const FINALIZER = 'aethex.dev/cleanup';

/**
 * A GameWorld's name names its children: the headless Service `<name>-shards` (a DNS-1035 label:
 * a letter first, at most 63 characters) and the shard pods `<name>-<instance>-<shard>`, also
 * their hostnames (instances below 1000, shards below 64: 7 characters more). The CRD holds the
 * same rule (a CEL rule on metadata.name; a test keeps them in step): a name the API server would
 * take but a child could not use would fail only at the child's creation.
 */
export const WORLD_NAME = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
export const MAX_WORLD_NAME = 56;
export const WORLD_NAME_RULE = `at most ${MAX_WORLD_NAME} characters of lower-case letters, digits and '-', starting with a letter and ending with a letter or digit (it names the world's Service <name>-shards and pods <name>-<instance>-<shard>)`;

export interface Bounds {
  minX: number;
  minY: number;
  maxX: number;
  maxY: number;
}

/** A GameWorld's spec with every default applied (what the API server stores). */
export interface GameWorldSpec {
  image: string;
  world: { bounds: Bounds; tickRate: number; aoiRadius: number; maxSpeed: number };
  sharding: { columns: number; rows: number };
  instances: number;
  capacity: { playersPerShard: number; entitiesPerShard: number };
  template: {
    resources?: Record<string, unknown>;
    env?: { name: string; value?: string; valueFrom?: unknown }[];
    nodeSelector?: Record<string, string>;
    tolerations?: Record<string, unknown>[];
  };
  persistence: { snapshotIntervalSeconds: number };
  updateStrategy: { maxUnavailable: number };
}

export interface Condition {
  type: 'Ready' | 'Progressing' | 'Degraded';
  status: 'True' | 'False' | 'Unknown';
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface ShardStatus {
  name: string;
  instance: number;
  region: Bounds;
  state: 'Pending' | 'Starting' | 'Ready' | 'Allocated' | 'Terminating' | 'Failed' | 'Missing';
  address: string;
  players?: number;
}

export interface GameWorldStatus {
  observedGeneration?: number;
  selector?: string;
  shardSummary?: string;
  instances?: { desired: number; current: number; ready: number; allocated: number };
  conditions?: Condition[];
  shards?: ShardStatus[];
}

export interface GameWorld {
  apiVersion: typeof GAMEWORLD_API_VERSION;
  kind: typeof GAMEWORLD_KIND;
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    creationTimestamp?: string;
    generation?: number;
    resourceVersion?: string;
    deletionTimestamp?: string;
    finalizers?: string[];
  };
  spec: GameWorldSpec;
  status?: GameWorldStatus;
}

type Raw = Record<string, unknown> | undefined;
const obj = (v: unknown): Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

/**
 * Applies the CRD's defaults to a spec as written by a user. The API server does this for stored
 * objects; the local runtime reads files, so it needs the same defaults from here. Keep in step
 * with crds/gameworld.yaml (a test compares them).
 */
export function withDefaults(spec: Raw): GameWorldSpec {
  const s = obj(spec);
  const world = obj(s.world);
  const sharding = obj(s.sharding);
  const capacity = obj(s.capacity);
  const persistence = obj(s.persistence);
  const update = obj(s.updateStrategy);
  return {
    image: s.image as string,
    world: {
      bounds: world.bounds as Bounds,
      tickRate: (world.tickRate as number | undefined) ?? 40,
      aoiRadius: (world.aoiRadius as number | undefined) ?? 200,
      maxSpeed: (world.maxSpeed as number | undefined) ?? 5,
    },
    sharding: { columns: (sharding.columns as number | undefined) ?? 1, rows: (sharding.rows as number | undefined) ?? 1 },
    instances: (s.instances as number | undefined) ?? 1,
    capacity: {
      playersPerShard: (capacity.playersPerShard as number | undefined) ?? 500,
      entitiesPerShard: (capacity.entitiesPerShard as number | undefined) ?? 10_000,
    },
    template: obj(s.template) as GameWorldSpec['template'],
    persistence: { snapshotIntervalSeconds: (persistence.snapshotIntervalSeconds as number | undefined) ?? 5 },
    updateStrategy: { maxUnavailable: (update.maxUnavailable as number | undefined) ?? 1 },
  };
}
