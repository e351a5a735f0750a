import { randomBytes } from 'node:crypto';
import { aethex } from '@aethex/proto';
import type { Logger } from '@aethex/runtime';
import { redirectUrl } from '../config.js';
import type { EntityTransfer, ShardEngine } from '../engine.js';
import type { ShardMetrics } from '../metrics.js';
import { LogBudget, REFUSED_LINES } from '../net/rate-limit.js';
import { KIND_PLAYER, MAX_GAME_STATE_BYTES, MODE_GHOST, MODE_OFFERED, MODE_OWNED } from '../sim/world.js';
import type { ShardLinks } from './links.js';
import { distanceToRect, inRect, type Neighbour, type ShardPlacement, shardOfId } from './map.js';

const { ReasonCode } = aethex.v1;
/** A rolled-back entity is not offered again sooner (a full or unreachable neighbour). */
const RETRY_AFTER_ROLLBACK_MS = 250;
/**
 * Each neighbour is sent every ghost of ours near it anew at least this often (a `full` update),
 * not only what changed: one it could not take (its entity slots full, or a player took the slot:
 * `ShardEngine.roomForPlayer`) or lost would otherwise stay missing while it stands still, and one
 * it holds that we no longer own goes.
 */
export const GHOST_REFRESH_MS = 5000;
/**
 * How long a shard keeps its copy of an entity it handed over while the neighbour has not said it
 * stored it (HandoffStored). The neighbour snapshots within a second of an adoption; longer means
 * its store is down (or the answer was lost with a link), and a crash after this loses the entity.
 */
export const CUSTODY_MS = 60_000;
/** Entities per HandoffCustody message: each may carry 4 KiB of game state, the link takes 16 MiB. */
const CUSTODY_BATCH = 128;
/**
 * How long entities handed back wait for the outbox to say whether their players left before they
 * are taken anyway (their players are refused NOT_READY meanwhile): a store that does not answer
 * within it is treated as one that cannot be read.
 */
export const CUSTODY_LOOKUP_MS = 2000;
/**
 * How long after its start a restored shard refuses (NOT_READY) a rejoining player who had an
 * entity (`Join.entity_id`) and has none here (nor one handed in, nor a redirect for their join),
 * while a neighbour's claim is not in: that neighbour may hand the entity back (`HandoffCustody`)
 * once its link comes up — a neighbour paused or cut off past the settle time. Past it the player
 * joins afresh.
 */
export const ENTITY_WAIT_MS = 10_000;
/**
 * Copies kept at most (each holds up to 4 KiB of game state): 22 s of 1,500 handoffs a second
 * towards neighbours whose store is down. Past it the oldest go, as after CUSTODY_MS.
 */
export const MAX_CUSTODY = 32_768;
/** HandoffStored entries kept for a neighbour whose link is down, at most (the oldest go). */
const MAX_UNSENT_STORED = 65_536;
/** Released ids kept for a neighbour whose link is down, at most (past it the oldest are never reused). */
const MAX_UNSENT_RELEASED = 65_536;
/** Claims of rejoined restored entities kept per neighbour, at most (the oldest go). */
const MAX_REJOIN_CLAIMS = 4096;
/**
 * How long after adopting an entity whose former owner keeps a copy this shard holds back its id
 * from going home when it leaves for good: past the copy's CUSTODY_MS (counted by the former
 * owner from its commit, which came first), with a second for the former owner's tick.
 */
const COPY_HOLD_MS = CUSTODY_MS + 1000;

export interface ShardingOptions {
  engine: ShardEngine;
  placement: ShardPlacement;
  /** Hysteresis: how far past the border (world units) a player goes before it is offered. */
  margin: number;
  offerTimeoutMs: number;
  resumeTimeoutMs: number;
  /** Snapshot position quantum: ghosts are re-sent only when they moved by at least this. */
  positionScale: number;
  log: Logger;
  metrics?: ShardMetrics;
  /**
   * `handoff.redirect_url`: where clients are sent to reach a neighbour ({name}, {address}); empty:
   * `ws://<its address in the shard map>`.
   */
  redirectUrl?: string;
  /** Tells a session's client to continue on the neighbour (the gateway sends HandoffRedirect). */
  redirect(sessionId: number, redirect: aethex.v1.IHandoffRedirect): void;
  /**
   * The shard restarted from a snapshot: it admits no player until every neighbour has said which
   * of its restored players it owns now, and handed back what this shard's previous run adopted
   * and never stored (or `settleTimeoutMs` passed), so none is owned twice and none is lost.
   */
  restored?: boolean;
  /**
   * Which of these players left this shard after the snapshot it restarted from (the outbox says
   * so): an entity a neighbour hands back (HandoffCustody) is not brought back for them.
   */
  departedSince?: (players: string[]) => Promise<Set<string>>;
  /** Default 3,000 ms. */
  settleTimeoutMs?: number;
  /**
   * How long a neighbour keeps restored players waiting (`engine.rejoin_window_ms`, default
   * 30,000): for this long after a link to a neighbour comes up, each player adopted here is
   * claimed to it again (see `adopt`).
   */
  rejoinWindowMs?: number;
  now?: () => number;
}

/** An offer this shard made and has not decided yet. */
interface Offer {
  offerId: number;
  to: Neighbour;
  entity: EntityTransfer;
  playerId: string;
  at: number;
}

/** An entity a neighbour offered to this shard. */
interface Incoming {
  from: Neighbour;
  /** The sender's process run (link epoch): offer ids are unique only within one. */
  epoch: number;
  offerId: number;
  entity: EntityTransfer;
  playerId: string;
  token: string;
  at: number;
  /** Owned here (committed by the sender, or its client resumed with the token). */
  adopted: boolean;
  /** The sender keeps a copy until told a snapshot holding it is stored (HandoffStored). */
  custody: boolean;
}

/**
 * An entity this shard handed over whose new owner has not said it stored it: sent back to the
 * owner's next run if that one comes up first (see HandoffCustody).
 */
interface Custody {
  to: Neighbour;
  /** The owner's run that adopted it (its link epoch); re-sent to a later run, then that one's. */
  epoch: number;
  offerId: number;
  playerId: string;
  /** As committed: the offer's, with the state and flags the game set during the offer. */
  entity: EntityTransfer;
  at: number;
}

/** An entity adopted here whose former owner keeps a copy until a snapshot holding it is stored. */
interface Unstored {
  from: Neighbour;
  /** The former owner's run: its offer ids are unique only within it. */
  epoch: number;
  offerId: number;
  entityId: number;
  /** `Sharding.adoptions` right after it: a snapshot captured when the count was at least this holds it. */
  mark: number;
  /** When (`now`): past CUSTODY_MS the former owner has dropped its copy, and this entry goes. */
  at: number;
}

/** What a commit says the game changed during the offer: a key present is a change (state undefined: cleared). */
interface LateChanges {
  state?: Uint8Array | undefined;
  flags?: number;
}

/** Where an offer's entry is found: offer ids are unique per sender and sender epoch. */
const offerKey = (from: Neighbour, epoch: number, offerId: number) => `${from.shard}:${epoch}:${offerId}`;

/** What a neighbour was last told about one of our entities near its border. */
interface Mirrored {
  qx: number;
  qy: number;
  kind: number;
  flags: number;
}

/** What is still unsure about a decided offer: re-sent after a reconnect until it is old. */
interface Decision {
  to: Neighbour;
  msg: aethex.v1.IShardMessage;
  at: number;
}

/**
 * One shard's part of a seamless world: mirrors its entities near each border to the neighbour
 * as ghosts, applies the neighbours' ghosts, and hands players over when they walk across a
 * border (past the hysteresis margin).
 *
 * Handoff: the owner freezes the entity and offers it (state and last input sequence); the
 * neighbour holds it, unsimulated, and accepts with a resume token; the owner commits — the
 * entity becomes a ghost here, the neighbour is told to adopt it, and the client is redirected
 * with the token. The neighbour adopts on the commit or on the client's resume, whichever comes
 * first: both exist only after the owner's decision, so an entity is never owned twice. An offer
 * not accepted within the timeout is rolled back (the entity thaws here, with the inputs that
 * arrived meanwhile); the neighbour forgets a held entity on the abort, or when no commit and no
 * resume came within the resume timeout.
 */
export class Sharding {
  private links: ShardLinks | undefined;
  private readonly neighbours: Neighbour[];
  private readonly offers = new Map<number, Offer>(); // by entity id
  /** The shard drains (`stopAccepting`): offers are refused. */
  private draining = false;
  /** Entities whose offer was rolled back: not offered again before this time (pruned after it). */
  private readonly retryAt = new Map<number, number>();
  /** Unique within this process run only: neighbours tell runs apart by the link epoch. */
  private nextOfferId = 1;
  private readonly incoming = new Map<string, Incoming>(); // by resume token
  private readonly incomingByOffer = new Map<string, string>(); // offerKey → token
  /** player → token: one entity of a player on its way here at a time (`onOffer`). */
  private readonly incomingByPlayer = new Map<string, string>();
  /**
   * Offers whose player resumed here before the sender's commit arrived (offerKey → the entity and
   * the game's write counts at its adoption): the commit may still bring the state and flags the
   * game set during the offer. Forgotten after `resumeTimeoutMs`.
   */
  private readonly resumedBeforeCommit = new Map<string, { entityId: number; stateWrites: number; flagWrites: number; at: number }>();
  private readonly mirrored = new Map<number, Map<number, Mirrored>>(); // neighbour → entity → last sent
  private readonly needFull = new Set<number>();
  /** When each neighbour was last sent a full ghost update (GHOST_REFRESH_MS). */
  private readonly fullSentAt = new Map<number, number>();
  /**
   * The ghosts each neighbour owns here (neighbour → ghost ids), and the neighbour each ghost is
   * owned by: one at a time, the last to send it. A player crossing between two neighbours of this
   * shard is sent by both for a moment, and their messages arrive in either order: the new owner's
   * upsert may come before the old one's removal, which must then not remove it, or before the old
   * one's last upsert, which must then not take it back: `ghostGeneration` is the owner's generation
   * of the entity (GhostEntity.generation: its changes of owner plus one), and an upsert from
   * another neighbour with a lower one is late.
   */
  private readonly ghostsFrom = new Map<number, Set<number>>();
  private readonly ghostOwner = new Map<number, number>();
  private readonly ghostGeneration = new Map<number, number>();
  /** Neighbour → the epoch (run) of it already warned of ghosts or offers naming ids far past ours. */
  private readonly warnedNeverIssued = new Map<number, number>();
  /**
   * Lines about a neighbour's data that is refused, entity by entity (an invalid ghost, an
   * unexpected message): a neighbour with a bug sends them every tick, so a burst, then one a second.
   */
  private readonly refusedLines = new LogBudget(REFUSED_LINES.perSecond, REFUSED_LINES.burst, performance.now());
  private readonly epochs = new Map<number, number>();
  private readonly decisions: Decision[] = [];
  /** Neighbours this shard sent its ownership claim to, and when (see `adopt`). */
  private readonly claimedTo = new Map<number, { n: Neighbour; at: number }>();
  private readonly now: () => number;
  /** Neighbours whose ownership claim a restored shard still waits for. */
  private readonly claimsAwaited = new Set<number>();
  /** Entities handed over whose new owner has not said it stored them (see `Custody`), by entity id. */
  private readonly custody = new Map<number, Custody>();
  /** Entities adopted here since the last stored snapshot whose former owner keeps a copy, in adoption order. */
  private unstored: Unstored[] = [];
  /**
   * Entities the neighbours claimed since this shard started, while a neighbour may still hand back
   * what its previous run adopted (CUSTODY_MS, or the rejoin window if longer): those are not taken back.
   */
  private readonly claimedSinceStart = new Set<number>();
  /**
   * Entities taken back from a copy (HandoffCustody) in this run, with the copy's owner generation:
   * a second copy of one (the entity went on and came back before the crash) replaces it only if newer.
   */
  private readonly takenGeneration = new Map<number, number>();
  /** HandoffStored entries for a neighbour run our link to was down for (neighbour → its run and them): sent when it is up. */
  private readonly unsentStored = new Map<number, { epoch: number; handoffs: aethex.v1.IHandedOver[] }>();
  /**
   * Entities adopted here whose former owners may still keep a copy, and until when on this shard's
   * clock (COPY_HOLD_MS after each adoption; oldest first): `any` for every such owner, `others`
   * for those that are not the shard whose range the id is. A copy handed back to a later run of
   * this shard would bring the entity back there: until then its id is not handed out again, here
   * or at its home — at its home once `others` passed, as the home never reuses an id it keeps a
   * copy of (`takeIdsReleased`).
   */
  private readonly copiesUntil = new Map<number, { any: number; others: number }>();
  /** Ids that left for good here, held back by `copiesUntil`: released at a later snapshot. */
  private heldReleases: { id: number; at: number }[] = [];
  /**
   * HandoffStored entries sent to each neighbour run in the last CUSTODY_MS (neighbour → its run
   * and them, oldest first): sent again whenever our link to that run comes up again. A link that
   * dies loses what it had buffered; the neighbour would keep its copy and hand it back — older than
   * what this shard stored — to our next run. Answers it has had already change nothing.
   */
  private readonly recentStored = new Map<number, { epoch: number; handoffs: { h: aethex.v1.IHandedOver; at: number }[] }>();
  /** Ids of a neighbour's range released here while our link to it was down (neighbour → ids): sent when it is up. */
  private readonly unsentReleased = new Map<number, number[]>();
  /**
   * Restored entities rejoined here (neighbour → ids and when): claimed to each neighbour at once,
   * and again with every link-up claim to it within `claimsKeptMs` (the rejoin window or
   * CUSTODY_MS, whichever is longer: a copy handed back may come that late) — the link was down
   * (`sent` false), or died with the claim in its buffers — even if their players left here
   * meanwhile, when `claimedPlayers` no longer names them and the neighbour's stale copy would
   * otherwise end in a second player_left. Not to a neighbour that has the entity since: one it
   * was handed to from here, or one that claims to play it (its copy is newer than this claim).
   * Nor again, to a neighbour of a build that ignores `played_earlier`, once it went out and the
   * entity was handed on (`handedOnAt`): where it is now, this shard does not know, and a
   * neighbour it reached since and dropped on keeps it (a new run of it that restored it keeps it
   * too: the handoff came before that run started). By id, in the order made (a second rejoin
   * of one moves it last). `handedOnAt`: when it was last handed on from here, by the engine's
   * `wallClock` — its play here ended then, whichever rejoin or adoption it began with — sent
   * with a claim of it (`played_earlier`).
   */
  private readonly rejoinClaims = new Map<number, Map<number, { at: number; sent: boolean; handedOnAt?: number }>>();
  /** The run of each neighbour our link reached last (its welcome's epoch). */
  private readonly outEpochs = new Map<number, number>();
  /** Copies dropped for MAX_CUSTODY since the last warning. */
  private custodyOverflow = 0;
  /** Handed-back entities waiting for the outbox to say whether their player left (see `takeCustody`). */
  private custodyPending = 0;
  /** Their players (player → copies pending): not admitted until then, even once settled. */
  private readonly custodyPlayers = new Map<string, number>();
  private readonly startedAt: number;

  constructor(private readonly o: ShardingOptions) {
    this.neighbours = o.placement.neighbours;
    this.now = o.now ?? (() => performance.now());
    for (const n of this.neighbours) {
      this.mirrored.set(n.shard, new Map());
      this.ghostsFrom.set(n.shard, new Set());
      if (o.restored) this.claimsAwaited.add(n.shard);
    }
    this.startedAt = this.now();
    // A ghost the engine dropped to make room for a player is no neighbour's here any more (the
    // neighbour's next full update sends it again).
    o.engine.onGhostEvicted = (id) => this.disownGhost(id);
    // Two shards restarted from snapshots may both hold a player waiting to rejoin (each restores
    // where the player was when it saved, and neither claims a restored one): the one the player
    // comes back to claims the entity, and the other drops its copy — which would otherwise keep
    // the player's offers out ("already here") and end in a false player_left at its rejoin window.
    o.engine.onRestoredRejoined = (id) => {
      for (const n of this.neighbours) {
        // Kept whether it goes now or not: a link that dies loses what it had buffered.
        const sent = (this.links?.send(n, { ownershipClaim: { entityIds: [id] } }) ?? 0) > 0;
        const kept = this.rejoinClaims.get(n.shard) ?? new Map();
        kept.delete(id);
        kept.set(id, { at: this.now(), sent });
        if (kept.size > MAX_REJOIN_CLAIMS) kept.delete(kept.keys().next().value as number);
        this.rejoinClaims.set(n.shard, kept);
      }
    };
  }

  /** Whether players may join: every neighbour's claim and handed-back entities are in, or the settle timeout passed. */
  get settled(): boolean {
    return (this.claimsAwaited.size === 0 && this.custodyPending === 0) || this.now() - this.startedAt > (this.o.settleTimeoutMs ?? 3000);
  }

  /**
   * Why `playerId` may not join yet, or undefined: the shard has not settled, or a neighbour handed
   * their entity back and it is not taken yet (the outbox is still being asked whether they left;
   * at most CUSTODY_LOOKUP_MS), or — a rejoin of a player who had an entity (`hadEntity`, not 0)
   * and has none here, nor one handed in here, nor a redirect waiting for their join — a neighbour
   * that may still hand it back has not sent its claim, within ENTITY_WAIT_MS of the start. Let in
   * first, they would get a fresh entity and lose theirs.
   */
  notAdmitting(playerId: string, hadEntity = 0): string | undefined {
    if (!this.settled) return 'the shard is starting; try again shortly';
    if (this.custodyPlayers.has(playerId)) return 'your entity is being handed back to this shard; join again shortly';
    const { engine } = this.o;
    if (
      hadEntity !== 0 &&
      this.claimsAwaited.size > 0 &&
      this.now() - this.startedAt < ENTITY_WAIT_MS &&
      !engine.hasPlace(playerId) &&
      // The join takes the entity handed in (`claimForJoin`), or is redirected to where it went.
      !this.incomingByPlayer.has(playerId) &&
      !engine.redirectsJoin(playerId)
    )
      return 'a neighbour that may hand your entity back to this shard has not reconnected yet; join again shortly';
    return undefined;
  }

  attach(links: ShardLinks): void {
    this.links = links;
  }

  // --- link events ------------------------------------------------------------------------------

  onOutboundUp(n: Neighbour, epoch: number): void {
    this.outEpochs.set(n.shard, epoch);
    // Whatever the neighbour held of ours may be gone (it restarted, or dropped us): start over.
    this.needFull.add(n.shard);
    // What it was not told while the link was down, if it is the same run (a new one keeps no copies).
    const unsent = this.unsentStored.get(n.shard);
    this.unsentStored.delete(n.shard);
    const recent = this.recentStored.get(n.shard);
    if (recent && recent.epoch === epoch) {
      const cutoff = this.now() - CUSTODY_MS;
      const kept = recent.handoffs.filter((r) => r.at > cutoff);
      this.recentStored.set(n.shard, { epoch, handoffs: kept });
      this.transmitStored(
        n,
        kept.map((r) => r.h),
      );
    } else this.recentStored.delete(n.shard);
    if (unsent && unsent.epoch === epoch) this.sendStored(n, epoch, unsent.handoffs);
    // Its ids that left for good here while the link was down (any run of it takes them).
    const released = this.unsentReleased.get(n.shard);
    this.unsentReleased.delete(n.shard);
    if (released) this.sendReleased(n, released);
    // A new run of it: what its previous run handed us and its player never resumed here becomes a
    // copy to hand back (below), not a claim.
    this.returnUnresumed(n, epoch);
    // What its previous run adopted from us and never said it stored goes back, before our claim
    // (which it waits for before admitting players).
    this.handBack(n, epoch);
    // And it may have restarted from a snapshot in which some of our players were still its own.
    const owned = new Set(this.o.engine.claimedPlayers());
    const since = this.now() - this.claimsKeptMs;
    // Handed on from here since (and not waiting here again): played on a neighbour, not away —
    // and played here until it was handed on, so a copy whose player dropped there later stays.
    const handedOn = new Set<number>();
    const playedEarlier: aethex.v1.IPlayedEarlier[] = [];
    // One that went out and was handed on since goes again (its link may have died with it
    // buffered, or with the run it went to) only to a neighbour that reads `played_earlier`: an
    // older build would drop a copy the entity reached it with since, through a third shard, where
    // its player dropped. (A new run keeps such a copy restored from its snapshot, or handed back,
    // if the handoff came before it started: `dropDormant`.)
    const going = [...(this.rejoinClaims.get(n.shard) ?? [])].filter(
      ([, c]) => c.at > since && (!(c.sent && c.handedOnAt !== undefined) || (this.links?.takesPlayedEarlier(n) ?? false)),
    );
    // Adopted and not resumed yet: on their way here, as good as played here (also when a claim
    // held back names them: their player rejoined here, walked on and came back — its play here did
    // not end when it was handed on, so it is no `played_earlier`).
    const adopted = new Set<number>();
    for (const inc of this.incoming.values()) if (inc.adopted) adopted.add(inc.entity.entityId);
    for (const [id, c] of going) {
      if (c.handedOnAt !== undefined && !owned.has(id) && !adopted.has(id)) {
        handedOn.add(id);
        playedEarlier.push({ entityId: id, handedOnAtMs: c.handedOnAt });
      }
      owned.add(id);
    }
    const away = [...owned].filter((id) => !adopted.has(id) && !handedOn.has(id) && !this.o.engine.playsHere(id));
    for (const id of adopted) owned.add(id);
    // When those of them whose player dropped here did: the neighbour keeps the newer copy.
    const awayDroppedAt = [...this.o.engine.droppedTimes(away)].map(([entityId, at]) => ({ entityId, droppedAtMs: at }));
    if ((this.links?.send(n, { ownershipClaim: { entityIds: [...owned], awayIds: away, playedEarlier, awayDroppedAt } }) ?? 0) > 0)
      for (const [, c] of going) c.sent = true;
    // The neighbour may keep its copy of those (a player who dropped there too): a rejoin here
    // must claim them again, or that copy outlives the player playing here.
    this.o.engine.claimedAway(away);
    this.claimedTo.set(n.shard, { n, at: this.now() });
    const cutoff = this.now() - this.o.resumeTimeoutMs;
    for (const d of this.decisions) if (d.to === n && d.at >= cutoff) this.links?.send(n, d.msg);
  }

  onInboundUp(n: Neighbour, epoch: number): void {
    const previous = this.epochs.get(n.shard);
    this.epochs.set(n.shard, epoch);
    if (previous !== undefined && previous !== epoch) {
      // What it offered before stays held under its old epoch, out of reach of its new offers,
      // commits and aborts: an adopted entity until its player resumes, and an unadopted one
      // because its commit may have reached the client but not us. Both go after the resume timeout,
      // or when the new run offers that player again (`onOffer`).
      this.o.log.info({ neighbour: n.name }, 'neighbour restarted; its ghosts are dropped');
      this.dropGhosts(n);
    }
  }

  /** The epoch of the neighbour's process whose messages arrive now (0 before its first link). */
  private epochOf(n: Neighbour): number {
    return this.epochs.get(n.shard) ?? 0;
  }

  onInboundDown(n: Neighbour): void {
    this.dropGhosts(n);
  }

  /** Drops the ghosts `n` owns (those another neighbour sent since are that one's, and stay). */
  private dropGhosts(n: Neighbour): void {
    const ids = this.ghostsFrom.get(n.shard) as Set<number>;
    for (const id of ids) {
      this.ghostOwner.delete(id);
      this.ghostGeneration.delete(id);
      this.o.engine.removeGhost(id);
    }
    ids.clear();
    this.o.metrics?.ghosts.set({ neighbour: n.name }, 0);
  }

  /** The ghost `id` is `n`'s from now on (at `generation`), no longer the neighbour's that sent it before. */
  private ownGhost(n: Neighbour, id: number, generation: number): void {
    const previous = this.ghostOwner.get(id);
    if (previous !== undefined && previous !== n.shard) this.disownGhost(id);
    this.ghostGeneration.set(id, generation);
    if (previous === n.shard) return;
    this.ghostOwner.set(id, n.shard);
    (this.ghostsFrom.get(n.shard) as Set<number>).add(id);
  }

  /**
   * Whether `n`'s upsert of `id` at `generation` comes from an owner the ghost has since left. A
   * generation of 0 (a build before generations) is unknown and compares with nothing: as before
   * generations, the last sender wins.
   */
  private leftBehind(n: Neighbour, id: number, generation: number): boolean {
    const owner = this.ghostOwner.get(id);
    const current = this.ghostGeneration.get(id) ?? 0;
    return owner !== undefined && owner !== n.shard && generation > 0 && current > 0 && generation < current;
  }

  /** `id` is no neighbour's ghost any more (removed, or adopted here). */
  private disownGhost(id: number): void {
    const owner = this.ghostOwner.get(id);
    if (owner === undefined) return;
    this.ghostOwner.delete(id);
    this.ghostGeneration.delete(id);
    const ids = this.ghostsFrom.get(owner) as Set<number>;
    ids.delete(id);
    const n = this.neighbours.find((x) => x.shard === owner);
    if (n) this.o.metrics?.ghosts.set({ neighbour: n.name }, ids.size);
  }

  /**
   * Whether a neighbour's ghost or offer names an id of this shard's own range so far past its
   * counter that it cannot be one an earlier run of this shard handed out (`World.catchUp`, which
   * moves the counter past one that can): a bug or a forgery, refused, since taking it would
   * spend this shard's ids. Logged once per neighbour run.
   */
  private neverIssuedHere(from: Neighbour, entityId: number): boolean {
    if (this.o.engine.world.catchUp(entityId)) return false;
    const epoch = this.epochOf(from);
    if (this.warnedNeverIssued.get(from.shard) !== epoch) {
      this.warnedNeverIssued.set(from.shard, epoch);
      this.o.log.warn(
        { from: from.name, entity: entityId, nextId: this.o.engine.world.nextEntityId },
        "neighbour named an entity id of this shard's range far past any it handed out; refused (not logged again for this neighbour run)",
      );
    }
    return true;
  }

  onMessage(from: Neighbour, msg: aethex.v1.ShardMessage): void {
    switch (msg.body) {
      case 'ghostUpdate':
        this.applyGhosts(from, msg.ghostUpdate as aethex.v1.GhostUpdate);
        break;
      case 'handoffOffer':
        this.onOffer(from, msg.handoffOffer as aethex.v1.HandoffOffer);
        break;
      case 'handoffAccept':
        this.onAccept(from, msg.handoffAccept as aethex.v1.HandoffAccept);
        break;
      case 'handoffReject':
        this.onReject(from, msg.handoffReject as aethex.v1.HandoffReject);
        break;
      case 'handoffCommit':
        this.onCommit(from, msg.handoffCommit as aethex.v1.HandoffCommit);
        break;
      case 'handoffAbort':
        this.onAbort(from, msg.handoffAbort as aethex.v1.HandoffAbort);
        break;
      case 'handoffStored':
        for (const h of (msg.handoffStored as aethex.v1.HandoffStored).handoffs as aethex.v1.HandedOver[]) {
          const c = this.custody.get(h.entityId);
          if (c && c.to === from && c.offerId === Number(h.offerId)) this.custody.delete(h.entityId);
        }
        break;
      case 'handoffCustody':
        this.takeCustody(from, msg.handoffCustody as aethex.v1.HandoffCustody);
        break;
      case 'idsReleased':
        this.takeIdsReleased(from, (msg.idsReleased as aethex.v1.IdsReleased).entityIds);
        break;
      case 'ownershipClaim': {
        const claim = msg.ownershipClaim as aethex.v1.OwnershipClaim;
        const ids = claim.entityIds;
        const away = new Set(claim.awayIds);
        const earlier = new Map<number, number>();
        for (const p of claim.playedEarlier as aethex.v1.PlayedEarlier[]) earlier.set(p.entityId, Number(p.handedOnAtMs));
        // Not those it handed on before this run started: a copy handed back here may be where the
        // entity went. A copy of one handed on after that is older (an earlier run adopted it), and
        // is not taken, as `dropDormant` drops one taken before the claim.
        if (this.now() - this.startedAt < this.claimsKeptMs)
          for (const id of ids) {
            const handedOnAt = earlier.get(id);
            if (handedOnAt === undefined || handedOnAt > this.o.engine.startedAtWall) this.claimedSinceStart.add(id);
          }
        // Those it plays (or adopted) now: it had them after any claim of ours kept for it.
        if (this.rejoinClaims.has(from.shard))
          this.forgetRejoinClaims(
            from,
            ids.filter((id) => !away.has(id) && !earlier.has(id)),
          );
        const awayAt = new Map<number, number>();
        for (const d of claim.awayDroppedAt as aethex.v1.AwayDroppedAt[])
          if (away.has(d.entityId)) awayAt.set(d.entityId, Number(d.droppedAtMs));
        const dropped = this.o.engine.dropDormant(ids, away, earlier, awayAt);
        if (dropped > 0) this.o.log.info({ neighbour: from.name, dropped }, 'restored players that moved to a neighbour dropped');
        this.claimsAwaited.delete(from.shard);
        break;
      }
      default: {
        const line = this.refusedLines.take(performance.now(), { from: from.name, body: msg.body });
        if (line) this.o.log.warn(line, 'unexpected shard link message; ignored');
      }
    }
  }

  // --- every tick -------------------------------------------------------------------------------

  /** After each engine step: ghosts out, offers for players past the border, timeouts. */
  afterStep(): void {
    if (!this.links) return;
    this.sendGhosts();
    this.offerCrossers();
    this.expire();
  }

  private sendGhosts(): void {
    const { engine } = this.o;
    const w = engine.world;
    const radius = engine.aoiRadius;
    const r = this.o.placement.region;
    const inv = 1 / this.o.positionScale;
    for (const n of this.neighbours) {
      if (!this.links?.isUp(n)) continue;
      const sent = this.mirrored.get(n.shard) as Map<number, Mirrored>;
      const now = this.now();
      const full = this.needFull.delete(n.shard) || now - (this.fullSentAt.get(n.shard) ?? now) >= GHOST_REFRESH_MS;
      if (full || !this.fullSentAt.has(n.shard)) this.fullSentAt.set(n.shard, now);
      if (full) sent.clear();
      const upserts: aethex.v1.IGhostEntity[] = [];
      const seen = new Set<number>();
      for (let i = 0; i < w.count; i++) {
        const mode = w.mode[i];
        if (mode !== MODE_OWNED && mode !== MODE_OFFERED) continue;
        const x = w.x[i] as number;
        const y = w.y[i] as number;
        // Cheap reject: deep inside our own region, far from every border.
        if (x - r.minX > radius && r.maxX - x > radius && y - r.minY > radius && r.maxY - y > radius) continue;
        if (distanceToRect(x, y, n.region) > radius) continue;
        const id = w.id[i] as number;
        seen.add(id);
        const q = { qx: Math.round(x * inv), qy: Math.round(y * inv), kind: w.kind[i] as number, flags: w.flags[i] as number };
        const last = sent.get(id);
        if (last && last.qx === q.qx && last.qy === q.qy && last.kind === q.kind && last.flags === q.flags) continue;
        sent.set(id, q);
        upserts.push({
          entityId: id,
          position: { x, y },
          velocity: { x: w.vx[i] as number, y: w.vy[i] as number },
          kind: q.kind,
          flags: q.flags,
          generation: (w.handoffs.get(id) ?? 0) + 1,
        });
      }
      const removed: number[] = [];
      for (const id of sent.keys()) {
        if (!seen.has(id)) {
          removed.push(id);
          sent.delete(id);
        }
      }
      if (!full && upserts.length === 0 && removed.length === 0) continue;
      const bytes = this.links.send(n, { ghostUpdate: { tick: engine.tick, full, upserts, removed } });
      this.o.metrics?.ghostBytes.inc({ neighbour: n.name }, bytes);
    }
  }

  private applyGhosts(from: Neighbour, u: aethex.v1.GhostUpdate): void {
    const { engine } = this.o;
    const ids = this.ghostsFrom.get(from.shard) as Set<number>;
    if (u.full) {
      const keep = new Set(u.upserts.map((e) => e.entityId));
      for (const id of ids) {
        if (!keep.has(id)) {
          this.disownGhost(id);
          engine.removeGhost(id);
        }
      }
    }
    const b = engine.rules.bounds;
    for (const e of u.upserts as aethex.v1.GhostEntity[]) {
      const [x, y, vx, vy] = [e.position?.x ?? Number.NaN, e.position?.y ?? Number.NaN, e.velocity?.x ?? 0, e.velocity?.y ?? 0];
      // Even an authenticated neighbour's data is checked: one NaN would corrupt the grid.
      if (![x, y, vx, vy].every(Number.isFinite) || x < b.minX || x >= b.maxX || y < b.minY || y >= b.maxY || e.kind > 0xffff) {
        const line = this.refusedLines.take(performance.now(), { from: from.name, entity: e.entityId });
        if (line) this.o.log.warn(line, 'invalid ghost ignored');
        continue;
      }
      if (this.neverIssuedHere(from, e.entityId)) continue;
      if (this.leftBehind(from, e.entityId, e.generation)) continue;
      const ok = engine.upsertGhost({ entityId: e.entityId, x, y, vx, vy, kind: e.kind, flags: e.flags });
      if (ok) this.ownGhost(from, e.entityId, e.generation);
    }
    // Only a ghost the sender owns: one another neighbour has sent since is that one's now.
    for (const id of u.removed) {
      if (!ids.has(id)) continue;
      this.disownGhost(id);
      engine.removeGhost(id);
    }
    this.o.metrics?.ghosts.set({ neighbour: from.name }, ids.size);
  }

  private offerCrossers(): void {
    const { engine, placement, margin } = this.o;
    const now = this.now();
    for (const p of engine.ownedPlayers()) {
      if (this.offers.has(p.entityId)) continue;
      if (now < (this.retryAt.get(p.entityId) ?? 0)) continue;
      if (distanceToRect(p.x, p.y, placement.region) <= margin) continue;
      const to = this.neighbours.find((n) => inRect(p.x, p.y, n.region));
      if (!to || !this.links?.isUp(to)) continue;
      const entity = engine.offer(p.entityId, this.links.takesLateChanges(to));
      if (!entity) continue;
      const offer: Offer = { offerId: this.nextOfferId++, to, entity, playerId: p.playerId, at: now };
      this.offers.set(p.entityId, offer);
      this.links.send(to, { handoffOffer: this.offerMessage(offer.offerId, entity, p.playerId, this.links.takesCustody(to)) });
    }
  }

  /** An offer of `entity` as sent (and as handed back in a HandoffCustody). */
  private offerMessage(offerId: number, entity: EntityTransfer, playerId: string, custody: boolean): aethex.v1.IHandoffOffer {
    return {
      offerId,
      entityId: entity.entityId,
      playerId,
      position: { x: entity.x, y: entity.y },
      velocity: { x: entity.vx, y: entity.vy },
      lastInputSeq: entity.lastInputSeq,
      tick: this.o.engine.tick,
      kind: entity.kind,
      flags: entity.flags,
      state: entity.state,
      generation: (entity.generation ?? 0) + 1,
      custody,
    };
  }

  private expire(): void {
    const now = this.now();
    for (const [entityId, offer] of this.offers) {
      if (now - offer.at < this.o.offerTimeoutMs) continue;
      this.rollback(entityId, offer, `not accepted within ${this.o.offerTimeoutMs} ms`);
      this.o.metrics?.handoffs.inc({ result: 'rolled_back' });
    }
    for (const inc of this.incoming.values()) {
      if (now - inc.at < this.o.resumeTimeoutMs) continue;
      this.forgetIncoming(inc);
      // Adopted but nobody resumed: the player is gone, as if their socket had closed.
      if (inc.adopted) this.o.engine.dropUnclaimed(inc.entity.entityId);
      this.reserveIncoming();
    }
    // Also those of players who left meanwhile: nothing else would ever remove their entry.
    for (const [entityId, at] of this.retryAt) if (now >= at) this.retryAt.delete(entityId);
    const cutoff = now - this.o.resumeTimeoutMs;
    while (this.decisions.length > 0 && (this.decisions[0] as Decision).at < cutoff) this.decisions.shift();
    for (const [key, r] of this.resumedBeforeCommit) if (r.at < cutoff) this.resumedBeforeCommit.delete(key);
    // In the order they were kept (each is moved to the end when handed back): the oldest first.
    let expired = 0;
    for (const [entityId, c] of this.custody) {
      if (now - c.at < CUSTODY_MS) break;
      this.custody.delete(entityId);
      expired++;
    }
    if (expired > 0 || this.custodyOverflow > 0) {
      this.o.log.warn(
        { entities: expired + this.custodyOverflow, overflow: this.custodyOverflow },
        `handed-over entities not reported stored by their new owner within ${CUSTODY_MS} ms (or past ${MAX_CUSTODY} copies); copies dropped (a crash of that shard now loses them)`,
      );
      this.custodyOverflow = 0;
    }
    this.o.metrics?.handoffCustody.set(this.custody.size);
    // A store down that long: the former owners have dropped their copies, nothing is left to tell them.
    let stale = 0;
    while (stale < this.unstored.length && now - (this.unstored[stale] as Unstored).at >= CUSTODY_MS) stale++;
    if (stale > 0) this.unstored.splice(0, stale);
    for (const [entityId, c] of this.copiesUntil) {
      if (c.any > now) break;
      this.copiesUntil.delete(entityId);
    }
    for (const [shard, kept] of this.rejoinClaims) {
      for (const [id, c] of kept) {
        if (now - c.at < this.claimsKeptMs) break;
        kept.delete(id);
      }
      if (kept.size === 0) this.rejoinClaims.delete(shard);
    }
    if (now - this.startedAt >= this.claimsKeptMs && (this.claimedSinceStart.size > 0 || this.takenGeneration.size > 0)) {
      this.claimedSinceStart.clear();
      this.takenGeneration.clear();
    }
  }

  /**
   * `to` has these entities since the claims kept for it were made: none goes to it any more. With
   * `handedOn` (they were handed over from here to `to`), those kept for the other neighbours name
   * them as played on, not away, until now (by the engine's `wallClock`).
   */
  private forgetRejoinClaims(to: Neighbour, ids: number[], handedOn = false): void {
    for (const [shard, kept] of this.rejoinClaims) {
      if (shard !== to.shard && !handedOn) continue;
      for (const id of ids) {
        const c = kept.get(id);
        if (!c) continue;
        if (shard === to.shard) kept.delete(id);
        else if (handedOn) c.handedOnAt = this.o.engine.wallClock();
      }
      if (kept.size === 0) this.rejoinClaims.delete(shard);
    }
  }

  /** How long after its start a shard keeps its neighbours' claims: a copy handed back may come that late. */
  private get claimsKeptMs(): number {
    return Math.max(CUSTODY_MS, this.o.rejoinWindowMs ?? 30_000);
  }

  private rollback(entityId: number, offer: Offer, why: string): void {
    this.offers.delete(entityId);
    if (this.o.engine.world.indexOf(entityId) >= 0) this.retryAt.set(entityId, this.now() + RETRY_AFTER_ROLLBACK_MS);
    this.o.engine.rollback(entityId);
    const msg = { handoffAbort: { offerId: offer.offerId, entityId, message: why } };
    this.decisions.push({ to: offer.to, msg, at: this.now() });
    this.links?.send(offer.to, msg);
    this.o.log.info({ entity: entityId, to: offer.to.name, why }, 'handoff rolled back');
  }

  // --- as the owner -----------------------------------------------------------------------------

  private onAccept(from: Neighbour, a: aethex.v1.HandoffAccept): void {
    const offer = this.offers.get(a.entityId);
    const offerId = Number(a.offerId);
    if (!offer || offer.offerId !== offerId || offer.to !== from) {
      // Too late (rolled back) or unknown: make sure the neighbour lets go.
      this.links?.send(from, { handoffAbort: { offerId, entityId: a.entityId, message: 'no such offer (rolled back)' } });
      return;
    }
    this.offers.delete(a.entityId);
    if (this.o.engine.world.indexOf(a.entityId) < 0) {
      // The player left while on offer: nothing to hand over.
      this.rollback(a.entityId, offer, 'the player left');
      this.o.metrics?.handoffs.inc({ result: 'rolled_back' });
      return;
    }
    if (this.o.engine.droppedWhileOffered(a.entityId)) {
      // Its player's connection dropped while it was on offer. Rolled back, it waits for them here
      // for engine.rejoin_window_ms, as after any drop; committed, the neighbour would keep it for
      // handoff.resume_timeout_ms only. Their client rejoins here, and the entity is offered again.
      this.rollback(a.entityId, offer, "the player's connection dropped");
      this.o.metrics?.handoffs.inc({ result: 'rolled_back' });
      return;
    }
    // The game may have set the state or flags while the entity was on offer: the commit carries them.
    const w = this.o.engine.world;
    const state = w.gameState.get(a.entityId);
    const flags = w.flags[w.indexOf(a.entityId)] as number;
    const late = {
      ...(state !== offer.entity.state ? { stateChanged: true, state: state ?? new Uint8Array(0) } : {}),
      ...(flags !== offer.entity.flags ? { flagsChanged: true, flags } : {}),
    };
    // To the neighbour's address in the shard map (or the URL handoff.redirect_url makes of it),
    // not the one the accept names: the link proves who sent the accept, but where that shard is
    // is the map's to say.
    const redirect = {
      address: redirectUrl(this.o.redirectUrl ?? '', from.name, from.address),
      resumeToken: a.resumeToken,
      lastInputSeq: offer.entity.lastInputSeq,
      shardName: from.name,
    };
    // The engine answers the player's joins with the redirect while the neighbour may take the token.
    const sessionId = this.o.engine.commitOffer(a.entityId, { message: redirect, forMs: this.o.resumeTimeoutMs });
    // It is the neighbour's ghost here from now on; dropped with the neighbour's other ghosts.
    this.ownGhost(from, a.entityId, (offer.entity.generation ?? 0) + 2);
    const msg = { handoffCommit: { offerId, entityId: a.entityId, ...late } };
    // A claim kept for it names it as played on (a neighbour's now), not away — and none goes to
    // the neighbour it goes to: what becomes of it there from now on is newer than the claim.
    if (this.rejoinClaims.size > 0) this.forgetRejoinClaims(from, [a.entityId], true);
    // Until the neighbour says a snapshot holding it is stored, a copy stays here: a crash of the
    // neighbour before then would lose the entity, and its next run gets the copy back.
    if (this.links?.takesCustody(from))
      this.keepCopy(a.entityId, {
        to: from,
        epoch: this.epochOf(from),
        offerId,
        playerId: offer.playerId,
        entity: { ...offer.entity, state, flags },
        at: this.now(),
      });
    this.decisions.push({ to: from, msg, at: this.now() });
    this.links?.send(from, msg);
    this.o.metrics?.handoffs.inc({ result: 'ok' });
    this.o.metrics?.handoffDuration.observe((this.now() - offer.at) / 1000);
    if (sessionId !== undefined) this.o.redirect(sessionId, redirect);
  }

  private onReject(from: Neighbour, r: aethex.v1.HandoffReject): void {
    const offer = this.offers.get(r.entityId);
    if (!offer || offer.offerId !== Number(r.offerId) || offer.to !== from) return;
    this.rollback(r.entityId, offer, `refused: ${r.message}`);
    this.o.metrics?.handoffs.inc({ result: 'rejected' });
  }

  // --- as the neighbour -------------------------------------------------------------------------

  /**
   * What is wrong with an offer (or an entity handed back) from `from`, if anything: a position
   * outside this shard's region, not a player, an id of this shard's range never handed out, game
   * state over the limit. Even an authenticated neighbour's data is checked.
   */
  private offerProblem(
    from: Neighbour,
    o: aethex.v1.HandoffOffer,
    handedBack = false,
  ): { reason: aethex.v1.ReasonCode; message: string } | undefined {
    const { placement, margin } = this.o;
    const x = o.position?.x ?? Number.NaN;
    const y = o.position?.y ?? Number.NaN;
    const velocityOk = Number.isFinite(o.velocity?.x ?? 0) && Number.isFinite(o.velocity?.y ?? 0);
    // An entity handed back may stand where `from` adopted it from our previous run: in its region.
    const where = distanceToRect(x, y, placement.region) <= margin || (handedBack && distanceToRect(x, y, from.region) <= margin);
    if (!Number.isFinite(x) || !Number.isFinite(y) || !velocityOk || !where)
      return { reason: ReasonCode.REASON_CODE_WRONG_SHARD, message: `(${x}, ${y}) is not in this shard's region` };
    if (o.kind !== KIND_PLAYER || o.playerId === '' || o.playerId.length > 128)
      return { reason: ReasonCode.REASON_CODE_PROTOCOL_ERROR, message: 'only players are handed over' };
    if (this.neverIssuedHere(from, o.entityId))
      return {
        reason: ReasonCode.REASON_CODE_PROTOCOL_ERROR,
        message: `entity ${o.entityId} is of this shard's id range, far past any it handed out`,
      };
    if (o.state.length > MAX_GAME_STATE_BYTES)
      return {
        reason: ReasonCode.REASON_CODE_PROTOCOL_ERROR,
        message: `game state of ${o.state.length} bytes is over the limit of ${MAX_GAME_STATE_BYTES}`,
      };
    return undefined;
  }

  /** The entity an offer (or a handed-back entity) carries; its game state copied out of the link frame. */
  private static transferOf(o: aethex.v1.HandoffOffer): EntityTransfer {
    return {
      entityId: o.entityId,
      x: o.position?.x ?? 0,
      y: o.position?.y ?? 0,
      vx: o.velocity?.x ?? 0,
      vy: o.velocity?.y ?? 0,
      kind: o.kind,
      flags: o.flags,
      lastInputSeq: o.lastInputSeq,
      // A copy: the decoded bytes are a view of the whole link frame.
      state: o.state.length > 0 ? new Uint8Array(o.state) : undefined,
      // Its changes of owner: the sender's generation is one more than its own count.
      generation: o.generation,
    };
  }

  private onOffer(from: Neighbour, o: aethex.v1.HandoffOffer): void {
    const { engine, placement } = this.o;
    const offerId = Number(o.offerId);
    const reject = (reason: aethex.v1.ReasonCode, message: string) =>
      this.links?.send(from, { handoffReject: { offerId, entityId: o.entityId, reason, message } });
    const problem = this.offerProblem(from, o);
    if (problem) {
      reject(problem.reason, problem.message);
      return;
    }
    const slot = engine.world.indexOf(o.entityId);
    if (slot >= 0 && engine.world.mode[slot] !== MODE_GHOST) {
      reject(ReasonCode.REASON_CODE_PROTOCOL_ERROR, `entity ${o.entityId} is already here`);
      return;
    }
    if (this.draining) {
      reject(ReasonCode.REASON_CODE_SHUTTING_DOWN, 'the shard is shutting down');
      return;
    }
    // Keyed by the sender's epoch too: a restarted neighbour numbers its offers from 1 again, and
    // must never be answered with a token its previous run was given.
    const epoch = this.epochOf(from);
    const key = offerKey(from, epoch, offerId);
    let token = this.incomingByOffer.get(key);
    if (!token) {
      // One entity of a player on its way here at a time, or a client that never resumes (it went
      // back and joined there afresh) could keep a place here per crossing. One committed and
      // never resumed is stale: the player plays on with the entity offered now, which replaces
      // it. One not decided yet is decided within handoff.timeout_ms by the run that offered it:
      // this offer waits for that. Not when that run is gone (its sender restarted): nothing will
      // decide it, and the player, offered again, plays on the sender's new run.
      const before = this.incomingByPlayer.get(o.playerId);
      const earlier = before === undefined ? undefined : this.incoming.get(before);
      if (earlier && !earlier.adopted && earlier.epoch === this.epochOf(earlier.from)) {
        reject(ReasonCode.REASON_CODE_NOT_READY, `another entity of player ${o.playerId} is on its way here`);
        return;
      }
      if (earlier) {
        this.forgetIncoming(earlier);
        if (earlier.adopted) this.o.engine.dropUnclaimed(earlier.entity.entityId);
        // Its former owner's copy is of an entity let go for good here: told at once (ahead of
        // this offer's accept on the same link), it is never handed back to a later run of ours,
        // where it would take the place of the newer one a snapshot holds (`custodyAction`).
        if (earlier.adopted && earlier.custody)
          this.sendStored(earlier.from, earlier.epoch, [{ offerId: earlier.offerId, entityId: earlier.entity.entityId }]);
        this.reserveIncoming();
        this.o.log.info(
          { player: o.playerId, entity: earlier.entity.entityId, from: earlier.from.name, adopted: earlier.adopted },
          earlier.adopted
            ? 'entity handed over here and never resumed replaced by a newer one of the same player'
            : 'entity offered here by a run of its shard that has since restarted replaced by a newer offer of the same player',
        );
      }
    }
    if (!token && !engine.hasRoomForPlayer) {
      reject(ReasonCode.REASON_CODE_SHARD_FULL, 'the shard is at its player or entity capacity');
      return;
    }
    if (!token) {
      token = randomBytes(24).toString('base64url');
      this.incoming.set(token, {
        from,
        epoch,
        offerId,
        token,
        playerId: o.playerId,
        at: this.now(),
        adopted: false,
        custody: o.custody,
        entity: Sharding.transferOf(o),
      });
      this.incomingByOffer.set(key, token);
      this.incomingByPlayer.set(o.playerId, token);
      this.reserveIncoming();
    }
    this.links?.send(from, { handoffAccept: { offerId, entityId: o.entityId, resumeToken: token, address: placement.address } });
  }

  // --- custody: a copy of what was handed over, until its new owner has stored it -------------

  /**
   * `n` is up as run `epoch`: the entities its previous runs adopted from us and never said they
   * stored go to this run (and are its to answer for from now on). A run that does not take them
   * back (a build before custody) gets nothing; the copies are dropped.
   */
  private handBack(n: Neighbour, epoch: number): void {
    const back: aethex.v1.IHandoffOffer[] = [];
    for (const [entityId, c] of [...this.custody]) {
      if (c.to !== n || c.epoch === epoch) continue;
      // Past its time (this shard's ticks stood still: a stall): gone, as `expire` would have it.
      if (this.now() - c.at >= CUSTODY_MS) {
        this.custody.delete(entityId);
        continue;
      }
      if (!this.links?.takesCustody(n)) {
        this.custody.delete(entityId);
        continue;
      }
      back.push(this.offerMessage(c.offerId, c.entity, c.playerId, true));
      c.epoch = epoch;
      c.at = this.now();
      // Kept in `at` order (see `expire`).
      this.custody.delete(entityId);
      this.custody.set(entityId, c);
    }
    if (back.length === 0) return;
    for (let i = 0; i < back.length; i += CUSTODY_BATCH)
      this.links?.send(n, { handoffCustody: { entities: back.slice(i, i + CUSTODY_BATCH) } });
    this.o.log.info({ to: n.name, entities: back.length }, 'neighbour restarted before storing entities handed to it; handed back');
  }

  /**
   * Entities an earlier run of `n` handed over and committed whose players never resumed here: that
   * run died between its commit and its redirect reaching the client, which rejoins `n`, not us.
   * Claimed, its restored copy would go and the player would get a new entity; instead each leaves
   * this shard and is kept as a copy in custody, which `handBack` sends to the new run — as if
   * handed to it now — and which goes once that run says a snapshot holding it is stored. A client
   * that did get the redirect and resumes here after this finds no entity and rejoins `n`, which
   * has it. Not for a neighbour of a build before custody: claimed as before.
   */
  private returnUnresumed(n: Neighbour, epoch: number): void {
    const w = this.o.engine.world;
    let returned = 0;
    for (const inc of [...this.incoming.values()]) {
      if (inc.from !== n || inc.epoch === epoch || !inc.adopted || !this.links?.takesCustody(n)) continue;
      const id = inc.entity.entityId;
      const entity = this.o.engine.transfer(id);
      if (!entity || w.mode[w.indexOf(id)] !== MODE_OWNED) continue;
      this.forgetIncoming(inc);
      this.o.engine.dropUnclaimed(id);
      this.keepCopy(id, { to: n, epoch: inc.epoch, offerId: inc.offerId, playerId: inc.playerId, entity, at: this.now() });
      // A client that did get the redirect here (its resume stalled) and joins here, its token
      // refused, is sent back: the entity waits there for the player's join (no token to resume).
      this.o.engine.redirectJoins(
        inc.playerId,
        {
          address: redirectUrl(this.o.redirectUrl ?? '', n.name, n.address),
          resumeToken: '',
          lastInputSeq: entity.lastInputSeq,
          shardName: n.name,
        },
        this.o.rejoinWindowMs ?? 30_000,
      );
      returned++;
    }
    if (returned === 0) return;
    this.reserveIncoming();
    this.o.log.info(
      { to: n.name, entities: returned },
      'neighbour restarted before its players resumed here; their entities go back to it',
    );
  }

  /** Keeps a copy of an entity handed over (see `Custody`), the oldest going past MAX_CUSTODY. */
  private keepCopy(entityId: number, c: Custody): void {
    this.custody.delete(entityId);
    this.custody.set(entityId, c);
    while (this.custody.size > MAX_CUSTODY) {
      this.custody.delete(this.custody.keys().next().value as number);
      this.custodyOverflow++;
    }
  }

  /**
   * Tells `to`'s run `epoch` these of its handoffs are stored here (or never need its copy): it
   * forgets them. Only that run: offer ids name a handoff only within one, and another run keeps no
   * copies of it. When our link is down, or reached another run of it last, they are kept and sent
   * when the link comes up to that run (dropped if it is another).
   */
  private sendStored(to: Neighbour, epoch: number, handoffs: aethex.v1.IHandedOver[]): void {
    if (handoffs.length === 0) return;
    if (this.outEpochs.get(to.shard) === epoch && this.transmitStored(to, handoffs)) {
      // A send is only bytes handed to the socket: kept, to be sent again if the link comes up again.
      const recent = this.recentStored.get(to.shard);
      const list = recent && recent.epoch === epoch ? recent.handoffs : [];
      const now = this.now();
      for (const h of handoffs) list.push({ h, at: now });
      let old = 0;
      while (old < list.length && now - (list[old] as { at: number }).at >= CUSTODY_MS) old++;
      if (list.length - old > MAX_UNSENT_STORED) old = list.length - MAX_UNSENT_STORED;
      if (old > 0) list.splice(0, old);
      this.recentStored.set(to.shard, { epoch, handoffs: list });
      return;
    }
    const unsent = this.unsentStored.get(to.shard);
    const list = unsent && unsent.epoch === epoch ? unsent.handoffs : [];
    for (const h of handoffs) list.push(h);
    if (list.length > MAX_UNSENT_STORED) list.splice(0, list.length - MAX_UNSENT_STORED);
    this.unsentStored.set(to.shard, { epoch, handoffs: list });
  }

  /** Sends HandoffStored entries on our link to `to`; false when it is down. */
  private transmitStored(to: Neighbour, handoffs: aethex.v1.IHandedOver[]): boolean {
    let sent = true;
    for (let i = 0; sent && i < handoffs.length; i += 4096)
      sent = (this.links?.send(to, { handoffStored: { handoffs: handoffs.slice(i, i + 4096) } }) ?? 0) > 0;
    return sent;
  }

  /**
   * What to do with an entity handed back: take it (this shard has neither it nor its player, and no
   * neighbour claims it); replace the one this shard restored for its player, which still waits for
   * them unplayed since the start — from a snapshot captured before the copy's handoff (a lower
   * count of owner changes, or none kept), or from another copy with a lower owner generation
   * (the entity went on and came back before the crash); or release it (the player is here or
   * played here since the start, or a neighbour owns the entity).
   */
  private custodyAction(o: aethex.v1.HandoffOffer): 'take' | 'replace' | 'supplant' | 'release' | 'superseded' {
    const { engine } = this.o;
    if (this.claimedSinceStart.has(o.entityId)) return 'release';
    if (engine.world.indexOf(o.entityId) < 0) {
      if (!engine.hasPlace(o.playerId)) return 'take';
      // Another entity of the player waits here, restored from the snapshot and not played since:
      // the copy, adopted after that snapshot was captured, is newer (the player joined afresh
      // elsewhere and walked over again, and the previous run let the snapshot's entity go for it).
      // One taken from another copy in this run is not known to be older: the first taken stays.
      const waiting = engine.restoredWaitingOf(o.playerId);
      if (waiting !== undefined && !this.takenGeneration.has(waiting)) return 'supplant';
      // The player is here with another entity: they joined afresh (this shard stopped waiting for
      // the copy, `settleTimeoutMs`): theirs is lost, and the copy comes too late to help.
      return 'superseded';
    }
    // Only one restored, not played since: one the player played here in this run is newer than any copy.
    if (engine.restoredWaitingOf(o.playerId) !== o.entityId) return 'release';
    const taken = this.takenGeneration.get(o.entityId);
    if (taken !== undefined) return o.generation > taken ? 'replace' : 'release';
    // The snapshot's entity, with its count of owner changes (snapshots keep it since version 4):
    // as many as the copy's handoff or more, it was captured after that adoption (a drain's final
    // snapshot, whose HandoffStored found the link down) and is newer than the copy.
    const stored = engine.world.handoffs.get(o.entityId) ?? 0;
    return o.generation > 0 && stored >= o.generation ? 'release' : 'replace';
  }

  /**
   * `from` hands back entities this shard's previous run adopted from it and crashed before
   * storing. Each comes back as a restored player's does — waiting for its player to rejoin —
   * unless this shard has it (its snapshot did hold it) or that player already, a neighbour
   * claims it (it moved on), or the player left here after the snapshot (the outbox says so);
   * `from` forgets those at once, the others once a snapshot holding them is stored.
   */
  private takeCustody(from: Neighbour, c: aethex.v1.HandoffCustody): void {
    const released: aethex.v1.IHandedOver[] = [];
    const candidates: aethex.v1.HandoffOffer[] = [];
    const superseded: string[] = [];
    for (const o of c.entities as aethex.v1.HandoffOffer[]) {
      // `from` keeps its copy until our answer reaches it, taken or not.
      this.holdCopy(o.entityId, from);
      const problem = this.offerProblem(from, o, true);
      if (problem) this.o.log.warn({ from: from.name, entity: o.entityId, why: problem.message }, 'entity handed back refused');
      const action = problem ? 'release' : this.custodyAction(o);
      if (action === 'release' || action === 'superseded') released.push({ offerId: o.offerId, entityId: o.entityId });
      else candidates.push(o);
      if (action === 'superseded') superseded.push(o.playerId);
    }
    const epoch = this.epochOf(from);
    this.sendStored(from, epoch, released);
    if (superseded.length > 0) this.warnSuperseded(from, superseded);
    if (candidates.length === 0) {
      this.o.log.info(
        { from: from.name, taken: 0, released: released.length },
        'entities adopted before the restart and not stored, handed back by the neighbour',
      );
      return;
    }
    // Joins wait (`settled`, and past it these players: `notAdmitting`) until the outbox has said
    // who left: a player let in first would get a fresh entity. A store that does not answer in
    // CUSTODY_LOOKUP_MS is one that cannot be read: every copy is taken, as a restore does.
    this.custodyPending++;
    const players = candidates.map((o) => o.playerId);
    for (const p of players) this.custodyPlayers.set(p, (this.custodyPlayers.get(p) ?? 0) + 1);
    let timer: NodeJS.Timeout | undefined;
    const departed = Promise.race([
      this.o.departedSince?.(players) ?? Promise.resolve(new Set<string>()),
      new Promise<Set<string>>((resolve) => {
        timer = setTimeout(() => {
          this.o.log.warn(
            { from: from.name, entities: candidates.length, ms: CUSTODY_LOOKUP_MS },
            'could not read which players left after the snapshot in time; every entity handed back is taken',
          );
          resolve(new Set());
        }, CUSTODY_LOOKUP_MS);
        timer.unref();
      }),
    ]);
    void departed
      .then((left) => {
        const done: aethex.v1.IHandedOver[] = [];
        const late: string[] = [];
        let taken = 0;
        for (const o of candidates) {
          const action = left.has(o.playerId) ? 'release' : this.custodyAction(o);
          if (action === 'release' || action === 'superseded') {
            done.push({ offerId: o.offerId, entityId: o.entityId });
            if (action === 'superseded') late.push(o.playerId);
            continue;
          }
          const entity = Sharding.transferOf(o);
          const { engine } = this.o;
          const placed =
            action === 'replace'
              ? engine.replaceWaiting(entity, o.playerId)
              : action === 'supplant'
                ? engine.supplantWaiting(entity, o.playerId)
                : engine.restoreWaiting(entity, o.playerId);
          if (!placed) {
            // No room: the copy stays with `from` (until CUSTODY_MS), for a later run of ours.
            this.o.log.warn({ from: from.name, entity: o.entityId, player: o.playerId }, 'no room for an entity handed back; not taken');
            continue;
          }
          taken++;
          this.takenGeneration.set(o.entityId, o.generation);
          this.adoptions++;
          this.unstored.push({ from, epoch, offerId: Number(o.offerId), entityId: o.entityId, mark: this.adoptions, at: this.now() });
        }
        this.sendStored(from, epoch, done);
        if (late.length > 0) this.warnSuperseded(from, late);
        this.o.log.info(
          { from: from.name, taken, released: released.length + done.length },
          'entities adopted before the restart and not stored, handed back by the neighbour',
        );
      })
      .catch((err: unknown) => this.o.log.error({ err, from: from.name }, 'taking back handed-back entities failed'))
      .finally(() => {
        clearTimeout(timer);
        this.custodyPending--;
        for (const p of players) {
          const n = (this.custodyPlayers.get(p) ?? 1) - 1;
          if (n > 0) this.custodyPlayers.set(p, n);
          else this.custodyPlayers.delete(p);
        }
      });
  }

  /** Copies that came after their players had joined afresh here: those players' entities are lost. */
  private warnSuperseded(from: Neighbour, players: string[]): void {
    this.o.log.warn(
      { from: from.name, players: players.slice(0, 20), count: players.length },
      'entities handed back after their players had joined afresh here (this shard stopped waiting for the neighbour): not taken; those players lost their entity',
    );
  }

  /**
   * A snapshot captured when `adoptions` was at `mark` is stored: every entity adopted before it
   * (whose former owner keeps a copy) is in it, or had left this shard by then — their former
   * owners forget their copies. (Counted in adoptions, not ticks: a drain's final capture comes
   * between ticks, after the adoptions of its tick.)
   */
  stored(mark: number): void {
    if (this.unstored.length === 0) return;
    const done = new Map<Neighbour, Map<number, aethex.v1.IHandedOver[]>>();
    const keep: Unstored[] = [];
    for (const u of this.unstored) {
      if (u.mark > mark) keep.push(u);
      else {
        const runs = done.get(u.from) ?? new Map<number, aethex.v1.IHandedOver[]>();
        const list = runs.get(u.epoch) ?? [];
        list.push({ offerId: u.offerId, entityId: u.entityId });
        runs.set(u.epoch, list);
        done.set(u.from, runs);
      }
    }
    this.unstored = keep;
    for (const [n, runs] of done) for (const [epoch, handoffs] of runs) this.sendStored(n, epoch, handoffs);
  }

  // --- ids: those of a neighbour's range whose entities left for good here go home ---------------

  /**
   * A snapshot of this shard is stored whose capture leaves out every entity that left at or before
   * tick `through` (World.reuseThrough): the ids of other shards' ranges whose entities left for
   * good here by then (players who walked in and quit) can never come back with a crash of this
   * shard — nor, once held back long enough, with a copy a former owner kept (see `copiesUntil`;
   * in its first COPY_HOLD_MS a restored run holds back every id: copies of the entities its
   * previous runs adopted may still come, and a copy older than CUSTODY_MS never does). Each goes
   * to the shard whose range it is (IdsReleased), which hands it out again — or, when that shard
   * is no neighbour or its build does not take them, is handed out here (`World.free`). Either way
   * a shard's range does not run out because its players leave elsewhere.
   */
  releaseIds(through: number): void {
    const world = this.o.engine.world;
    const released = world.takeReleased(through);
    if (released.length === 0 && this.heldReleases.length === 0) return;
    const now = this.now();
    const candidates = this.heldReleases.length > 0 ? [...this.heldReleases, ...released] : released;
    this.heldReleases = [];
    const home = new Map<Neighbour, number[]>();
    let here = 0;
    for (const r of candidates) {
      const { id, at } = r;
      const n = this.neighbours.find((x) => x.shard === shardOfId(id));
      const goesHome = n !== undefined && (this.links?.takesIdsReleased(n) ?? false);
      // A neighbour may still keep a copy of the entity and hand it back to a later run of ours.
      const copy = this.copiesUntil.get(id);
      if ((this.o.restored && now - this.startedAt < COPY_HOLD_MS) || (copy && (goesHome ? copy.others : copy.any) > now)) {
        this.heldReleases.push(r);
        continue;
      }
      if (n && goesHome) {
        const list = home.get(n) ?? [];
        list.push(id);
        home.set(n, list);
      } else if (world.free(id, at)) here++;
    }
    for (const [n, ids] of home) this.sendReleased(n, ids);
    if (here > 0) this.o.log.debug({ ids: here }, "ids of other shards' ranges that left for good here, kept to hand out here");
  }

  /** An entity adopted here from a neighbour that keeps a copy of it (see `copiesUntil`). */
  private holdCopy(entityId: number, from: Neighbour): void {
    const until = this.now() + COPY_HOLD_MS;
    const before = this.copiesUntil.get(entityId);
    this.copiesUntil.delete(entityId);
    this.copiesUntil.set(entityId, { any: until, others: from.shard === shardOfId(entityId) ? (before?.others ?? 0) : until });
  }

  /**
   * Sends released ids to the shard whose range they are; kept until the link is up when it is
   * down. Those its build turns out not to take (it was replaced by an older one meanwhile), and
   * those past MAX_UNSENT_RELEASED, are never reused: only the held-back check of `releaseIds`
   * would make reusing them here safe.
   */
  private sendReleased(n: Neighbour, ids: number[]): void {
    if (!this.links?.takesIdsReleased(n)) return;
    let i = 0;
    while (i < ids.length && this.links.send(n, { idsReleased: { entityIds: ids.slice(i, i + 4096) } }) > 0) i += 4096;
    if (i >= ids.length) return;
    // Only what did not go: an id sent twice could come after the neighbour handed it out again.
    const list = this.unsentReleased.get(n.shard) ?? [];
    for (let k = i; k < ids.length; k++) list.push(ids[k] as number);
    if (list.length > MAX_UNSENT_RELEASED) list.splice(0, list.length - MAX_UNSENT_RELEASED);
    this.unsentReleased.set(n.shard, list);
  }

  /**
   * `from` says these ids of this shard's range left for good there. Each is handed out again once
   * it rested and a snapshot of this shard taken since is stored (`World.free`) — unless this shard
   * holds an entity by it, an offer of it or a copy of it (custody): someone may still have it then,
   * and it is not reused. Ids of another range, or never handed out here, are ignored.
   */
  private takeIdsReleased(from: Neighbour, ids: number[]): void {
    const world = this.o.engine.world;
    const held = new Set<number>();
    for (const inc of this.incoming.values()) held.add(inc.entity.entityId);
    let freed = 0;
    for (const id of ids) {
      if (id < world.firstId || id >= world.idLimit) continue;
      if (this.custody.has(id) || this.offers.has(id) || held.has(id)) continue;
      if (world.free(id)) freed++;
    }
    this.o.log.debug({ from: from.name, released: ids.length, freed }, 'ids of this shard handed back by a neighbour');
  }

  /**
   * The shard drains: offers are refused from now on, and its own offers still undecided are
   * rolled back (an accept that comes later is answered with an abort): the drain detaches the
   * players next, so a commit could no longer send its player to the neighbour, whose adopted
   * entity would then wait for a resume that never comes and claim the entity from this shard's
   * next run — the player's, restored from the final snapshot, would go. Its links stay up until
   * its final snapshot is stored, so the neighbours hear which of the entities they handed over it
   * holds (`stored`) and let their copies go; one whose link is down then hands its copy back to
   * the next run, which keeps the newer entity of the snapshot (`custodyAction`).
   */
  stopAccepting(): void {
    this.draining = true;
    for (const [entityId, offer] of this.offers) {
      this.rollback(entityId, offer, 'the shard is shutting down');
      this.o.metrics?.handoffs.inc({ result: 'rolled_back' });
    }
  }

  /** Entities handed over from here whose new owner has not said it stored them (tests). */
  get custodyHeld(): number[] {
    return [...this.custody.keys()];
  }

  /**
   * Entities adopted from neighbours so far: the neighbour let go of each at the commit, so until
   * this shard's next snapshot the entity lives only in this process (the shard snapshots soon after one).
   */
  adoptions = 0;

  private adopt(inc: Incoming): boolean {
    if (inc.adopted) return true;
    // Our own entity by this id is another player's: the sender restarted, reused the id and
    // handed that one over first. Adopting would bind this entry's player to it.
    const slot = this.o.engine.world.indexOf(inc.entity.entityId);
    if (slot >= 0 && this.o.engine.world.mode[slot] !== MODE_GHOST) return false;
    if (!this.o.engine.adopt(inc.entity)) return false;
    inc.adopted = true;
    this.adoptions++;
    // Ours again: a copy kept from handing it over before is void.
    this.custody.delete(inc.entity.entityId);
    if (inc.custody) {
      this.holdCopy(inc.entity.entityId, inc.from);
      this.unstored.push({
        from: inc.from,
        epoch: inc.epoch,
        offerId: inc.offerId,
        entityId: inc.entity.entityId,
        mark: this.adoptions,
        at: this.now(),
      });
    }
    this.reserveIncoming();
    // A neighbour that came up lately (restarted from a snapshot) drops the players it restored
    // that its neighbours claim. A claim names who they own when it is sent, and the neighbours
    // send theirs at different moments: a player handed from one that had not claimed yet to one
    // that had (or the other way round) was in neither, and its stale copy there waited out the
    // rejoin window, refusing the player's offers ("already here"). Claimed again on adoption.
    const window = this.o.rejoinWindowMs ?? 30_000;
    for (const [shard, c] of this.claimedTo) {
      if (this.now() - c.at >= window) this.claimedTo.delete(shard);
      else if (shard !== inc.from.shard) this.links?.send(c.n, { ownershipClaim: { entityIds: [inc.entity.entityId] } });
    }
    // Our ghost of it (from the sender, or whichever neighbour sent it last) is gone with the adoption.
    this.disownGhost(inc.entity.entityId);
    // The sender keeps it as our ghost from its commit on: our next ghost update to it must name
    // it, as an upsert or — if it is gone again before that tick (its player left at once) — a
    // removal, or the sender keeps a ghost nobody owns.
    this.mirrored.get(inc.from.shard)?.set(inc.entity.entityId, { qx: Number.NaN, qy: Number.NaN, kind: -1, flags: -1 });
    return true;
  }

  private onCommit(from: Neighbour, c: aethex.v1.HandoffCommit): void {
    const key = offerKey(from, this.epochOf(from), Number(c.offerId));
    const late: LateChanges = {};
    if (c.stateChanged) {
      if (c.state.length > MAX_GAME_STATE_BYTES) {
        this.o.log.warn(
          { entity: c.entityId, from: from.name, bytes: c.state.length },
          'commit with game state over the limit: state ignored',
        );
      } else {
        // A copy: the decoded bytes are a view of the whole link frame.
        late.state = c.state.length > 0 ? new Uint8Array(c.state) : undefined;
      }
    }
    if (c.flagsChanged) late.flags = c.flags;
    const token = this.incomingByOffer.get(key);
    const inc = token ? this.incoming.get(token) : undefined;
    if (!inc) {
      // The player resumed first: the entity is ours already, with the offer's state and flags.
      const resumed = this.resumedBeforeCommit.get(key);
      this.resumedBeforeCommit.delete(key);
      if (!('state' in late || 'flags' in late)) return;
      if (resumed) this.applyLate(resumed, late, from);
      else
        this.o.log.info(
          { entity: c.entityId, from: from.name, why: 'no handoff of it is known here (forgotten, or this shard restarted)' },
          'late game state or flags from a commit not applied',
        );
      return;
    }
    // Only the first commit carries news: a repeated one must not undo what the game did since.
    if (!inc.adopted) {
      if ('state' in late) inc.entity.state = late.state;
      if (late.flags !== undefined) inc.entity.flags = late.flags;
    }
    if (!this.adopt(inc)) this.o.log.error({ entity: inc.entity.entityId }, 'handoff committed but the entity could not be adopted');
  }

  /**
   * The state and flags the game set on the sender during the offer, for an entity adopted here
   * already (its player resumed first): each replaces the offer's, unless the game here has set it
   * since (that write is the later one). On an entity on offer again, its own commit carries them on.
   */
  private applyLate(adopted: { entityId: number; stateWrites: number; flagWrites: number }, late: LateChanges, from: Neighbour): void {
    const { engine } = this.o;
    const w = engine.world;
    const id = adopted.entityId;
    const slot = engine.gameWritableSlot(id);
    const dropped: string[] = [];
    if (slot < 0) dropped.push('the entity is not this shard’s to change now');
    else {
      if ('state' in late) {
        if ((w.stateWrites.get(id) ?? 0) !== adopted.stateWrites) dropped.push('the game here has set the state since');
        else if (late.state === undefined) w.gameState.delete(id);
        else w.gameState.set(id, late.state);
      }
      if (late.flags !== undefined) {
        if ((w.flagWrites.get(id) ?? 0) !== adopted.flagWrites) dropped.push('the game here has set the flags since');
        else w.flags[slot] = late.flags;
      }
    }
    if (dropped.length > 0)
      this.o.log.info({ entity: id, from: from.name, why: dropped.join('; ') }, 'late game state or flags from a commit not applied');
  }

  private onAbort(from: Neighbour, a: aethex.v1.HandoffAbort): void {
    const key = offerKey(from, this.epochOf(from), Number(a.offerId));
    const token = this.incomingByOffer.get(key);
    const inc = token ? this.incoming.get(token) : undefined;
    if (!inc || !token) return;
    if (inc.adopted) {
      this.o.log.error({ entity: inc.entity.entityId, from: from.name }, 'abort for an adopted entity ignored');
      return;
    }
    this.forgetIncoming(inc);
    this.reserveIncoming();
  }

  /**
   * Every accepted offer keeps its player a place here until they resume (or the entry is
   * forgotten), and its entity a slot until it is adopted: joins, game spawns and ghosts in the
   * meantime cannot take them, so a committed handoff always fits.
   */
  private reserveIncoming(): void {
    let entities = 0;
    for (const inc of this.incoming.values()) if (!inc.adopted) entities++;
    this.o.engine.reserve(this.incoming.size, entities);
  }

  /** Entities adopted here whose player has not resumed yet, with that player (for snapshots). */
  adoptedAwaitingResume(): [entityId: number, playerId: string][] {
    const out: [number, string][] = [];
    for (const inc of this.incoming.values()) if (inc.adopted) out.push([inc.entity.entityId, inc.playerId]);
    return out;
  }

  /**
   * A client presents a resume token: the entity is adopted if the commit has not arrived yet
   * (the token reached the client only through the owner's commit). Single use.
   */
  claimResume(token: string): { playerId: string; entityId: number; frozenMs: number } | undefined {
    const inc = this.incoming.get(token);
    if (!inc) return undefined;
    const committed = inc.adopted;
    if (!this.adopt(inc)) return undefined;
    this.forgetIncoming(inc);
    const key = offerKey(inc.from, inc.epoch, inc.offerId);
    if (!committed) {
      const w = this.o.engine.world;
      const id = inc.entity.entityId;
      this.resumedBeforeCommit.set(key, {
        entityId: id,
        stateWrites: w.stateWrites.get(id) ?? 0,
        flagWrites: w.flagWrites.get(id) ?? 0,
        at: this.now(),
      });
    }
    this.reserveIncoming();
    return { playerId: inc.playerId, entityId: inc.entity.entityId, frozenMs: this.now() - inc.at };
  }

  /**
   * A player joins (with a join token, not the resume token): their entity handed over here, if
   * their client never resumed, is theirs now — adopted if the commit came (`claimResume`),
   * 'pending' while it has not (the former owner may still roll it back: only the resume token
   * proves its commit).
   */
  claimForJoin(playerId: string): { entityId: number; frozenMs: number } | 'pending' | undefined {
    const token = this.incomingByPlayer.get(playerId);
    const inc = token === undefined ? undefined : this.incoming.get(token);
    if (!inc) return undefined;
    return inc.adopted ? this.claimResume(inc.token) : 'pending';
  }

  /** Forgets an accepted offer's entry (the caller reserves again). */
  private forgetIncoming(inc: Incoming): void {
    this.incoming.delete(inc.token);
    this.incomingByOffer.delete(offerKey(inc.from, inc.epoch, inc.offerId));
    if (this.incomingByPlayer.get(inc.playerId) === inc.token) this.incomingByPlayer.delete(inc.playerId);
  }

  /**
   * Offers in flight, entities held for resumption and entities whose rolled-back offer is not
   * repeated yet (viewer, tests).
   */
  get inFlight(): { offered: number[]; held: number[]; retrying: number[] } {
    return {
      offered: [...this.offers.keys()],
      held: [...this.incoming.values()].filter((i) => !i.adopted).map((i) => i.entity.entityId),
      retrying: [...this.retryAt.keys()],
    };
  }
}
