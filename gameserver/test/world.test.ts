// A seamless world on real shard processes over loopback: bots walk across the borders of a 2×2
// world for minutes while an observer polls every shard's state. Sizes come from
// AETHEX_TEST_WORLD_BOTS (default 500) and AETHEX_TEST_WORLD_SECONDS (default 120).
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { type LocalWorld, startLocalWorld } from '../src/world/local-world.js';
import { type Stall, stalledWithin, watchStalls } from './stall-probe.js';
import type { WorldBotsConfig } from './world-bots.js';

const BOTS = Number(process.env.AETHEX_TEST_WORLD_BOTS ?? 500);
const SECONDS = Number(process.env.AETHEX_TEST_WORLD_SECONDS ?? 120);
const NPCS_PER_SHARD = 25;
const HANDOFF_TIMEOUT_MS = 1000;
const BOUNDS = { minX: 0, minY: 0, maxX: 800, maxY: 800 };

interface ShardView {
  entities: number[];
}

/**
 * Polls every shard's /viewer/state in rounds and checks ownership across them: an entity owned
 * (or on offer, still owned) by two shards in two rounds running is a duplicate — one round is not
 * enough, since shards are read one after another while a handoff may complete in between.
 */
class Observer {
  rounds = 0;
  readonly duplicates: string[] = [];
  /** Longest time a player entity, once seen, was owned by no shard (ms), and which. */
  longestUnowned = { ms: 0, id: 0 };
  lastCounts = { players: 0, npcs: 0 };
  private lastDuplicates = new Set<number>();
  private readonly unownedSince = new Map<number, number>();
  private readonly known = new Set<number>();
  private stopped = false;
  private done: Promise<void> | undefined;
  /**
   * Per round: ghosts (mode 1) of NPCs from each shard's id range, held by the other shards, and
   * which shards answered (see `npcGhostsOf`).
   */
  readonly ghostTimeline: { at: number; foreignNpcGhosts: number[]; answered: boolean[] }[] = [];

  constructor(private readonly world: LocalWorld) {}

  start(): void {
    this.done = (async () => {
      while (!this.stopped) {
        await this.round();
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }

  async round(): Promise<{ players: number; npcs: number; complete: boolean }> {
    const views = await Promise.all(
      this.world.shards.map((s) =>
        fetch(`${s.opsUrl}/viewer/state`, { signal: AbortSignal.timeout(2000) }).then(
          (r) => r.json() as Promise<ShardView>,
          () => undefined,
        ),
      ),
    );
    const at = performance.now();
    this.rounds++;
    const owners = new Map<number, number[]>();
    let players = 0;
    let npcs = 0;
    const foreignNpcGhosts = this.world.shards.map(() => 0);
    views.forEach((v, k) => {
      if (!v) return;
      const e = v.entities;
      for (let i = 0; i < e.length; i += 5) {
        const [kind, id, mode] = [e[i + 2] as number, e[i + 3] as number, e[i + 4] as number];
        if (mode === 1 && kind === 0) foreignNpcGhosts[id >>> 24] = (foreignNpcGhosts[id >>> 24] as number) + 1;
        if (mode !== 0 && mode !== 2) continue;
        owners.set(id, [...(owners.get(id) ?? []), k]);
        if (kind === 1) players++;
        else npcs++;
      }
    });
    this.ghostTimeline.push({ at, foreignNpcGhosts, answered: views.map((v) => v !== undefined) });
    const dup = new Set<number>();
    for (const [id, by] of owners) {
      if (by.length < 2) continue;
      dup.add(id);
      if (this.lastDuplicates.has(id)) this.duplicates.push(`entity ${id} owned by shards ${by.join(', ')} in two rounds running`);
    }
    this.lastDuplicates = dup;
    const complete = views.every((v) => v !== undefined);
    if (complete) {
      for (const id of owners.keys()) this.known.add(id);
      for (const id of this.known) {
        const since = this.unownedSince.get(id);
        // Still unowned counts too: an entity that vanished for good is the longest of all.
        if (since !== undefined && at - since > this.longestUnowned.ms) this.longestUnowned = { ms: at - since, id };
        if (owners.has(id)) this.unownedSince.delete(id);
        else if (since === undefined) this.unownedSince.set(id, at);
      }
      this.lastCounts = { players, npcs };
    }
    return { players, npcs, complete };
  }
}

/**
 * The ghosts of shard `k`'s NPCs the other shards held in round `r`, or undefined when one of them
 * did not answer (its ghosts unknown, not none). Shard `k`'s own answer is not needed: it may be
 * down.
 */
function npcGhostsOf(r: Observer['ghostTimeline'][number], k: number): number | undefined {
  return r.answered.every((answered, j) => answered || j === k) ? r.foreignNpcGhosts[k] : undefined;
}

interface Run {
  world: LocalWorld;
  observer: Observer;
  bots: ChildProcess;
  progress: { at: number; joined: number; handoffs: number }[];
  summary: Promise<Record<string, unknown>>;
}

let current: { world?: LocalWorld; bots?: ChildProcess; dir?: string; stopWatching?: () => void } = {};
afterEach(async () => {
  current.stopWatching?.();
  current.bots?.kill('SIGKILL');
  await current.world?.stop();
  if (current.dir) rmSync(current.dir, { recursive: true, force: true });
  current = {};
});

async function startRun(seconds: number): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-world-'));
  current.dir = dir;
  const keys = generateKeyPairSync('ed25519');
  const keyFile = join(dir, 'key.pem');
  writeFileSync(keyFile, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const world = await startLocalWorld({
    name: 'walk',
    columns: 2,
    rows: 2,
    bounds: BOUNDS,
    directory: dir,
    publicKeyPem: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    basePort: 0,
    stdio: 'ignore',
    env: {
      AETHEX_GAMESERVER_ENGINE_NPC_COUNT: String(NPCS_PER_SHARD),
      AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '60',
      AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '6',
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '5000',
      AETHEX_GAMESERVER_HANDOFF_TIMEOUT_MS: String(HANDOFF_TIMEOUT_MS),
      AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '1000',
      AETHEX_GAMESERVER_LOG_LEVEL: 'warn',
    },
  });
  current.world = world;
  const observer = new Observer(world);
  const config: WorldBotsConfig = {
    world: world.name,
    shards: world.shards.map((s) => ({ name: s.name, url: s.url, region: s.region, index: s.index })),
    bounds: BOUNDS,
    privateKeyFile: keyFile,
    count: BOTS,
    seconds,
    step: 10,
    inputEveryMs: 50,
  };
  const bots = spawn(
    process.execPath,
    ['--conditions=aethex-source', '--import', 'tsx', join(import.meta.dirname, 'world-bots.ts'), JSON.stringify(config)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  current.bots = bots;
  const progress: Run['progress'] = [];
  let buffer = '';
  let resolveSummary: (s: Record<string, unknown>) => void = () => undefined;
  const summary = new Promise<Record<string, unknown>>((resolve, reject) => {
    resolveSummary = resolve;
    bots.once('exit', (code) => reject(new Error(`world bots exited with ${code} before their summary`)));
  });
  bots.stdout.on('data', (d: Buffer) => {
    buffer += d.toString();
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      nl = buffer.indexOf('\n');
      const msg = JSON.parse(line) as { progress?: { joined: number; handoffs: number }; summary?: Record<string, unknown> };
      if (msg.progress) progress.push({ at: performance.now(), ...msg.progress });
      if (msg.summary) resolveSummary(msg.summary);
    }
  });
  // The observer starts once every bot is in.
  const deadline = Date.now() + 120_000;
  while ((progress.at(-1)?.joined ?? 0) < BOTS) {
    if (Date.now() > deadline) throw new Error(`only ${progress.at(-1)?.joined ?? 0} of ${BOTS} bots joined`);
    await new Promise((r) => setTimeout(r, 100));
  }
  observer.start();
  return { world, observer, bots, progress, summary };
}

describe('a 2×2 world with bots walking across its borders', () => {
  test(
    `${BOTS} bots for ${SECONDS} s: entities conserved, never owned twice, every input acknowledged, neighbours seen`,
    async () => {
      const run = await startRun(SECONDS);
      const summary = (await run.summary) as {
        joined: number;
        handoffs: number;
        unacknowledged: number;
        handoff_failures: string[];
        saw_neighbours: number;
        rejoins: number;
        kicks: Record<string, number>;
        handoff_gap_ms: { p50: number; p99: number };
      };
      await run.observer.stop();
      const final = await run.observer.round();
      run.bots.kill('SIGTERM');
      const o = run.observer;
      console.log(
        `world: ${summary.handoffs} handoffs in ${SECONDS} s (gap p50 ${summary.handoff_gap_ms.p50?.toFixed(1)} ms, p99 ${summary.handoff_gap_ms.p99?.toFixed(1)} ms), ${o.rounds} observer rounds, longest unowned ${o.longestUnowned.ms.toFixed(0)} ms, ${summary.saw_neighbours}/${BOTS} bots saw a neighbour's NPC`,
      );
      expect(summary.joined).toBe(BOTS);
      expect(summary.kicks).toEqual({});
      expect(summary.rejoins).toBe(0);
      expect(summary.handoff_failures).toEqual([]);
      expect(summary.handoffs).toBeGreaterThan(BOTS);
      expect(summary.unacknowledged).toBe(0);
      expect(o.duplicates).toEqual([]);
      expect(o.longestUnowned.ms).toBeLessThanOrEqual(HANDOFF_TIMEOUT_MS);
      expect(final).toEqual({ players: BOTS, npcs: 4 * NPCS_PER_SHARD, complete: true });
      expect(summary.saw_neighbours).toBeGreaterThanOrEqual(Math.floor(BOTS * 0.9));
    },
    (SECONDS + 240) * 1000,
  );

  test(`one shard SIGKILLed and restarted mid-run: no duplicates, its ghosts gone within 1 s, its players back within 5 s`, async () => {
    const seconds = Math.max(30, Math.round(SECONDS / 2));
    const run = await startRun(seconds);
    await new Promise((r) => setTimeout(r, (seconds / 3) * 1000));
    const victim = run.world.shards[1] as LocalWorld['shards'][number];
    // The observer's own stalls (this process not run, or busy with other work): time in which it
    // could not look, not time the shards took.
    const observerStalls: Stall[] = [];
    const stopWatching = watchStalls((s) => observerStalls.push(s));
    current.stopWatching = stopWatching;
    const killedAt = performance.now();
    await victim.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 2000));
    await victim.start();
    const restartedAt = performance.now();
    const deadline = restartedAt + 15_000;
    let backAt = Number.POSITIVE_INFINITY;
    while (performance.now() < deadline) {
      const last = run.progress.at(-1);
      if (last && last.at > restartedAt && last.joined === BOTS) {
        backAt = last.at;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const summary = (await run.summary) as { joined: number; rejoins: number; unacknowledged: number };
    await run.observer.stop();
    stopWatching();
    const o = run.observer;
    // The first round after the kill in which no other shard holds a ghost of the victim's NPCs,
    // and the time to it less the observer's stalls in it.
    const gone = o.ghostTimeline.find((r) => r.at > killedAt && npcGhostsOf(r, victim.index) === 0);
    const observerStalled = gone ? stalledWithin(observerStalls, performance.timeOrigin + killedAt, performance.timeOrigin + gone.at) : 0;
    const goneMs = (gone?.at ?? Number.POSITIVE_INFINITY) - killedAt - observerStalled;
    console.log(
      `kill: ghosts gone ${gone ? `${goneMs.toFixed(0)} ms after the kill (seen ${(gone.at - killedAt).toFixed(0)} ms after it, the observer stalled ${observerStalled.toFixed(0)} ms of that)` : 'never'}; players back ${(backAt - restartedAt).toFixed(0)} ms after the restart; ${summary.rejoins} rejoins`,
    );
    expect(o.duplicates).toEqual([]);
    expect(gone).toBeDefined();
    expect(goneMs).toBeLessThanOrEqual(1000);
    expect(backAt - restartedAt).toBeLessThanOrEqual(5000);
    expect(summary.rejoins).toBeGreaterThan(0);
    expect(summary.joined).toBe(BOTS);
    expect(summary.unacknowledged).toBe(0);
    // Before the kill the victim's NPCs were mirrored to its neighbours (so "gone" means something).
    expect(o.ghostTimeline.some((r) => r.at < killedAt && (npcGhostsOf(r, victim.index) ?? 0) > 0)).toBe(true);
  }, 300_000);
});
