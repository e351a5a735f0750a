/** A DNS label (RFC 1123): what Kubernetes namespaces, GameWorld names and shard names are. */
export const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Which shard: a world — a GameWorld's namespace and name; the namespace is '' outside Kubernetes —
 * an instance of it, and a shard of that instance. Everything a shard stores is under this key, so
 * worlds of the same name in two namespaces never share a snapshot or an event. (Presence is keyed
 * by player id alone: a player id in both has one entry, naming the shard that refreshed it last.)
 */
export interface ShardKey {
  namespace: string;
  world: string;
  instance: number;
  shard: string;
}

/**
 * How Redis keys, locks and logs name a world: `<namespace>/<world>`, or the world alone when the
 * namespace is ''. Namespaces and world names are DNS labels, so the `/` cannot be part of either.
 */
export function worldRef(namespace: string, world: string): string {
  return namespace ? `${namespace}/${world}` : world;
}

/** A shard's relayed domain events: `aethex:events:<world ref>:<instance>:<shard>`. */
export function eventStreamKey(key: ShardKey): string {
  return `aethex:events:${worldRef(key.namespace, key.world)}:${key.instance}:${key.shard}`;
}

/** A SCAN pattern matching every event stream of one world (names are DNS labels: no glob characters). */
export function eventStreamPattern(namespace: string, world: string): string {
  return `aethex:events:${worldRef(namespace, world)}:*`;
}

/** Where a player is playing: `aethex:presence:<player>` → the ShardKey as JSON, with a TTL. */
export function presenceKey(player: string): string {
  return `aethex:presence:${player}`;
}

/** A SCAN pattern matching every presence key. */
export const PRESENCE_PATTERN = 'aethex:presence:*';
