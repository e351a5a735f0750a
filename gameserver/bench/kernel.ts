import { PerformanceObserver } from 'node:perf_hooks';
import { percentile } from '@aethex/runtime';
import { loadConfig } from '../src/config.js';
import { ShardEngine } from '../src/engine.js';
import { createRng } from '../src/sim/step.js';

export interface KernelCase {
  entities: number;
  subscribers: number;
  /** Wanted average of entities within a subscriber's area of interest. */
  visible: number;
  ticks: number;
  warmup: number;
  /** engine.snapshot_threads (default 1: everything on the tick thread). */
  threads?: number;
}

/** engine.max_visible in the kernel (the shard's default): a view holds the subscriber and 255 others. */
const MAX_VISIBLE = 256;

export interface KernelResult {
  entities: number;
  subscribers: number;
  threads: number;
  /** Entities in reach of a subscriber on average (`visible`)... */
  inRangeAvg: number;
  /** ...and in its snapshots: the nearest up to engine.max_visible (fewer than in reach: capped). */
  visibleAvg: number;
  tick_ms: { p50: number; p99: number; max: number };
  ns_per_pair: number;
  bytes_per_client_tick: number;
  gc_max_pause_ms: number;
}

/**
 * Runs the shard's tick — NPC wandering, input application, movement, grid rebuild, area of
 * interest per subscriber, delta snapshot encoding into protobuf — with no sockets: the output only
 * counts bytes. Each subscriber sends one input per tick and acknowledges the previous tick, as a
 * client on a fast link would. The world's size is chosen so that `visible` entities are in reach
 * of a subscriber on average.
 */
export async function runKernel(c: KernelCase): Promise<KernelResult> {
  const radius = 200;
  const side = Math.sqrt((c.entities * Math.PI * radius * radius) / c.visible);
  const half = Math.round(side / 2);
  const settings = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: String(c.entities),
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: String(c.subscribers),
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: String(c.entities - c.subscribers),
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: `${-half},${-half},${half},${half}`,
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: String(radius),
    AETHEX_GAMESERVER_ENGINE_MAX_VISIBLE: String(MAX_VISIBLE),
    AETHEX_GAMESERVER_ENGINE_SNAPSHOT_THREADS: String(c.threads ?? 1),
  });
  let bytes = 0;
  let sends = 0;
  // The longest GC pause of the tick thread (perf_hooks, below) or a snapshot thread (reported
  // after the round it happened in: one of the warm-up's last rounds may count).
  let gcMax = 0;
  const engine = new ShardEngine(
    settings,
    {
      send: (_id, b) => {
        bytes += b.length;
        sends++;
        return true;
      },
      kick: () => undefined,
    },
    {
      onThreadGc: (ms) => {
        gcMax = Math.max(gcMax, ms);
      },
    },
  );
  await engine.snapshotThreadsReady();
  for (let i = 0; i < c.subscribers; i++) {
    const r = engine.join(i + 1, `bot-${i}`);
    if (!r.ok) throw new Error(`join ${i} failed: ${r.message}`);
  }
  const rng = createRng(99);
  const seq = new Uint32Array(c.subscribers + 1);
  const heading = new Float64Array(c.subscribers + 1).map(() => rng() * Math.PI * 2);
  const speed = settings['engine.max_speed'] * 0.8;

  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMax = Math.max(gcMax, e.duration);
  });
  gcObserver.observe({ entryTypes: ['gc'] });

  const samples: number[] = [];
  let inRangeSum = 0;
  let visibleSum = 0;
  for (let t = 0; t < c.warmup + c.ticks; t++) {
    if (t === c.warmup) {
      bytes = 0;
      sends = 0;
      gcMax = 0;
    }
    for (let s = 1; s <= c.subscribers; s++) {
      if (rng() < 0.05) heading[s] = rng() * Math.PI * 2;
      const h = heading[s] as number;
      engine.input(s, ++(seq[s] as number), Math.cos(h) * speed, Math.sin(h) * speed, engine.tick);
    }
    const started = performance.now();
    engine.step();
    const ms = performance.now() - started;
    if (t >= c.warmup) {
      samples.push(ms);
      if (t % 50 === 0) {
        const inRange = inRangeAverage(engine);
        inRangeSum += inRange.all;
        visibleSum += inRange.held;
      }
    }
    // Let the GC observer's callbacks run (outside the timed step).
    if (t % 20 === 0) await new Promise((r) => setImmediate(r));
  }
  await new Promise((r) => setTimeout(r, 50));
  gcObserver.disconnect();
  await engine.close();
  samples.sort((a, b) => a - b);
  const visibleAvg = visibleSum / Math.ceil(c.ticks / 50);
  const inRangeAvg = inRangeSum / Math.ceil(c.ticks / 50);
  const p50 = percentile(samples, 50);
  return {
    entities: c.entities,
    subscribers: c.subscribers,
    threads: c.threads ?? 1,
    inRangeAvg: Math.round(inRangeAvg * 10) / 10,
    visibleAvg: Math.round(visibleAvg * 10) / 10,
    tick_ms: { p50: round(p50), p99: round(percentile(samples, 99)), max: round(samples[samples.length - 1] as number) },
    ns_per_pair: Math.round((p50 * 1e6) / (c.subscribers * visibleAvg)),
    bytes_per_client_tick: Math.round(bytes / Math.max(1, sends)),
    gc_max_pause_ms: round(gcMax),
  };
}

/** Other entities in reach of an entity on average (`all`), and those of them a view holds (`held`). */
function inRangeAverage(engine: ShardEngine): { all: number; held: number } {
  // The interest sets are private to the engine's sessions; measure the same quantity directly.
  const { world, grid } = engine;
  const out = new Int32Array(world.count);
  let all = 0;
  let held = 0;
  let n = 0;
  for (let i = 0; i < world.count; i += 97) {
    const found = grid.queryRadius(world.x[i] as number, world.y[i] as number, 200, out, i);
    all += found;
    held += Math.min(found, MAX_VISIBLE - 1);
    n++;
  }
  return { all: all / Math.max(1, n), held: held / Math.max(1, n) };
}

const round = (v: number) => Math.round(v * 1000) / 1000;
