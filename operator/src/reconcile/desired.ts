import { createHash } from 'node:crypto';
import { type Region, regions } from '@aethex/runtime';
import { GAMEWORLD_API_VERSION, GAMEWORLD_KIND, type GameWorld, type GameWorldSpec, LABELS, TEMPLATE_HASH } from '../api/gameworld.js';
import { configMapName, linksSecretName, pdbName, podName, STATE_MOUNT, serviceName, shardAddress, WORLD_MOUNT } from './names.js';

/** Ports of the shard container. */
export const GAME_PORT = 7777;
export const OPS_PORT = 7350;
/** A shard pod's grace period: its drain (final snapshot, outbox) has this long after SIGTERM. */
export const SHARD_GRACE_PERIOD_S = 30;

/** A Kubernetes object as plain data (what server-side apply takes). */
export type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
};

export interface DesiredPod {
  name: string;
  instance: number;
  shard: number;
  /** Hash of everything that shapes the pod; differs ⇒ the pod is outdated and rolls. */
  hash: string;
  manifest: Manifest;
}

/** Stable short hash of JSON-able data (keys sorted). */
export function hashOf(value: unknown): string {
  const canonical = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canonical)
      : v !== null && typeof v === 'object'
        ? Object.fromEntries(
            Object.keys(v as object)
              .sort()
              .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
          )
        : v;
  return createHash('sha256')
    .update(JSON.stringify(canonical(value)))
    .digest('hex')
    .slice(0, 16);
}

/**
 * Which instance indexes should exist, given `want` and what exists now. Level-triggered and
 * stable: every allocated instance stays (even past `want` — a live match is never removed), then
 * existing instances in ascending order, then the lowest free indexes, until there are `want`.
 */
export function selectInstances(want: number, existing: Iterable<number>, allocated: Iterable<number>): number[] {
  const keep = new Set(allocated);
  for (const i of [...new Set(existing)].sort((a, b) => a - b)) {
    if (keep.size >= want) break;
    keep.add(i);
  }
  for (let i = 0; keep.size < want; i++) keep.add(i);
  return [...keep].sort((a, b) => a - b);
}

export function worldLabels(world: GameWorld): Record<string, string> {
  return {
    [LABELS.world]: world.metadata.name,
    [LABELS.name]: 'aethex-shard',
    [LABELS.partOf]: 'aethex',
    [LABELS.managedBy]: 'aethex-operator',
  };
}

/** The label selector of a world's shard pods (status.selector, for the scale subresource). */
export function worldSelector(world: GameWorld): string {
  return `${LABELS.world}=${world.metadata.name}`;
}

function ownerRef(world: GameWorld) {
  return [
    {
      apiVersion: GAMEWORLD_API_VERSION,
      kind: GAMEWORLD_KIND,
      name: world.metadata.name,
      uid: world.metadata.uid,
      controller: true,
      blockOwnerDeletion: true,
    },
  ];
}

/**
 * The engine settings a world's spec gives each of its shards, by variable without the
 * `AETHEX_GAMESERVER_` prefix (part of shardEnv, in its order).
 */
export function engineEnv(s: GameWorldSpec): Record<string, string> {
  const b = s.world.bounds;
  return {
    // The whole world: the shard takes its own region from the shard map.
    ENGINE_WORLD_BOUNDS: `${b.minX},${b.minY},${b.maxX},${b.maxY}`,
    ENGINE_TICK_RATE_MS: String(Math.max(5, Math.round(1000 / s.world.tickRate))),
    ENGINE_AOI_RADIUS: String(s.world.aoiRadius),
    ENGINE_MAX_SPEED: String(s.world.maxSpeed),
    ENGINE_MAX_ENTITIES: String(s.capacity.entitiesPerShard),
    ENGINE_MAX_PLAYERS: String(s.capacity.playersPerShard),
  };
}

/**
 * The field of the world each variable of shardEnv (without the `AETHEX_GAMESERVER_` prefix) is
 * made from, for messages naming what to change; the others are the operator's own (listen
 * addresses, the shard map file).
 */
export const SHARD_ENV_FIELDS: Readonly<Record<string, string>> = {
  SHARD_NAMESPACE: 'metadata.namespace',
  SHARD_WORLD: 'metadata.name',
  SHARD_WORLD_CREATED_S: 'metadata.creationTimestamp',
  SHARD_INSTANCE: 'spec.instances',
  SHARD_NAME: 'metadata.name',
  ENGINE_WORLD_BOUNDS: 'spec.world.bounds',
  ENGINE_TICK_RATE_MS: 'spec.world.tickRate',
  ENGINE_AOI_RADIUS: 'spec.world.aoiRadius',
  ENGINE_MAX_SPEED: 'spec.world.maxSpeed',
  ENGINE_MAX_ENTITIES: 'spec.capacity.entitiesPerShard',
  ENGINE_MAX_PLAYERS: 'spec.capacity.playersPerShard',
  PERSISTENCE_SNAPSHOT_INTERVAL_MS: 'spec.persistence.snapshotIntervalSeconds',
  GATEWAY_MAX_MESSAGES_PER_SECOND: 'spec.world.tickRate',
};

/** The shard's settings as the gameserver reads them (`AETHEX_GAMESERVER_*`). */
export function shardEnv(world: GameWorld, instance: number, region: Region): { name: string; value: string }[] {
  const s = world.spec;
  const env: Record<string, string> = {
    // Everything the shard stores is keyed by namespace and world: same-named worlds stay apart.
    SHARD_NAMESPACE: world.metadata.namespace,
    SHARD_WORLD: world.metadata.name,
    // Rows from before namespaces are taken over only if written since (a deleted world's are not).
    SHARD_WORLD_CREATED_S: String(Math.floor(Date.parse(world.metadata.creationTimestamp ?? '') / 1000) || 0),
    SHARD_INSTANCE: String(instance),
    SHARD_NAME: podName(world.metadata.name, instance, region.shard),
    ...engineEnv(s),
    GATEWAY_BIND_ADDR: `0.0.0.0:${GAME_PORT}`,
    OPS_BIND_ADDR: `0.0.0.0:${OPS_PORT}`,
    PERSISTENCE_SNAPSHOT_INTERVAL_MS: String(s.persistence.snapshotIntervalSeconds * 1000),
  };
  if (isSharded(world)) env.SHARD_MAP_FILE = `${WORLD_MOUNT}/shard-map.json`;
  // A moving player sends an input a tick: past 80 Hz the shard's default rate (120 a second, with
  // room for acknowledgements, pings and calls) would kick players for playing, so a fast world
  // gets 3 × its tick rate. Other worlds are left alone: their pods do not roll for it.
  const hz = 1000 / Number(env.ENGINE_TICK_RATE_MS);
  if (1.5 * hz > 120) env.GATEWAY_MAX_MESSAGES_PER_SECOND = String(Math.ceil(3 * hz));
  return Object.entries(env).map(([k, value]) => ({ name: `AETHEX_GAMESERVER_${k}`, value }));
}

/** Whether the world has more than one shard per instance (and so shard links and a link secret). */
export function isSharded(world: GameWorld): boolean {
  return world.spec.sharding.columns * world.spec.sharding.rows > 1;
}

/** The variable that gives a shard its link secret, read from the world's Secret. */
export const LINKS_SECRET_ENV = 'AETHEX_GAMESERVER_LINKS_SECRET';

/**
 * The world's link Secret, created once with a random value and never rewritten (a new value
 * would cut every link of a running world). Owned by the world, so it goes with it.
 */
export function linksSecret(world: GameWorld, value: string): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: linksSecretName(world.metadata.name),
      namespace: world.metadata.namespace,
      labels: worldLabels(world),
      ownerReferences: ownerRef(world),
    },
    type: 'Opaque',
    stringData: { secret: value },
  } as Manifest;
}

/**
 * Whether the world's shards keep their snapshots in the pod: `template.env` names no PostgreSQL.
 * The pod's root filesystem is read-only, so they get an emptyDir for them — it survives a crashed
 * container (restarted in its pod, it restores), not the pod (a rolling update, a lost node, a
 * deletion start the shard empty). A world with PostgreSQL gets neither: its pods are as before.
 */
export function keepsStateInPod(s: GameWorldSpec): boolean {
  return !(s.template.env ?? []).some((e) => e.name === 'AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL');
}

/**
 * A shard pod's container env: the operator's settings (shardEnv), a sharded world's link secret,
 * the snapshot directory of a world without PostgreSQL, then `template.env` as it is (where, as in
 * any pod, the last entry of a variable wins).
 */
export function podEnv(world: GameWorld, instance: number, region: Region): { name: string; value?: string; valueFrom?: unknown }[] {
  const s = world.spec;
  return [
    ...shardEnv(world, instance, region),
    ...(isSharded(world)
      ? [{ name: LINKS_SECRET_ENV, valueFrom: { secretKeyRef: { name: linksSecretName(world.metadata.name), key: 'secret' } } }]
      : []),
    ...(keepsStateInPod(s) ? [{ name: 'AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY', value: `${STATE_MOUNT}/snapshots` }] : []),
    ...(s.template.env ?? []),
  ];
}

/** Every shard pod the world should have for the given instance indexes. */
export function desiredPods(world: GameWorld, instances: number[]): DesiredPod[] {
  const s = world.spec;
  const ns = world.metadata.namespace;
  const inPod = keepsStateInPod(s);
  const grid = regions(s.world.bounds, s.sharding.columns, s.sharding.rows);
  const out: DesiredPod[] = [];
  for (const instance of instances) {
    for (const region of grid) {
      const name = podName(world.metadata.name, instance, region.shard);
      const spec = {
        hostname: name,
        subdomain: serviceName(world.metadata.name),
        enableServiceLinks: false,
        automountServiceAccountToken: false,
        terminationGracePeriodSeconds: SHARD_GRACE_PERIOD_S,
        securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [
          {
            name: 'shard',
            image: s.image,
            env: podEnv(world, instance, region),
            ports: [
              { name: 'game', containerPort: GAME_PORT, protocol: 'TCP' },
              { name: 'ops', containerPort: OPS_PORT, protocol: 'TCP' },
            ],
            readinessProbe: { httpGet: { path: '/readyz', port: 'ops' }, periodSeconds: 2, failureThreshold: 2 },
            livenessProbe: { httpGet: { path: '/healthz', port: 'ops' }, periodSeconds: 10, failureThreshold: 3 },
            ...(s.template.resources ? { resources: s.template.resources } : {}),
            securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
            volumeMounts: [
              { name: 'world', mountPath: WORLD_MOUNT, readOnly: true },
              ...(inPod ? [{ name: 'state', mountPath: STATE_MOUNT }] : []),
            ],
          },
        ],
        volumes: [
          { name: 'world', configMap: { name: configMapName(world.metadata.name) } },
          ...(inPod ? [{ name: 'state', emptyDir: {} }] : []),
        ],
        ...(s.template.nodeSelector ? { nodeSelector: s.template.nodeSelector } : {}),
        ...(s.template.tolerations ? { tolerations: s.template.tolerations } : {}),
      };
      const labels = { ...worldLabels(world), [LABELS.instance]: String(instance), [LABELS.shard]: String(region.shard) };
      const hash = hashOf({ spec, labels });
      out.push({
        name,
        instance,
        shard: region.shard,
        hash,
        manifest: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name, namespace: ns, labels, annotations: { [TEMPLATE_HASH]: hash }, ownerReferences: ownerRef(world) },
          spec,
        },
      });
    }
  }
  return out;
}

/** The shard map the sharding layer reads: every shard's region, neighbours and address, per instance. */
export function shardMap(world: GameWorld, instances: number[]) {
  const s = world.spec;
  const grid = regions(s.world.bounds, s.sharding.columns, s.sharding.rows);
  return {
    world: world.metadata.name,
    bounds: s.world.bounds,
    columns: s.sharding.columns,
    rows: s.sharding.rows,
    instances: instances.map((instance) => ({
      instance,
      shards: grid.map((r) => ({
        shard: r.shard,
        name: podName(world.metadata.name, instance, r.shard),
        region: r.bounds,
        neighbours: r.neighbours,
        address: shardAddress(world.metadata.name, world.metadata.namespace, instance, r.shard, GAME_PORT),
      })),
    })),
  };
}

/** The world's other children: ConfigMap (world config + shard map), headless Service, PodDisruptionBudget. */
export function desiredSupport(world: GameWorld, instances: number[]): Manifest[] {
  const ns = world.metadata.namespace;
  const name = world.metadata.name;
  const labels = worldLabels(world);
  const meta = (n: string) => ({ name: n, namespace: ns, labels, ownerReferences: ownerRef(world) });
  return [
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: meta(configMapName(name)),
      data: {
        'world.json': JSON.stringify({ name, spec: world.spec }, null, 2),
        'shard-map.json': JSON.stringify(shardMap(world, instances), null, 2),
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(serviceName(name)),
      spec: {
        clusterIP: 'None',
        publishNotReadyAddresses: true,
        selector: { [LABELS.world]: name },
        ports: [
          { name: 'game', port: GAME_PORT, targetPort: 'game', protocol: 'TCP' },
          { name: 'ops', port: OPS_PORT, targetPort: 'ops', protocol: 'TCP' },
        ],
      },
    },
    {
      apiVersion: 'policy/v1',
      kind: 'PodDisruptionBudget',
      metadata: meta(pdbName(name)),
      spec: { maxUnavailable: world.spec.updateStrategy.maxUnavailable, selector: { matchLabels: { [LABELS.world]: name } } },
    },
  ];
}
