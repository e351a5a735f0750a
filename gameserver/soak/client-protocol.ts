// What the soak (soak.ts) and its clients' process (clients.ts) say to each other: the
// configuration as JSON in argv[2], commands as JSON lines on the clients' stdin, and what the
// clients see as JSON lines on their stdout. Times are Date.now() (one machine, one clock: the
// shards' domain events carry the same clock).
import type { Rect } from '@aethex/runtime';

export interface ClientsConfig {
  world: string;
  /**
   * Each shard's name and its players' address (host:port: the soak's proxy in front of the shard's
   * players' port). Clients dial `ws://<shard name>/` — the shards redirect to that too
   * (`handoff.redirect_url` `ws://{name}`) — and their socket factory maps the name to the
   * address, as an edge in front of the shards would, adding `?soak-player=<player id>`.
   */
  shards: { name: string; address: string }[];
  bounds: Rect;
  privateKeyFile: string;
  /** Players connected at once. */
  count: number;
  /** Player ids are `<playerPrefix><n>`, n from 0, never reused. */
  playerPrefix: string;
  /** World units per input; one input every `inputEveryMs`. */
  step: number;
  inputEveryMs: number;
  /** Every `churnMs`, one connected player quits and a new one joins; 0: never. */
  churnMs: number;
  /** Seeds the walkers' targets, the churn's choices and where new players join. */
  seed: number;
}

/** What one client saw, as it happened (`p` the player id, `at` Date.now()). */
export type ClientEvent =
  | { e: 'joined'; p: string; shard: string; entity: number; at: number }
  | { e: 'join-failed'; p: string; shard: string; code: string; at: number }
  /** The SDK's `handoff` event; `viaRejoin`: emitted by a rejoin (the new shard dropped before its first snapshot). */
  | { e: 'handoff'; p: string; from: string; to: string; entity: number; gapMs: number; viaRejoin: boolean; at: number }
  | { e: 'handoff-failed'; p: string; shard: string; reason: string; at: number }
  /** The connection dropped and the SDK rejoins; `acked` is the last input sequence the shard had acknowledged. */
  | { e: 'dropped'; p: string; shard: string; code: number; reason: string; acked: number; at: number }
  /** Joined again after a drop: `seq` is the Welcome's last applied input, `acked` as at the drop. */
  | { e: 'rejoined'; p: string; shard: string; entity: number; seq: number; acked: number; downMs: number; attempts: number; at: number }
  | { e: 'kicked'; p: string; shard: string; reason: string; message: string; at: number }
  /** The session ended without the player quitting (a final kick, a rejoin given up). */
  | { e: 'closed'; p: string; shard: string; code: number; reason: string; at: number }
  /** The player quit (the churn): `close()`, their entity goes. */
  | { e: 'quit'; p: string; shard: string; entity: number; at: number };

/** A connected player's state when the soak asks (`report`). */
export interface ClientState {
  p: string;
  shard: string;
  entity: number;
  /** Joined, not rejoining, not ended. */
  live: boolean;
  rejoining: boolean;
  ended: boolean;
  /** Inputs sent and not acknowledged yet. */
  unacknowledged: number;
  /** Since the last snapshot from the shard (ms). */
  sinceSnapshotMs: number;
  /** Longest gap between two snapshots over the session (ms): a drop and rejoin, a handoff, a stall. */
  longestGapMs: number;
  x: number;
  y: number;
}

export type ClientsCommand =
  /** Stop walking and churning: every client stands still (acknowledgements still flow). */
  | { cmd: 'stand' }
  /** Answer `{ report }` with every connected player's state. */
  | { cmd: 'report' }
  /** Close every client (the players leave) and exit. */
  | { cmd: 'close' };

export type ClientsMessage =
  | { event: ClientEvent }
  /** Every first player joined: the walk has begun. */
  | { started: { joined: number } }
  | { report: ClientState[] };
