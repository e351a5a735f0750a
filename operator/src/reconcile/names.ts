/** Names of a world's children, derived only from the world's name: the same input always gives the same name. */

/** The shard pod `<world>-<instance>-<shard>` (also the shard's name in the shard map and its hostname). */
export const podName = (world: string, instance: number, shard: number): string => `${world}-${instance}-${shard}`;
/** The per-world ConfigMap with the world configuration and the shard map. */
export const configMapName = (world: string): string => `${world}-world`;
/** The headless Service giving every shard pod a DNS name. */
export const serviceName = (world: string): string => `${world}-shards`;
/** The PodDisruptionBudget of the world's shard pods. */
export const pdbName = (world: string): string => `${world}-shards`;
/** A shard's address inside the cluster: `<pod>.<service>.<namespace>.svc:<port>`. */
export const shardAddress = (world: string, namespace: string, instance: number, shard: number, port: number): string =>
  `${podName(world, instance, shard)}.${serviceName(world)}.${namespace}.svc:${port}`;
