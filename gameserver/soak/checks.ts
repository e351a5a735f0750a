// The soak's checks: plain functions over what was recorded — the clients' events and final
// states, the shards' ownership as polled, the custody gauges, the domain event streams, and the
// faults — to rows with a count and PASS/FAIL, and the cases behind every failing count.
import type { ClientEvent, ClientState } from './client-protocol.js';
import type { StreamEvent } from './stores.js';

export type FaultKind =
  | 'drain'
  | 'kill'
  | 'pause'
  | 'link-cut'
  | 'link-pause'
  | 'pg-cut'
  | 'pg-pause'
  | 'pg-pause-kill'
  | 'redis-cut'
  | 'redis-pause'
  | 'client-cut'
  | 'client-pause'
  | 'client-stall'
  /** Not injected: a shard process that exited without the soak stopping it (a crash, or a signal from outside). */
  | 'died';
export const FAULT_KINDS: readonly FaultKind[] = [
  'drain',
  'kill',
  'pause',
  'link-cut',
  'link-pause',
  'pg-cut',
  'pg-pause',
  'pg-pause-kill',
  'redis-cut',
  'redis-pause',
  'client-cut',
  'client-pause',
  'client-stall',
];
/** Faults of the players' own network (their connections to the shards), not of a shard, a link or a store. */
export const CLIENT_FAULT_KINDS: readonly FaultKind[] = ['client-cut', 'client-pause', 'client-stall'];

/** One fault as injected (times Date.now()). */
export interface FaultRecord {
  kind: FaultKind;
  /** The shard signalled, or one end of the link. */
  shard?: string;
  /** The other end of the link. */
  peer?: string;
  at: number;
  /** When it was over: the shard ready again, the pause or refusal ended. */
  endAt: number;
  /** How long the pause or refusal was, or the shard down (ms). */
  ms?: number;
  /** When the shard was SIGKILLed (a `kill`, or the kill in a `pg-pause-kill`). */
  killedAt?: number;
  /** Timed to follow a client's handoff into (or out of) the shard by this much (ms). */
  afterHandoffMs?: number;
  afterHandoff?: 'into' | 'out of';
  /** What went wrong injecting it (a restart that failed and was retried). */
  note?: string;
  /**
   * A client-network fault (`shard`: the shard whose players it drew them from): the players whose
   * connections it cut, held or stalled — every connection of theirs, to any shard.
   */
  players?: string[];
  /** How many connections that was. */
  connections?: number;
  /** Aimed at the player whose resume to `shard` (after a redirect) had just been dialled: that player, and how long after (ms). */
  afterRedirect?: string;
  afterRedirectMs?: number;
}

/** One run of a shard process: spawned at `spawnAt`, ready (readyz) at `readyAt`, after `cause`. */
export interface ShardRun {
  shard: string;
  cause: 'start' | 'drain' | 'kill';
  spawnAt: number;
  /** When its ops endpoint first answered (restored, listening: neighbours' links may reach it). */
  startedAt?: number;
  readyAt: number;
}

export interface Ownership {
  /** Entity ids owned (or on offer) on two shards in two polling rounds running. */
  duplicates: { id: number; shards: string[]; at: number }[];
  /** The last complete round after the settle: entity id → shards that own it (mode owned or offered). */
  finalOwners: Map<number, string[]>;
  rounds: number;
}

export interface SoakRecord {
  events: ClientEvent[];
  finals: ClientState[];
  ownership: Ownership;
  custody: { max: number; final: Record<string, number> };
  streams: Map<string, StreamEvent[]>;
  faults: FaultRecord[];
  runs: ShardRun[];
  /** When the soak stopped injecting faults, and when the record was taken. */
  faultsEndedAt: number;
  endAt: number;
  /** The shards' `persistence.snapshot_interval_ms`: a player who joined within it of a SIGKILL may be in no stored snapshot. */
  snapshotIntervalMs: number;
  /** Per player entity id, which shards owned it when (the observer's polls), for tracing a lost player. */
  ownerHistory?: Map<number, { shards: string; from: number; to: number }[]>;
  /** The shards' `engine.rejoin_window_ms` (default 30,000): a client dropped by a client-network fault must be back within it. */
  rejoinWindowMs?: number;
}

export interface CheckRow {
  check: string;
  count: number;
  status: 'PASS' | 'FAIL' | 'info';
  detail?: string;
}

/** A handoff a client saw whose event is not in a shard's stream. */
export interface MissingHandoffEvent {
  player: string;
  from: string;
  to: string;
  /** The client's `handoff` event. */
  at: number;
  /** The shard whose stream lacks it, and which event. */
  shard: string;
  event: 'player_left handoff' | 'player_joined handoff';
  viaRejoin: boolean;
  /** A SIGKILL of that shard that explains it (the event died queued in the process), if any. */
  killedAt?: number;
  /** Of the shard's run the handoff fell in: ms since its spawn and since it was ready (negative: before). */
  sinceSpawnMs?: number;
  sinceReadyMs?: number;
  runCause?: ShardRun['cause'];
  /** That player's events in that shard's stream within 10 s of the handoff. */
  nearby: StreamEvent[];
}

/** A player who lost their entity or their session. */
export interface LostPlayer {
  player: string;
  why: string;
  at?: number;
  /** The entity they had, and where the shards had it around the loss (±20 s). */
  entity?: number;
  owners?: { shards: string; from: number; to: number }[];
  /** The SIGKILL of the shard they rejoined, when one came between the drop and the rejoin. */
  killedAt?: number;
  /** Set when documented behaviour explains it (a player who joined after the shard's last snapshot, lost with a SIGKILL). */
  explained?: string;
}

export interface SoakFindings {
  rows: CheckRow[];
  lost: LostPlayer[];
  stuck: ClientState[];
  sharedIds: { id: number; players: string[] }[];
  missingHandoffEvents: MissingHandoffEvent[];
  /** Players whose client saw anything after they quit (`close()`): their session went on. */
  afterQuit: { player: string; quitAt: number; seen: ClientEvent[] }[];
  falseDepartures: { shard: string; event: StreamEvent; quitAt?: number }[];
  placeMismatches: { shard: string; player: string; last: string; expected: string; client: string }[];
  setBacks: {
    player: string;
    shard: string;
    seq: number;
    acked: number;
    at: number;
    droppedAt: number;
    killedAt?: number;
    /** The client-network fault the drop came in, if any (it does not explain a set-back: no state is lost with a connection). */
    clientFault?: string;
  }[];
  /** Every player hit by a client-network fault, and what became of their session. */
  clientFaults: ClientFaultOutcome[];
}

/** What became of one player's session after a client-network fault hit their connections. */
export interface ClientFaultOutcome {
  player: string;
  kind: FaultKind;
  /** The shard whose players the fault drew them from, and when it began. */
  shard?: string;
  at: number;
  /**
   * - `rode it out`: no drop (a short pause; or its session got off the stalled connection by a handoff or rejoin under way);
   * - `back`: dropped, and had a session again (a rejoin, or a handoff a rejoin led to) within the rejoin window;
   * - `late`: back, but after the rejoin window (the shard let the entity go by then);
   * - `not back`: dropped and never had a session again;
   * - `quit`: the player quit (the churn) before any of that;
   * - `unnoticed`: a stalled connection the client never gave up (no drop, no session elsewhere).
   */
  outcome: 'rode it out' | 'back' | 'late' | 'not back' | 'quit' | 'unnoticed';
  droppedAt?: number;
  backAt?: number;
}

/** A client-network fault's drop comes at most this long after its end (a kick held in a pause arrives at its release). */
const CLIENT_FAULT_DROP_MS = 2000;

/**
 * What became of each player a client-network fault hit (see ClientFaultOutcome): their first drop
 * from the fault's start to CLIENT_FAULT_DROP_MS after its end, and their next session after it.
 */
export function clientFaultOutcomes(
  events: readonly ClientEvent[],
  faults: readonly FaultRecord[],
  rejoinWindowMs: number,
): ClientFaultOutcome[] {
  const byPlayer = new Map<string, ClientEvent[]>();
  for (const e of events) {
    const list = byPlayer.get(e.p);
    if (list) list.push(e);
    else byPlayer.set(e.p, [e]);
  }
  const out: ClientFaultOutcome[] = [];
  for (const f of faults) {
    if (!CLIENT_FAULT_KINDS.includes(f.kind)) continue;
    for (const player of f.players ?? []) {
      const base = { player, kind: f.kind, ...(f.shard !== undefined ? { shard: f.shard } : {}), at: f.at };
      const after = (byPlayer.get(player) ?? []).filter((e) => e.at >= f.at - 50);
      const drop = after.find((e) => (e.e === 'dropped' || e.e === 'closed' || e.e === 'quit') && e.at <= f.endAt + CLIENT_FAULT_DROP_MS);
      if (drop?.e === 'quit') {
        out.push({ ...base, outcome: 'quit' });
        continue;
      }
      if (!drop) {
        // A stalled connection delivers nothing: a handoff or rejoin completed since came on another.
        const movedOn = after.some((e) => e.at >= f.at && (e.e === 'handoff' || e.e === 'rejoined'));
        out.push({ ...base, outcome: f.kind === 'client-stall' && !movedOn ? 'unnoticed' : 'rode it out' });
        continue;
      }
      const back = drop.e === 'dropped' ? after.find((e) => e.at >= drop.at && (e.e === 'rejoined' || e.e === 'handoff')) : undefined;
      out.push({
        ...base,
        outcome: !back ? 'not back' : back.at - drop.at > rejoinWindowMs ? 'late' : 'back',
        droppedAt: drop.at,
        ...(back ? { backAt: back.at } : {}),
      });
    }
  }
  return out;
}

/** Margin between a client's view of an arrival and the shard's events around it (ms). */
const MARGIN_MS = 500;
/** A SIGKILL this long after an event was queued may still have caught it unappended (the outbox flushes every 250 ms). */
const QUEUED_MS = 3000;

/** The SIGKILL of `shard` in [from, to], the first, if any. */
function killBetween(faults: readonly FaultRecord[], shard: string, from: number, to: number): number | undefined {
  return faults.find((f) => f.shard === shard && f.killedAt !== undefined && f.killedAt >= from && f.killedAt <= to)?.killedAt;
}

/** How long a restarted shard waits for its neighbours' claims and copies (docs/sharding.md). */
const SETTLE_WAIT_MS = 3000;
/** A neighbour's link reaches a restarted shard within this of its start (the dialler's backoff is capped at 2 s). */
const LINK_BACK_MS = 2500;
/** The observer polls who owns what about this often, and a poll may take 1.5 s. */
const POLL_SLACK_MS = 2000;

/**
 * A fault that cost `holder`'s copy of an entity it handed to `shard` its way back after `shard`
 * restarted (`run`): `holder` killed or drained from the handoff (`from`) until its link could
 * have reached the restarted shard (its copy died with it; one delivered is taken, its player
 * held back meanwhile), or stopped, or cut off from `shard`, while the restarted shard waited
 * (its copy came too late). The first, if any.
 */
function copyLost(
  faults: readonly FaultRecord[],
  holder: string,
  shard: string,
  from: number,
  run: { readyAt: number; startedAt?: number | undefined },
): FaultRecord | undefined {
  const { readyAt } = run;
  const until = readyAt + SETTLE_WAIT_MS;
  const delivered = (run.startedAt ?? readyAt) + LINK_BACK_MS;
  return faults.find((f) => {
    if (f.kind === 'link-cut' || f.kind === 'link-pause') {
      const between = (f.shard === holder && f.peer === shard) || (f.shard === shard && f.peer === holder);
      // A cut is over at once (the links come back): it counts only while the shard waits.
      return between && f.at <= until && f.endAt >= readyAt;
    }
    if (f.shard !== holder) return false;
    if (f.kind === 'pause') return f.at <= until && f.endAt >= readyAt;
    const diedAt = f.killedAt ?? f.at;
    return (f.kind === 'drain' || f.kind === 'kill' || f.kind === 'pg-pause-kill') && diedAt >= from && diedAt <= delivered;
  });
}

/**
 * The handoff into `shard` that its SIGKILL at `killedAt` cut short before the client resumed
 * there (so the client never saw it), as the observer's polls show it: the entity's last owner
 * other than `shard` before the kill, when it owned it until just before.
 */
function handoffSeenByPolls(
  segments: readonly { shards: string; from: number; to: number }[] | undefined,
  shard: string,
  killedAt: number,
): { from: string; at: number; seenAt: number } | undefined {
  if (!segments) return undefined;
  for (let i = segments.length - 1; i >= 0; i--) {
    const seg = segments[i] as { shards: string; from: number; to: number };
    if (seg.from > killedAt || seg.shards === shard) continue;
    return !seg.shards.includes('+') && seg.to >= killedAt - POLL_SLACK_MS ? { from: seg.shards, at: seg.to, seenAt: seg.to } : undefined;
  }
  return undefined;
}

/**
 * The entity went on from `shard` to another shard (the polls saw it there last before `shard`'s
 * SIGKILL at `killedAt`), which was SIGKILLed too, after adopting it and before its next run's link
 * could take the copy `shard` held back: the copy died with `shard`, the adoption with the other.
 * That shard and its kill, if so.
 */
function handedOnAndLost(
  segments: readonly { shards: string; from: number; to: number }[] | undefined,
  shard: string,
  killedAt: number,
  faults: readonly FaultRecord[],
  runs: readonly ShardRun[],
): { to: string; killedAt: number } | undefined {
  if (!segments) return undefined;
  const before = segments.filter((seg) => seg.from <= killedAt);
  const last = before.at(-1);
  const prior = before.at(-2);
  if (!last || !prior || last.shards === shard || last.shards.includes('+') || prior.shards !== shard) return undefined;
  const kill = faults.find(
    (f) => f.shard === last.shards && f.killedAt !== undefined && f.killedAt >= last.from - POLL_SLACK_MS && f.killedAt <= killedAt,
  );
  if (kill?.killedAt === undefined) return undefined;
  const next = runs.find((run) => run.shard === last.shards && run.spawnAt >= (kill.killedAt as number));
  if (next && killedAt > (next.startedAt ?? next.readyAt) + LINK_BACK_MS) return undefined;
  return { to: last.shards, killedAt: kill.killedAt };
}

/** How long PostgreSQL was cut or paused within [from, to] (an append then waits, queued). */
function pgOutageMs(faults: readonly FaultRecord[], from: number, to: number): number {
  let ms = 0;
  for (const f of faults) {
    if (f.kind !== 'pg-cut' && f.kind !== 'pg-pause' && f.kind !== 'pg-pause-kill') continue;
    ms += Math.max(0, Math.min(to, f.at + (f.ms ?? 0)) - Math.max(from, f.at));
  }
  return ms;
}

/** How long `shard` was stopped (a `pause` fault: SIGSTOP) within [from, to]: it appends nothing meanwhile. */
function pausedMs(faults: readonly FaultRecord[], shard: string, from: number, to: number): number {
  let ms = 0;
  for (const f of faults) {
    if (f.kind !== 'pause' || f.shard !== shard) continue;
    ms += Math.max(0, Math.min(to, f.at + (f.ms ?? 0)) - Math.max(from, f.at));
  }
  return ms;
}

/** Computes every check from the record. */
export function evaluate(r: SoakRecord): SoakFindings {
  const rows: CheckRow[] = [];
  const byPlayer = new Map<string, ClientEvent[]>();
  for (const e of r.events) {
    const list = byPlayer.get(e.p);
    if (list) list.push(e);
    else byPlayer.set(e.p, [e]);
  }
  const quitAt = new Map<string, number>();
  for (const e of r.events) if (e.e === 'quit') quitAt.set(e.p, e.at);
  const count = (kind: ClientEvent['e']) => r.events.filter((e) => e.e === kind).length;

  // --- players lost: a rejoin that brought a new entity, a session that ended, an entity owned nowhere ---
  const lost: SoakFindings['lost'] = [];
  const historyOf = (entity: number, at: number) =>
    (r.ownerHistory?.get(entity) ?? []).filter((seg) => seg.to >= at - 20_000 && seg.from <= at + 20_000);
  for (const [player, list] of byPlayer) {
    let entity: number | undefined;
    /** How the player got the entity they have: a fresh one by a join (on `shard`, at `at`), or by a handoff (`from` a shard). */
    let got: { fresh: boolean; shard: string; at: number; from?: string; committedBy?: number } | undefined;
    let dropped: Extract<ClientEvent, { e: 'dropped' }> | undefined;
    for (const e of list) {
      if (e.e === 'joined') {
        entity = e.entity;
        got = { fresh: true, shard: e.shard, at: e.at };
      } else if (e.e === 'handoff') {
        // A rejoin the shard answered with a redirect: the 'rejoined' that follows it judges (and
        // may explain) a new entity, as any rejoin's.
        if (e.viaRejoin && entity !== undefined && e.entity !== entity) continue;
        if (entity !== undefined && e.entity !== entity)
          lost.push({ player, at: e.at, entity, why: `handed over to ${e.to} with entity ${e.entity}, had ${entity}` });
        // The commit (from which the copy could be lost) came before the client's resume, by its gap at most.
        got = { fresh: false, shard: e.to, at: e.at, from: e.from, committedBy: e.at - e.gapMs - MARGIN_MS };
        entity = e.entity;
      } else if (e.e === 'dropped') dropped = e;
      else if (e.e === 'rejoined') {
        if (entity !== undefined && e.entity !== entity) {
          const killedAt = killBetween(r.faults, e.shard, (dropped?.at ?? e.at - e.downMs) - 2000, e.at);
          // Documented: a player who joined after the shard's last stored snapshot is in none, and a
          // SIGKILL loses them (docs/gameserver.md, the open places "lost with a crash").
          const unsaved =
            killedAt !== undefined &&
            got?.fresh === true &&
            got.shard === e.shard &&
            got.at >= killedAt - (r.snapshotIntervalMs + 1000 + pgOutageMs(r.faults, killedAt - 60_000, killedAt));
          // Documented too (docs/sharding.md, "Custody"): a player handed over just before the
          // SIGKILL comes back from the copy the shard they came from keeps, unless that shard was
          // down or cut off as well until after the player rejoined (the restarted shard waits for
          // it 3 s at most).
          const run = killedAt === undefined ? undefined : r.runs.find((run) => run.shard === e.shard && run.spawnAt >= killedAt);
          const readyAt = run?.readyAt ?? e.at;
          // The client may not have resumed there before the kill: the polls saw the handoff then.
          const handedIn =
            killedAt === undefined
              ? undefined
              : got?.fresh === false && got.shard === e.shard && got.from !== undefined && got.at <= killedAt
                ? { from: got.from, at: got.committedBy ?? got.at, seenAt: got.at }
                : handoffSeenByPolls(r.ownerHistory?.get(entity), e.shard, killedAt);
          const holderDown = handedIn && copyLost(r.faults, handedIn.from, e.shard, handedIn.at, run ?? { readyAt });
          const onward =
            killedAt === undefined || holderDown
              ? undefined
              : handedOnAndLost(r.ownerHistory?.get(entity), e.shard, killedAt, r.faults, r.runs);
          lost.push({
            player,
            at: e.at,
            entity,
            why: `rejoined ${e.shard} with entity ${e.entity}, had ${entity}`,
            ...(killedAt !== undefined ? { killedAt } : {}),
            ...(unsaved && got
              ? { explained: `joined ${e.shard} ${killedAt - got.at} ms before its SIGKILL, after its last stored snapshot` }
              : {}),
            ...(holderDown && handedIn && killedAt !== undefined
              ? {
                  explained: `handed over to ${e.shard} ${killedAt - handedIn.seenAt} ms before its SIGKILL by ${handedIn.from}, which held the copy and was ${holderDown.kind === 'link-cut' || holderDown.kind === 'link-pause' ? `cut off from it (${holderDown.kind})` : `down too (${holderDown.kind})`} from ${(holderDown.killedAt ?? holderDown.at) - killedAt} ms after the kill, the restarted shard ready at ${readyAt - killedAt} ms`,
                }
              : {}),
            ...(onward && killedAt !== undefined
              ? {
                  explained: `handed on by ${e.shard}, which held the copy, to ${onward.to}, SIGKILLed ${killedAt - onward.killedAt} ms before ${e.shard}'s own SIGKILL`,
                }
              : {}),
          });
          got = { fresh: true, shard: e.shard, at: e.at };
        }
        entity = e.entity;
      } else if (e.e === 'closed') lost.push({ player, at: e.at, entity, why: `session ended on ${e.shard}: ${e.code} ${e.reason}` });
    }
  }
  for (const c of r.finals) {
    if (c.ended) continue; // counted from its 'closed' event
    const owners = r.ownership.finalOwners.get(c.entity) ?? [];
    if (owners.length === 0) lost.push({ player: c.p, why: `entity ${c.entity} (on ${c.shard}) owned by no shard at the end` });
    else if (!owners.includes(c.shard))
      lost.push({ player: c.p, why: `entity ${c.entity} owned by ${owners.join(', ')}, client on ${c.shard}` });
  }
  for (const l of lost) if (!l.explained && l.entity !== undefined && l.at !== undefined) l.owners = historyOf(l.entity, l.at);
  const lostPlayers = new Set(lost.filter((l) => !l.explained).map((l) => l.player));
  const explainedLost = lost.filter((l) => l.explained).length;
  rows.push({
    check: 'players lost (new entity on a rejoin, session ended, or entity owned nowhere at the end)',
    count: lostPlayers.size,
    status: lostPlayers.size === 0 ? 'PASS' : 'FAIL',
    ...(explainedLost > 0
      ? {
          detail: `${explainedLost} more lost with a SIGKILL as documented: joined the shard after its last stored snapshot, or handed to it by a shard that was down or cut off too`,
        }
      : {}),
  });

  // --- players stuck at the end: not live, inputs unacknowledged, no snapshots; or never in ---
  const stuck = r.finals.filter((c) => !c.ended && (!c.live || c.unacknowledged > 0 || c.sinceSnapshotMs > 3000));
  const neverJoined = [...byPlayer].filter(([, list]) => !list.some((e) => e.e === 'joined')).map(([p]) => p);
  rows.push({
    check: 'players stuck at the end (not live, inputs unanswered, no snapshot for 3 s, or never joined)',
    count: stuck.length + neverJoined.length,
    status: stuck.length + neverJoined.length === 0 ? 'PASS' : 'FAIL',
    ...(neverJoined.length > 0 ? { detail: `never joined: ${neverJoined.slice(0, 5).join(', ')}` } : {}),
  });

  // --- ownership: one entity owned by two shards (the shards' own view, /viewer/state) ---
  const dupIds = new Set(r.ownership.duplicates.map((d) => d.id));
  rows.push({
    check: `entity owned by two shards in two polling rounds running (${r.ownership.rounds} rounds)`,
    count: dupIds.size,
    status: dupIds.size === 0 ? 'PASS' : 'FAIL',
  });

  // --- one entity id held by two players at once (clients' view of who has which id) ---
  const holdings = new Map<number, { player: string; from: number; to: number }[]>();
  for (const [player, list] of byPlayer) {
    let open: { entity: number; from: number } | undefined;
    const close = (at: number) => {
      if (!open) return;
      const h = holdings.get(open.entity) ?? [];
      h.push({ player, from: open.from, to: at });
      holdings.set(open.entity, h);
      open = undefined;
    };
    for (const e of list) {
      if (e.e === 'joined' || e.e === 'handoff' || e.e === 'rejoined') {
        if (open && open.entity === e.entity) continue;
        close(e.at);
        open = { entity: e.entity, from: e.at };
      } else if (e.e === 'quit' || e.e === 'closed') close(e.at);
    }
    close(r.endAt);
  }
  const sharedIds: SoakFindings['sharedIds'] = [];
  let reused = 0;
  for (const [id, hs] of holdings) {
    const players = new Set(hs.map((h) => h.player));
    if (players.size < 2) continue;
    reused++;
    const overlapping = new Set<string>();
    for (const a of hs)
      for (const b of hs)
        if (a.player !== b.player && a.from < b.to && b.from < a.to) {
          overlapping.add(a.player);
          overlapping.add(b.player);
        }
    if (overlapping.size > 0) sharedIds.push({ id, players: [...overlapping] });
  }
  rows.push({ check: 'entity id held by two players at once', count: sharedIds.length, status: sharedIds.length === 0 ? 'PASS' : 'FAIL' });
  rows.push({ check: 'entity ids handed out again to another player (not at once)', count: reused, status: 'info' });

  // --- custody copies back to 0 when idle ---
  const custodyLeft = Object.values(r.custody.final).reduce((a, b) => a + b, 0);
  rows.push({
    check: 'custody copies held when idle (aether_handoff_custody, all shards)',
    count: custodyLeft,
    status: custodyLeft === 0 ? 'PASS' : 'FAIL',
    detail: `most at once during the run: ${r.custody.max}`,
  });

  // --- every handoff a client saw, in both shards' streams ---
  const used = new Set<StreamEvent>();
  const streamOf = (shard: string) => r.streams.get(shard) ?? [];
  const findEvent = (shard: string, player: string, type: StreamEvent['type'], cause: string, from: number, to: number) =>
    streamOf(shard).find((s) => !used.has(s) && s.player === player && s.type === type && s.cause === cause && s.at >= from && s.at <= to);
  const runOf = (shard: string, at: number) =>
    r.runs
      .filter((run) => run.shard === shard && run.spawnAt <= at)
      .reduce<ShardRun | undefined>((a, b) => (!a || b.spawnAt > a.spawnAt ? b : a), undefined);
  const missingHandoffEvents: MissingHandoffEvent[] = [];
  let handoffs = 0;
  for (const [player, list] of byPlayer) {
    let previous: number | undefined;
    for (const e of list) {
      if (e.e === 'handoff') {
        handoffs++;
        const arrived = previous ?? e.at - 60_000;
        const from = arrived - MARGIN_MS;
        const to = e.at + MARGIN_MS;
        // A SIGKILL explains a missing event only if it came after the event was queued and
        // before it could be appended: the old shard's at its commit (after the client arrived
        // there: a kill before that would have dropped the client, a rejoin being its arrival);
        // the new shard's at the resume, just before the client's first snapshot from it — or,
        // when the client only got there by rejoining it (the new shard dropped right after the
        // resume), anywhere between the arrival before and the rejoin.
        // An event waits queued while PostgreSQL is out, and while its shard is stopped (SIGSTOP).
        const queuedFor = (shard: string) =>
          e.at +
          QUEUED_MS +
          pgOutageMs(r.faults, e.at - MARGIN_MS, e.at + 30_000) +
          pausedMs(r.faults, shard, e.at - MARGIN_MS, e.at + 30_000);
        const checks: [string, StreamEvent['type'], MissingHandoffEvent['event'], number, number][] = [
          [e.from, 'player_left', 'player_left handoff', arrived - 100, queuedFor(e.from)],
          [
            e.to,
            'player_joined',
            'player_joined handoff',
            e.viaRejoin ? arrived - 100 : e.at - MARGIN_MS,
            e.viaRejoin ? e.at : queuedFor(e.to),
          ],
        ];
        for (const [shard, type, event, killFrom, killTo] of checks) {
          const found = findEvent(shard, player, type, 'handoff', from, to);
          if (found) {
            used.add(found);
            continue;
          }
          const killedAt = killBetween(r.faults, shard, killFrom, killTo);
          const run = runOf(shard, e.at);
          missingHandoffEvents.push({
            player,
            from: e.from,
            to: e.to,
            at: e.at,
            shard,
            event,
            viaRejoin: e.viaRejoin,
            ...(killedAt !== undefined ? { killedAt } : {}),
            ...(run ? { sinceSpawnMs: e.at - run.spawnAt, sinceReadyMs: e.at - run.readyAt, runCause: run.cause } : {}),
            nearby: streamOf(shard).filter((s) => s.player === player && Math.abs(s.at - e.at) <= 10_000),
          });
        }
      }
      // A handoff's arrival is the resume, which came after the client's last snapshot from the
      // shard it left (it got the redirect then), not when it applied the new shard's first
      // snapshot: a client stalled in between may see the new shard hand it on in that snapshot.
      if (e.e === 'joined' || e.e === 'rejoined') previous = e.at;
      else if (e.e === 'handoff') previous = e.at - e.gapMs;
    }
  }
  for (const [event, label] of [
    ['player_left handoff', 'on the shard left'],
    ['player_joined handoff', 'on the shard reached'],
  ] as const) {
    const missing = missingHandoffEvents.filter((m) => m.event === event);
    const unexplained = missing.filter((m) => m.killedAt === undefined);
    rows.push({
      check: `handoffs seen by clients without \`${event}\` ${label} (not explained by a SIGKILL)`,
      count: unexplained.length,
      status: unexplained.length === 0 ? 'PASS' : 'FAIL',
      detail: `of ${handoffs} handoffs; ${missing.length - unexplained.length} more lost queued in a shard SIGKILLed right after`,
    });
  }

  // --- a player who quits is gone: nothing after close() ---
  const afterQuit: SoakFindings['afterQuit'] = [];
  for (const [player, q] of quitAt) {
    // After the quit in the order the clients' process emitted them: an event of the same
    // millisecond emitted before it (a handoff just done) is not after it.
    const own = byPlayer.get(player) ?? [];
    const seen = own.slice(own.findIndex((e) => e.e === 'quit') + 1).filter((e) => e.e !== 'quit');
    if (seen.length > 0) afterQuit.push({ player, quitAt: q, seen: seen.slice(0, 5) });
  }
  rows.push({
    check: 'players whose session went on after they quit (close())',
    count: afterQuit.length,
    status: afterQuit.length === 0 ? 'PASS' : 'FAIL',
  });

  // --- no false departures: `player_left` `player` for a player who did not quit ---
  const falseDepartures: SoakFindings['falseDepartures'] = [];
  let departures = 0;
  // A shard restarted after a SIGKILL restores from its snapshot a player who walked on since (the
  // handoff's player_left died with it). When that player's entity was then lost as documented (the
  // shard it went to was killed too), they play on elsewhere with a new one, and the restored
  // entity waits for them until its rejoin window ends: the `player_left` then is that loss's.
  const lostAsDocumented = new Set(lost.filter((l) => l.explained !== undefined).map((l) => l.player));
  const windowMs = r.rejoinWindowMs ?? 30_000;
  const restoredAfterKill = (shard: string, at: number) =>
    r.runs.some((run) => run.shard === shard && run.cause === 'kill' && run.spawnAt <= at && at <= run.readyAt + windowMs + QUEUED_MS);
  let restoredLeft = 0;
  for (const [shard, events] of r.streams) {
    for (const s of events) {
      if (s.type !== 'player_left' || s.cause !== 'player') continue;
      departures++;
      const q = quitAt.get(s.player);
      if (q !== undefined && s.at >= q - 2000) continue;
      if (lostAsDocumented.has(s.player) && restoredAfterKill(shard, s.at)) restoredLeft++;
      else falseDepartures.push({ shard, event: s, ...(q !== undefined ? { quitAt: q } : {}) });
    }
  }
  rows.push({
    check: '`player_left` `player` in a stream for a player who had not quit',
    count: falseDepartures.length,
    status: falseDepartures.length === 0 ? 'PASS' : 'FAIL',
    detail: `of ${departures}; ${quitAt.size} players quit${restoredLeft > 0 ? `; ${restoredLeft} more the end of a restored entity's rejoin window, its player lost as documented and playing on elsewhere` : ''}`,
  });

  // --- at the end, the streams' places are where the clients are ---
  const finalShard = new Map(r.finals.filter((c) => !c.ended).map((c) => [c.p, c.shard]));
  const placeMismatches: SoakFindings['placeMismatches'] = [];
  for (const [shard, events] of r.streams) {
    const last = new Map<string, StreamEvent>();
    for (const s of events) last.set(s.player, s);
    const players = new Set([...last.keys(), ...[...finalShard].filter(([, s]) => s === shard).map(([p]) => p)]);
    for (const player of players) {
      const expected = finalShard.get(player) === shard ? 'player_joined' : 'player_left';
      const got = last.get(player)?.type ?? 'none';
      if (got === expected || (expected === 'player_left' && got === 'none')) continue;
      const seen = (byPlayer.get(player) ?? [])
        .slice(-2)
        .map((e) => `${e.e}${'shard' in e ? ` ${e.shard}` : ''}${e.e === 'handoff' ? ` ${e.from}→${e.to}` : ''}`);
      placeMismatches.push({
        shard,
        player,
        last: got === 'none' ? 'none' : `${got} ${last.get(player)?.cause}`,
        expected,
        client: seen.join(', '),
      });
    }
  }
  rows.push({
    check: "players whose last event in a shard's stream disagrees with where their client is at the end",
    count: placeMismatches.length,
    status: placeMismatches.length === 0 ? 'PASS' : 'FAIL',
  });

  // --- set back: a rejoin's state older than what the shard had acknowledged ---
  const setBacks: SoakFindings['setBacks'] = [];
  for (const [player, list] of byPlayer) {
    let dropped: Extract<ClientEvent, { e: 'dropped' }> | undefined;
    for (const e of list) {
      if (e.e === 'dropped') dropped = e;
      if (e.e !== 'rejoined' || e.seq >= e.acked) continue;
      const droppedAt = dropped?.at ?? e.at - e.downMs;
      const killedAt = killBetween(r.faults, e.shard, droppedAt - 2000, e.at);
      const clientFault = r.faults.find(
        (f) =>
          CLIENT_FAULT_KINDS.includes(f.kind) &&
          f.players?.includes(player) &&
          droppedAt >= f.at - 50 &&
          droppedAt <= f.endAt + CLIENT_FAULT_DROP_MS,
      );
      setBacks.push({
        player,
        shard: e.shard,
        seq: e.seq,
        acked: e.acked,
        at: e.at,
        droppedAt,
        ...(killedAt !== undefined ? { killedAt } : {}),
        ...(clientFault ? { clientFault: `${clientFault.kind} at ${clientFault.at}` } : {}),
      });
    }
  }
  const unexplainedSetBacks = setBacks.filter((s) => s.killedAt === undefined);
  rows.push({
    check: 'rejoins set back (state older than acknowledged) not explained by a SIGKILL of that shard',
    count: unexplainedSetBacks.length,
    status: unexplainedSetBacks.length === 0 ? 'PASS' : 'FAIL',
    detail: `${setBacks.length - unexplainedSetBacks.length} set back by a SIGKILL (documented: what changed since the last stored snapshot is lost)`,
  });

  // --- players whose network failed: each back, with the same entity (the players-lost check), within the rejoin window ---
  const clientFaults = clientFaultOutcomes(r.events, r.faults, r.rejoinWindowMs ?? 30_000);
  const outcomes = (o: ClientFaultOutcome['outcome']) => clientFaults.filter((c) => c.outcome === o);
  const notBack = [...outcomes('not back'), ...outcomes('late')];
  const longestBack = Math.max(0, ...clientFaults.map((c) => (c.backAt ?? 0) - (c.droppedAt ?? c.backAt ?? 0)));
  rows.push({
    check: 'players hit by a client-network fault not back within the rejoin window',
    count: notBack.length,
    status: notBack.length === 0 ? 'PASS' : 'FAIL',
    detail:
      `of ${clientFaults.length} hit by ${r.faults.filter((f) => CLIENT_FAULT_KINDS.includes(f.kind)).length} faults: ` +
      `${outcomes('back').length} dropped and back (the longest in ${longestBack} ms), ${outcomes('rode it out').length} rode it out, ` +
      `${outcomes('quit').length} quit`,
  });
  const stalled = clientFaults.filter((c) => c.kind === 'client-stall');
  const unnoticed = outcomes('unnoticed');
  const longestSilence = Math.max(0, ...stalled.map((c) => (c.droppedAt ?? c.at) - c.at));
  rows.push({
    check: 'players whose connection stalled and whose client never gave it up',
    count: unnoticed.length,
    status: unnoticed.length === 0 ? 'PASS' : 'FAIL',
    detail: `of ${stalled.length} stalled; the longest from the stall to the drop: ${longestSilence} ms`,
  });

  // --- what happened ---
  // --- shard processes that exited with no fault stopping them: a crash, or a kill from outside ---
  const deaths = r.faults.filter((f) => f.kind === 'died');
  rows.push({
    check: 'shard processes that exited outside a fault (started again)',
    count: deaths.length,
    status: deaths.length === 0 ? 'PASS' : 'FAIL',
    ...(deaths.length > 0 ? { detail: deaths.map((d) => `${d.shard}: ${d.note ?? ''}`).join('; ') } : {}),
  });

  const injected = r.faults.filter((f) => f.kind !== 'died');
  const byKind = new Map<string, number>();
  for (const f of injected) byKind.set(f.kind, (byKind.get(f.kind) ?? 0) + 1);
  rows.push({
    check: 'faults injected',
    count: injected.length,
    status: 'info',
    detail: [...byKind].map(([k, n]) => `${k} ${n}`).join(', '),
  });
  rows.push({
    check: 'players joined',
    count: count('joined'),
    status: 'info',
    detail: `${count('join-failed')} join attempts refused and retried`,
  });
  rows.push({ check: 'players quit (churn)', count: count('quit'), status: 'info' });
  rows.push({
    check: 'handoffs seen by clients',
    count: handoffs,
    status: 'info',
    detail: `${count('handoff-failed')} handoffs failed and rejoined`,
  });
  const kicks = new Map<string, number>();
  for (const e of r.events) if (e.e === 'kicked') kicks.set(e.reason, (kicks.get(e.reason) ?? 0) + 1);
  rows.push({
    check: 'connections dropped and rejoined',
    count: count('rejoined'),
    status: 'info',
    detail: `${count('dropped')} drops; kicks: ${[...kicks].map(([k, n]) => `${k} ${n}`).join(', ') || 'none'}`,
  });
  return { rows, lost, stuck, sharedIds, missingHandoffEvents, afterQuit, falseDepartures, placeMismatches, setBacks, clientFaults };
}
