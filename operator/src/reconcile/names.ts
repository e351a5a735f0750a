/** Names of a world's children, derived only from the world's name: the same input always gives the same name. */

/** The shard pod `<world>-<instance>-<shard>` (also the shard's name in the shard map and its hostname). */
export const podName = (world: string, instance: number, shard: number): string => `${world}-${instance}-${shard}`;
/** The per-world ConfigMap with the world configuration and the shard map. */
export const configMapName = (world: string): string => `${world}-world`;
/** The per-world Secret with the shared secret that authenticates the links between its shards. */
export const linksSecretName = (world: string): string => `${world}-shard-links`;
/** Where a shard pod finds the world's ConfigMap (and in it `shard-map.json`). */
export const WORLD_MOUNT = '/etc/aethex';
/** Where a shard pod of a world without PostgreSQL keeps its snapshots: an emptyDir of the pod. */
export const STATE_MOUNT = '/var/lib/aethex';
/** The headless Service giving every shard pod a DNS name. */
export const serviceName = (world: string): string => `${world}-shards`;
/** The PodDisruptionBudget of the world's shard pods. */
export const pdbName = (world: string): string => `${world}-shards`;
/** A shard's address inside the cluster: `<pod>.<service>.<namespace>.svc:<port>`. */
export const shardAddress = (world: string, namespace: string, instance: number, shard: number, port: number): string =>
  `${podName(world, instance, shard)}.${serviceName(world)}.${namespace}.svc:${port}`;
