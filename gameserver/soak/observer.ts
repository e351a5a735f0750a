import { KIND_PLAYER, MODE_OFFERED, MODE_OWNED } from '../src/sim/world.js';
import { metricValue, scrapeMetrics } from '../src/world/metrics-scrape.js';
import type { Ownership } from './checks.js';

interface ViewerState {
  entities: number[];
}

/**
 * Polls every shard's own view: `/viewer/state` in rounds (which shard owns which entity: an
 * entity owned, or on offer, on two shards in two rounds running is a duplicate — one round is
 * not enough, since the shards are read one after another while a handoff may complete between),
 * and `/metrics` now and then (the custody gauge's peak).
 */
export class Observer {
  rounds = 0;
  readonly duplicates: Ownership['duplicates'] = [];
  custodyMax = 0;
  /**
   * Per player entity id, which shards owned it from when to when (Date.now(), as polled): for
   * tracing where a lost player's entity went.
   */
  readonly owners = new Map<number, { shards: string; from: number; to: number }[]>();
  private readonly owning = new Map<number, { shards: string; from: number; to: number }>();
  private lastDuplicates = new Set<number>();
  private stopped = false;
  private loops: Promise<void>[] = [];

  constructor(private readonly shards: readonly { name: string; opsUrl: string }[]) {}

  start(roundEveryMs: number, metricsEveryMs: number): void {
    this.stopped = false;
    const every = async (ms: number, fn: () => Promise<unknown>) => {
      while (!this.stopped) {
        await fn().catch(() => undefined);
        await new Promise((r) => setTimeout(r, ms));
      }
    };
    this.loops = [every(roundEveryMs, () => this.round()), every(metricsEveryMs, () => this.custody())];
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }

  /** One round: which shards own which entities; `complete` when every shard answered. */
  async round(): Promise<{ complete: boolean; owners: Map<number, string[]> }> {
    const views = await Promise.all(
      this.shards.map((s) =>
        fetch(`${s.opsUrl}/viewer/state`, { signal: AbortSignal.timeout(1500) }).then(
          (r) => (r.ok ? (r.json() as Promise<ViewerState>) : undefined),
          () => undefined,
        ),
      ),
    );
    this.rounds++;
    const owners = new Map<number, string[]>();
    const players = new Set<number>();
    views.forEach((v, k) => {
      if (!v) return;
      const e = v.entities;
      for (let i = 0; i < e.length; i += 5) {
        const id = e[i + 3] as number;
        const mode = e[i + 4] as number;
        if (mode !== MODE_OWNED && mode !== MODE_OFFERED) continue;
        if (e[i + 2] === KIND_PLAYER) players.add(id);
        const by = owners.get(id);
        const name = (this.shards[k] as { name: string }).name;
        if (by) by.push(name);
        else owners.set(id, [name]);
      }
    });
    const dup = new Set<number>();
    const at = Date.now();
    this.track(players, owners, new Set(this.shards.filter((_, k) => views[k] !== undefined).map((s) => s.name)), at);
    for (const [id, by] of owners) {
      if (by.length < 2) continue;
      dup.add(id);
      if (this.lastDuplicates.has(id)) this.duplicates.push({ id, shards: by, at });
    }
    this.lastDuplicates = dup;
    return { complete: views.every((v) => v !== undefined), owners };
  }

  /** Extends or closes each player entity's ownership segment; one owned by shards that did not answer stays open. */
  private track(players: Set<number>, owners: Map<number, string[]>, answered: Set<string>, at: number): void {
    for (const id of players) {
      const shards = (owners.get(id) as string[]).join('+');
      const open = this.owning.get(id);
      if (open && open.shards === shards) {
        open.to = at;
        continue;
      }
      const seg = { shards, from: at, to: at };
      this.owning.set(id, seg);
      const list = this.owners.get(id);
      if (list) list.push(seg);
      else this.owners.set(id, [seg]);
    }
    for (const [id, seg] of this.owning) {
      if (players.has(id)) continue;
      if (seg.shards.split('+').some((s) => !answered.has(s))) continue;
      this.owning.delete(id);
    }
  }

  /** Every shard's `aether_handoff_custody` now (a shard that does not answer is left out). */
  async custody(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    await Promise.all(
      this.shards.map(async (s) => {
        const m = await scrapeMetrics(s.opsUrl, 1500).catch(() => undefined);
        if (m) out[s.name] = metricValue(m, 'aether_handoff_custody');
      }),
    );
    const sum = Object.values(out).reduce((a, b) => a + b, 0);
    this.custodyMax = Math.max(this.custodyMax, sum);
    return out;
  }

  /** Sum of `name` over every shard that answers. */
  async sum(name: string): Promise<number> {
    const all = await Promise.all(this.shards.map((s) => scrapeMetrics(s.opsUrl, 1500).catch(() => undefined)));
    return all.reduce((a, m) => a + (m ? metricValue(m, name) : 0), 0);
  }
}
