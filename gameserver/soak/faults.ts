import type { ChildProcess } from 'node:child_process';
import { regions } from '@aethex/runtime';
import type { Rng } from '../src/sim/step.js';
import type { LocalShard, LocalWorld } from '../src/world/local-world.js';
import type { FaultKind, FaultRecord, ShardRun } from './checks.js';
import type { FaultProxy } from './fault-proxy.js';

/** What the faults act on. */
export interface FaultTargets {
  world: LocalWorld;
  columns: number;
  rows: number;
  /** Per shard (by index): the proxy its neighbours' links to it go through. */
  links: FaultProxy[];
  pg: FaultProxy;
  redis: FaultProxy;
  /** Resolves true at the next handoff a client sees into (or out of) `shard`, false after `ms` without one. */
  nextHandoff(shard: string, direction: 'into' | 'out of', ms: number): Promise<boolean>;
  /**
   * Per shard (by index): the proxy in front of its players' port that every player's connection
   * goes through (labelled with the player's id, `soakPlayer`).
   */
  edges: FaultProxy[];
  /**
   * Resolves with the player whose next resume to `shard` after a redirect is dialled (a
   * connection of theirs to it opens while one to another shard is open), undefined after `ms`.
   */
  nextRedirect(shard: string, ms: number): Promise<string | undefined>;
  log(line: string): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A drain is bounded by ops.drain_timeout_ms (10 s by default); past this the process is killed. */
const DRAIN_WAIT_MS = 20_000;
/** A restart that fails (a store cut as it starts: exit 1) is tried again, this many times in all. */
const START_ATTEMPTS = 6;
/**
 * A client-stall is over when every stalled connection has closed (the client gave up on it, or
 * the shard kicked it as too slow); past this the soak stops waiting (the checks say who never did).
 */
const STALL_WAIT_MS = 20_000;

/**
 * Injects faults drawn with `rng` from `kinds`, one at a time or several at once (`inject` called
 * again before the last is over), and records each (`records`) and every run of a shard process it
 * starts (`runs`). Faults under way at once act on different things: a shard, the links between
 * two, PostgreSQL or Redis each take one fault at a time. Shard processes are signalled by pid;
 * `heal` ends whatever is under way (a paused shard continued, a stopped one started, proxies
 * passing).
 */
export class Faults {
  readonly records: FaultRecord[] = [];
  readonly runs: ShardRun[] = [];
  private readonly stopped = new Set<LocalShard>();
  private readonly neighbours: number[][];
  /** What faults under way act on: `shard:<name>`, `pg`, `redis`. */
  private readonly busy = new Set<string>();
  /** Shard processes the soak is stopping itself (a drain, a kill, a failed start): their exit is expected. */
  private readonly stopping = new Set<ChildProcess>();
  /** Off at the end, when the soak stops every shard. */
  private watching = true;
  /** Restarts of shards that died outside a fault, under way. */
  private readonly revivals = new Set<Promise<void>>();

  constructor(
    private readonly t: FaultTargets,
    private readonly rng: Rng,
    private readonly kinds: readonly FaultKind[],
  ) {
    this.neighbours = regions(t.world.bounds, t.columns, t.rows).map((g) => g.neighbours);
    for (const s of t.world.shards) this.watch(s);
  }

  /**
   * Notices the shard's process exiting when the soak did not stop it (a crash, an OOM kill, a
   * signal from outside): recorded as a `died` fault (its SIGKILL explains events it had queued,
   * as an injected kill's does; the checks fail on it) and the shard is started again.
   */
  private watch(s: LocalShard): void {
    const child = s.process;
    if (!child) return;
    child.once('exit', (code, signal) => {
      if (this.stopping.delete(child) || !this.watching) return;
      const at = Date.now();
      const how = signal ?? `code ${code}`;
      this.t.log(`shard ${s.name} (pid ${child.pid}) exited (${how}) without a fault stopping it; starting it again`);
      const rec: FaultRecord = { kind: 'died', shard: s.name, at, endAt: at, note: `exited (${how}) outside a fault` };
      if (signal === 'SIGKILL') rec.killedAt = at;
      const revival = (async () => {
        // No injected fault takes the shard until it is back.
        while (this.busy.has(`shard:${s.name}`)) await sleep(100);
        this.busy.add(`shard:${s.name}`);
        try {
          this.stopped.delete(s);
          // A fault that held the shard meanwhile (a kill timed after a handoff) may have started it already.
          const c = s.process;
          const running = c !== undefined && c !== child && c.exitCode === null && c.signalCode === null;
          const note = running ? 'already started again by a fault' : await this.restart(s, 'kill');
          if (note) rec.note = `${rec.note}; ${note}`;
        } catch (err) {
          rec.note = `${rec.note}; not started again: ${(err as Error).message.split('\n')[0]}`;
        } finally {
          this.busy.delete(`shard:${s.name}`);
          rec.endAt = Date.now();
          this.records.push(rec);
        }
      })();
      this.revivals.add(revival);
      void revival.finally(() => this.revivals.delete(revival));
    });
  }

  /** Stops a shard process on purpose: its exit is no death. */
  private stop(s: LocalShard, signal: NodeJS.Signals): Promise<void> {
    const child = s.process;
    if (child && child.exitCode === null && child.signalCode === null) this.stopping.add(child);
    return s.kill(signal);
  }

  /** From now on the shards' exits are the soak's own (it is stopping them all). */
  stopWatching(): void {
    this.watching = false;
  }

  private between(min: number, max: number): number {
    return Math.round(min + this.rng() * (max - min));
  }

  /** One of `shards` no fault under way acts on, drawn with the rng; undefined when there is none. */
  private pickFree(shards: readonly LocalShard[]): LocalShard | undefined {
    const free = shards.filter((s) => !this.busy.has(`shard:${s.name}`));
    return free.length === 0 ? undefined : free[Math.floor(this.rng() * free.length)];
  }

  /**
   * What a fault of `kind` acts on, taken from the faults to come until `release`: a shard (and
   * for a link, a neighbour of it), and the store it cuts or pauses. Undefined when another fault
   * under way has it.
   */
  private claim(kind: FaultKind): { shard?: LocalShard; peer?: LocalShard; release: () => void } | undefined {
    const keys: string[] = [];
    const store = kind.startsWith('pg-') ? 'pg' : kind.startsWith('redis-') ? 'redis' : undefined;
    if (store !== undefined) {
      if (this.busy.has(store)) return undefined;
      keys.push(store);
    }
    let shard: LocalShard | undefined;
    let peer: LocalShard | undefined;
    if (store === undefined || kind === 'pg-pause-kill') {
      shard = this.pickFree(this.t.world.shards);
      if (shard === undefined) return undefined;
      keys.push(`shard:${shard.name}`);
      if (kind === 'link-cut' || kind === 'link-pause') {
        const all = this.t.world.shards;
        peer = this.pickFree((this.neighbours[shard.index] ?? []).map((i) => all[i] as LocalShard));
        if (peer === undefined) return undefined;
        keys.push(`shard:${peer.name}`);
      }
    }
    for (const k of keys) this.busy.add(k);
    return {
      ...(shard ? { shard } : {}),
      ...(peer ? { peer } : {}),
      release: () => {
        for (const k of keys) this.busy.delete(k);
      },
    };
  }

  /**
   * Injects one fault and waits until it is over (the shard back and ready, the pause ended). With
   * faults under way, one drawn whose target is taken is drawn again; when every draw is, it waits.
   */
  async inject(): Promise<FaultRecord> {
    for (let draws = 0; ; draws++) {
      const kind = this.kinds[Math.floor(this.rng() * this.kinds.length)] as FaultKind;
      const claim = this.claim(kind);
      if (claim === undefined) {
        if (draws % 20 === 19) await sleep(250);
        continue;
      }
      try {
        return await this.run(kind, claim.shard, claim.peer);
      } finally {
        claim.release();
      }
    }
  }

  private async run(kind: FaultKind, shard: LocalShard | undefined, peer: LocalShard | undefined): Promise<FaultRecord> {
    const rec: FaultRecord = { kind, at: 0, endAt: 0 };
    const s = shard as LocalShard;
    switch (kind) {
      case 'drain':
      case 'kill': {
        rec.shard = s.name;
        // Half of them right after a client's handoff into the shard (what custody is for) or out
        // of it (its commit, and the place it freed, not stored yet).
        const aim = this.rng();
        if (aim < 0.5) {
          const direction = aim < 0.3 ? 'into' : 'out of';
          const delay = this.between(0, 500);
          if (await this.t.nextHandoff(s.name, direction, 3000)) {
            const handoffAt = Date.now();
            await sleep(delay);
            rec.afterHandoffMs = Date.now() - handoffAt;
            rec.afterHandoff = direction;
          } else rec.note = `no handoff ${direction} it within 3 s`;
        }
        rec.at = Date.now();
        const pid = s.process?.pid;
        if (kind === 'drain') {
          this.t.log(`fault: drain ${s.name} (pid ${pid})`);
          const exited = this.stop(s, 'SIGTERM');
          if (!(await Promise.race([exited.then(() => true), sleep(DRAIN_WAIT_MS).then(() => false)]))) {
            rec.note = `did not exit within ${DRAIN_WAIT_MS} ms of SIGTERM; killed`;
            await this.stop(s, 'SIGKILL');
          }
        } else {
          this.t.log(`fault: SIGKILL ${s.name} (pid ${pid})`);
          rec.killedAt = rec.at;
          await this.stop(s, 'SIGKILL');
        }
        await sleep(kind === 'drain' ? this.between(200, 1500) : this.between(200, 2000));
        rec.ms = Date.now() - rec.at;
        const note = await this.restart(s, kind);
        if (note) rec.note = [rec.note, note].filter(Boolean).join('; ');
        break;
      }
      case 'pause': {
        const pid = s.process?.pid;
        rec.shard = s.name;
        rec.ms = this.between(300, 7000);
        rec.at = Date.now();
        if (pid !== undefined) {
          this.t.log(`fault: SIGSTOP ${s.name} (pid ${pid}) for ${rec.ms} ms`);
          process.kill(pid, 'SIGSTOP');
          this.stopped.add(s);
          await sleep(rec.ms);
          this.resume(s);
        }
        break;
      }
      case 'link-cut':
      case 'link-pause': {
        const p = peer as LocalShard;
        rec.shard = s.name;
        rec.peer = p.name;
        rec.at = Date.now();
        const a = this.t.links[s.index] as FaultProxy;
        const b = this.t.links[p.index] as FaultProxy;
        if (kind === 'link-cut') {
          const n = a.cut((l) => l === p.name) + b.cut((l) => l === s.name);
          this.t.log(`fault: cut the links between ${s.name} and ${p.name} (${n} connections)`);
        } else {
          rec.ms = this.between(300, 3000);
          const n = a.pause(rec.ms, (l) => l === p.name) + b.pause(rec.ms, (l) => l === s.name);
          this.t.log(`fault: pause the links between ${s.name} and ${p.name} for ${rec.ms} ms (${n} connections)`);
          await sleep(rec.ms);
        }
        break;
      }
      case 'pg-cut':
      case 'redis-cut': {
        const proxy = kind === 'pg-cut' ? this.t.pg : this.t.redis;
        rec.ms = this.between(0, 3000);
        rec.at = Date.now();
        this.t.log(`fault: cut ${kind === 'pg-cut' ? 'PostgreSQL' : 'Redis'}, refusing connections for ${rec.ms} ms`);
        proxy.refuse(rec.ms);
        await sleep(rec.ms);
        break;
      }
      case 'pg-pause-kill': {
        // A crash while the store is down: the snapshot it restarts from is older than the pause,
        // and the events queued meanwhile die with it (docs/gameserver.md, "When a store fails").
        rec.shard = s.name;
        rec.ms = this.between(2000, 7000);
        rec.at = Date.now();
        this.t.log(`fault: pause PostgreSQL for ${rec.ms} ms and SIGKILL ${s.name} (pid ${s.process?.pid}) during it`);
        this.t.pg.pause(rec.ms);
        await sleep(this.between(1000, rec.ms - 500));
        rec.killedAt = Date.now();
        await this.stop(s, 'SIGKILL');
        await sleep(Math.max(200, rec.at + rec.ms - Date.now()));
        const note = await this.restart(s, 'kill');
        if (note) rec.note = note;
        break;
      }
      case 'client-cut':
      case 'client-pause':
      case 'client-stall': {
        // The players' own network: a share of the players connected to one shard lose it — every
        // connection of theirs, to any shard (one mid-handoff has two). A third of these faults
        // also take the player whose resume to the shard (after a redirect) was just dialled.
        rec.shard = s.name;
        const edge = this.t.edges[s.index] as FaultProxy;
        let aimed: string | undefined;
        if (this.rng() < 1 / 3) {
          // Half of them within 30 ms: a resume takes about 20 ms here, so they fall between the
          // redirect and the new shard's Welcome or first snapshot; the rest up to 300 ms, while
          // the old connection is still open (the SDK keeps it 2 s for the answers to RPCs).
          const delay = this.rng() < 0.5 ? this.between(0, 30) : this.between(0, 300);
          aimed = await this.t.nextRedirect(s.name, 3000);
          if (aimed !== undefined) {
            const dialledAt = Date.now();
            await sleep(delay);
            rec.afterRedirect = aimed;
            rec.afterRedirectMs = Date.now() - dialledAt;
          } else rec.note = 'no redirect to it within 3 s';
        }
        const share = this.between(10, 50) / 100;
        const here = [...new Set(edge.open().flatMap((c) => (c.label === undefined ? [] : [c.label])))].sort();
        const chosen = new Set(here.filter(() => this.rng() < share));
        if (aimed !== undefined) chosen.add(aimed);
        const which = (label: string | undefined) => label !== undefined && chosen.has(label);
        rec.players = [...chosen];
        rec.at = Date.now();
        let n = 0;
        if (kind === 'client-cut') {
          for (const e of this.t.edges) n += e.cut(which);
          this.t.log(`fault: cut the connections of ${chosen.size} of ${here.length} players on ${s.name} (${n} connections)`);
        } else if (kind === 'client-pause') {
          rec.ms = this.between(500, 8000);
          // New connections of theirs are held too: their network is out, for rejoins as well.
          for (const e of this.t.edges) n += e.pause(rec.ms, which, true);
          this.t.log(
            `fault: hold the connections of ${chosen.size} of ${here.length} players on ${s.name} for ${rec.ms} ms (${n} connections)`,
          );
          await sleep(rec.ms);
        } else {
          for (const e of this.t.edges) n += e.stall(which);
          this.t.log(`fault: stall what the shards send to ${chosen.size} of ${here.length} players on ${s.name} (${n} connections)`);
          const stalledOpen = () => this.t.edges.reduce((a, e) => a + e.open().filter((c) => c.stalled).length, 0);
          const deadline = Date.now() + STALL_WAIT_MS;
          while (stalledOpen() > 0 && Date.now() < deadline) await sleep(100);
          rec.ms = Date.now() - rec.at;
          const left = stalledOpen();
          if (left > 0)
            rec.note = [rec.note, `${left} stalled connections still open after ${STALL_WAIT_MS} ms`].filter(Boolean).join('; ');
        }
        rec.connections = n;
        break;
      }
      case 'pg-pause':
      case 'redis-pause': {
        const proxy = kind === 'pg-pause' ? this.t.pg : this.t.redis;
        rec.ms = kind === 'pg-pause' ? this.between(1000, 8000) : this.between(500, 5000);
        rec.at = Date.now();
        this.t.log(`fault: pause ${kind === 'pg-pause' ? 'PostgreSQL' : 'Redis'} for ${rec.ms} ms`);
        proxy.pause(rec.ms);
        await sleep(rec.ms);
        break;
      }
    }
    rec.endAt = Date.now();
    this.records.push(rec);
    return rec;
  }

  private resume(s: LocalShard): void {
    const c = s.process;
    const pid = c && c.exitCode === null && c.signalCode === null ? c.pid : undefined;
    // One that died while stopped is gone: its pid may be another process's by now.
    if (this.stopped.delete(s) && pid !== undefined) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // It is gone.
      }
    }
  }

  /**
   * Starts a shard again and waits until it is ready; a start that fails is retried (after 1 s)
   * up to START_ATTEMPTS in all. Returns a note when it took more than one.
   */
  async restart(s: LocalShard, cause: ShardRun['cause']): Promise<string | undefined> {
    const failures: string[] = [];
    for (let attempt = 1; ; attempt++) {
      const spawnAt = Date.now();
      try {
        await s.start();
        this.watch(s);
        this.runs.push({ shard: s.name, cause, spawnAt, startedAt: s.startedAt, readyAt: Date.now() });
        return failures.length > 0 ? `started on attempt ${attempt} (${failures.join('; ')})` : undefined;
      } catch (err) {
        const why = (err as Error).message.split('\n')[0]?.slice(0, 300) ?? '';
        failures.push(why);
        this.t.log(`restart of ${s.name} failed (attempt ${attempt}): ${why}`);
        await this.stop(s, 'SIGKILL');
        if (attempt >= START_ATTEMPTS) throw err;
        await sleep(1000);
      }
    }
  }

  /** Every fault over: paused shards continued, stopped ones started, the proxies passing everything. */
  async heal(): Promise<void> {
    await Promise.all(this.revivals);
    for (const s of [...this.stopped]) this.resume(s);
    for (const p of [...this.t.links, ...this.t.edges, this.t.pg, this.t.redis]) p.heal();
    for (const s of this.t.world.shards) {
      const c = s.process;
      if (!c || c.exitCode !== null || c.signalCode !== null) await this.restart(s, 'kill');
    }
  }

  /** Pids of the shard processes running now (for cleanup by pid). */
  pids(): number[] {
    return this.t.world.shards.flatMap((s) => {
      const c = s.process;
      return c?.pid !== undefined && c.exitCode === null && c.signalCode === null ? [c.pid] : [];
    });
  }

  /** Continues every paused shard (before they are stopped). */
  continueAll(): void {
    for (const s of [...this.stopped]) this.resume(s);
  }
}
