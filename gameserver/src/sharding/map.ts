import { readFileSync } from 'node:fs';
import { ConfigError, type Rect } from '@aethex/runtime';

/** One neighbour of this shard, as the shard map describes it. */
export interface Neighbour {
  /** Index of the neighbour's region (row-major). */
  shard: number;
  name: string;
  region: Rect;
  /** host:port of its players' endpoint; shard links use the same port. */
  address: string;
}

/** What a shard takes from its world's shard map. */
export interface ShardPlacement {
  /** The whole world. */
  bounds: Rect;
  /** This shard's index and region. */
  shard: number;
  region: Rect;
  /** This shard's own players' address (host:port), where neighbours redirect players. */
  address: string;
  neighbours: Neighbour[];
}

/** Entity ids per shard: each shard hands out ids from its own range of this size. */
export const IDS_PER_SHARD = 1 << 24;

/** The entity id range of the shard with index `shard`: [first, limit). */
export function idRange(shard: number): { first: number; limit: number } {
  return { first: shard * IDS_PER_SHARD + 1, limit: (shard + 1) * IDS_PER_SHARD };
}

/** The index of the shard whose range holds entity id `id` (see `idRange`). */
export function shardOfId(id: number): number {
  return Math.floor((id - 1) / IDS_PER_SHARD);
}

const isRect = (r: unknown): r is Rect => {
  const o = r as Record<string, unknown> | null;
  return (
    !!o &&
    ['minX', 'minY', 'maxX', 'maxY'].every((k) => typeof o[k] === 'number' && Number.isFinite(o[k])) &&
    (o.minX as number) < (o.maxX as number) &&
    (o.minY as number) < (o.maxY as number)
  );
};

/**
 * Reads the shard map (the operator's `shard-map.json`) and finds this shard in it by instance
 * and name. Every problem is a ConfigError naming `shard.map_file` and what is wrong.
 */
export function loadShardMap(file: string, instance: number, name: string): ShardPlacement {
  const fail = (why: string): never => {
    throw new ConfigError('shard.map_file', `${file}: ${why}`);
  };
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    return fail(`cannot read it as JSON (${(err as Error).message})`);
  }
  const map = doc as { bounds?: unknown; instances?: unknown };
  if (!isRect(map.bounds)) return fail('has no valid "bounds" rectangle');
  const bounds = map.bounds;
  if (!Array.isArray(map.instances)) return fail('has no "instances" list');
  const inst = (map.instances as { instance?: unknown; shards?: unknown }[]).find((i) => i?.instance === instance);
  if (!inst || !Array.isArray(inst.shards)) return fail(`does not list instance ${instance}`);
  const shards = inst.shards as { shard?: unknown; name?: unknown; region?: unknown; neighbours?: unknown; address?: unknown }[];
  for (const [k, s] of shards.entries()) {
    if (!Number.isInteger(s?.shard) || (s.shard as number) < 0 || (s.shard as number) >= 256)
      fail(`instance ${instance} shard #${k} has no valid "shard" index (0-255)`);
    if (typeof s.name !== 'string' || s.name === '') fail(`instance ${instance} shard #${k} has no "name"`);
    if (!isRect(s.region)) fail(`shard ${s.name} has no valid "region"`);
    if (typeof s.address !== 'string' || !/^[^\s/]+:\d{1,5}$/.test(s.address)) fail(`shard ${s.name} has no valid "address" (host:port)`);
    if (!Array.isArray(s.neighbours) || !s.neighbours.every((n) => Number.isInteger(n)))
      fail(`shard ${s.name} has no valid "neighbours" list`);
  }

  // Each shard once, by index and by name; regions inside the bounds, none overlapping another;
  // neighbours listed, each once, none a shard's own self.
  const inside = (r: Rect) => r.minX >= bounds.minX && r.minY >= bounds.minY && r.maxX <= bounds.maxX && r.maxY <= bounds.maxY;
  const overlap = (a: Rect, b: Rect) => a.minX < b.maxX && b.minX < a.maxX && a.minY < b.maxY && b.minY < a.maxY;
  for (const [k, s] of shards.entries()) {
    const region = s.region as Rect;
    if (!inside(region)) fail(`shard ${s.name}'s region is not inside the bounds`);
    for (const o of shards.slice(0, k)) {
      if (o.shard === s.shard) fail(`instance ${instance} lists shard index ${s.shard} twice (${o.name} and ${s.name})`);
      if (o.name === s.name) fail(`instance ${instance} lists shard ${s.name} twice`);
      if (overlap(o.region as Rect, region)) fail(`the regions of shards ${o.name} and ${s.name} overlap`);
    }
    const listed = s.neighbours as number[];
    for (const [j, n] of listed.entries()) {
      if (n === s.shard) fail(`shard ${s.name} names itself as its neighbour`);
      if (listed.indexOf(n) !== j) fail(`shard ${s.name} names neighbour ${n} twice`);
    }
  }
  const self = shards.find((s) => s.name === name);
  if (!self) return fail(`does not list shard ${name} in instance ${instance}`);
  const neighbours = (self.neighbours as number[]).map((n) => {
    const s = shards.find((x) => x.shard === n);
    if (!s) return fail(`shard ${name} names neighbour ${n}, which is not listed`);
    return { shard: n, name: s.name as string, region: s.region as Rect, address: s.address as string };
  });
  return { bounds: map.bounds, shard: self.shard as number, region: self.region as Rect, address: self.address as string, neighbours };
}

/** Distance from a point to a rectangle (0 inside). */
export function distanceToRect(x: number, y: number, r: Rect): number {
  const dx = x < r.minX ? r.minX - x : x >= r.maxX ? x - r.maxX : 0;
  const dy = y < r.minY ? r.minY - y : y >= r.maxY ? y - r.maxY : 0;
  return Math.sqrt(dx * dx + dy * dy);
}

/** Whether the point lies in the rectangle (min inclusive, max exclusive). */
export function inRect(x: number, y: number, r: Rect): boolean {
  return x >= r.minX && x < r.maxX && y >= r.minY && y < r.maxY;
}
