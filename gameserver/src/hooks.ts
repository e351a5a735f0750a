import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Logger } from '@aethex/runtime';

/** A player as game hooks see them. */
export interface HookPlayer {
  playerId: string;
  entityId: number;
}

/** What a hook may do to the shard. Positions are world units; everything runs on the tick thread. */
export interface GameContext {
  /** The tick being simulated (or the last one, outside a tick). */
  readonly tick: number;
  /** An entity's position, or undefined if it does not exist. */
  position(entityId: number): { x: number; y: number } | undefined;
  /**
   * Game-defined state bits carried in snapshots (full records when they change). False, changing
   * nothing, where `setState` is: an entity not here, a neighbour's ghost, or a player on offer to
   * a shard of an older build.
   */
  setFlags(entityId: number, flags: number): boolean;
  flags(entityId: number): number | undefined;
  /**
   * The game's own state of an entity (inventory, health, ...), or undefined when it has none or
   * is not this shard's. Opaque bytes the platform never reads: they travel with a player handed
   * over to a neighbour (whose hooks read them from `onJoin` on) and are kept in the shard's
   * snapshots, so they survive a restart. A copy: change it through `setState`.
   */
  state(entityId: number): Uint8Array | undefined;
  /**
   * Sets (a copy of) an entity's game state; undefined or empty clears it. False when there is no
   * such entity here, it is a neighbour's (a ghost), or it is a player on offer to a shard of an
   * older build (which would ignore the change). On a player being handed over, the change goes
   * with the handoff: it stays here if the handoff rolls back, reaches the neighbour if it
   * commits. More than 4 KiB, or anything but a Uint8Array, throws a RangeError naming it.
   */
  setState(entityId: number, state: Uint8Array | undefined): boolean;
  /**
   * Spawns a game entity (kind ≥ 2; 0 and 1 are NPC and player) at (x, y), kept inside the world's
   * bounds, and returns its id. Throws at capacity, and a RangeError for another kind or a
   * position that is not finite.
   */
  spawn(x: number, y: number, kind: number): number;
  despawn(entityId: number): boolean;
  /**
   * Sends a message of the game's own to one player connected to this shard (`GameMessage`; the
   * SDK emits 'message'). False when they are not connected here, or their connection is too far
   * behind to take more (`gateway.max_buffered_bytes`). `topic`: 1–64 of A–Z a–z 0–9 _ . : -;
   * `payload`: a Uint8Array of at most 16 KiB — anything else throws a RangeError naming it.
   */
  send(playerId: string, topic: string, payload: Uint8Array): boolean;
  /** As `send`, to every player connected to this shard; returns how many it went to. */
  broadcast(topic: string, payload: Uint8Array): number;
  readonly log: Logger;
}

/**
 * An error a game's RPC handler throws to answer with a stable, game-defined code (upper case,
 * digits and underscores, at most 64). A game's own error class named `RpcError` with such a
 * `code` works the same, so game modules need not import this package.
 */
export class RpcError extends Error {
  constructor(
    readonly code: string,
    message = code,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

/**
 * The extension points of a shard, in the manner of Colyseus rooms and Nakama match handlers. A
 * game's module default-exports (or exports as `hooks`) an object with any of these. Hooks run on
 * the tick thread and must be quick; an exception is caught, logged and counted, never fatal.
 */
export interface GameHooks {
  /**
   * A session began. `rejoined`: the player got back the entity that was already theirs here — it
   * waited for them after a drop or a restart, or this session replaced theirs (whose onLeave said
   * `dropped`) — rather than a new one (or one handed over by a neighbour). `handedOver`: the
   * player arrived from a neighbouring shard with their entity (its game state came with it: see
   * `GameContext.state`); the neighbour's hooks saw them leave. Every onJoin is followed by one
   * onLeave when that session ends.
   */
  onJoin?(ctx: GameContext, player: HookPlayer, info: { rejoined: boolean; handedOver: boolean }): void;
  /**
   * A session ended. `dropped`: the connection dropped and the entity waits, out of sight, for the
   * player to rejoin (engine.rejoin_window_ms) — onJoin with `rejoined` follows if they do; it
   * still exists meanwhile, so clear whatever it should not come back with.
   */
  onLeave?(ctx: GameContext, player: HookPlayer, info: { dropped: boolean }): void;
  /** After the movement intent was accepted; `buttons` are the client's game-defined bits. */
  onInput?(ctx: GameContext, player: HookPlayer, input: { seq: number; buttons: number }): void;
  /** Once per tick, after movement and before snapshots. */
  onTick?(ctx: GameContext): void;
  /** RPC handlers by method name; the result is sent back as RpcResult.payload. */
  rpc?: Record<string, (ctx: GameContext, player: HookPlayer, payload: Uint8Array) => Uint8Array | Promise<Uint8Array>>;
}

const HOOK_NAMES = ['onJoin', 'onLeave', 'onInput', 'onTick'] as const;

/**
 * Loads a game's hooks from a module path (relative paths resolve from the working directory).
 * Throws naming the module and what is wrong with its export.
 */
export async function loadHooks(modulePath: string): Promise<GameHooks> {
  const url = pathToFileURL(isAbsolute(modulePath) ? modulePath : resolve(process.cwd(), modulePath)).href;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`game.module ${modulePath}: cannot load it: ${(err as Error).message}`, { cause: err });
  }
  const hooks = (mod.hooks ?? mod.default) as Record<string, unknown> | undefined;
  if (!hooks || typeof hooks !== 'object') throw new Error(`game.module ${modulePath}: export the hooks object as default or as 'hooks'`);
  for (const name of HOOK_NAMES) {
    if (hooks[name] !== undefined && typeof hooks[name] !== 'function')
      throw new Error(`game.module ${modulePath}: ${name} must be a function`);
  }
  if (hooks.rpc !== undefined) {
    if (typeof hooks.rpc !== 'object' || hooks.rpc === null)
      throw new Error(`game.module ${modulePath}: rpc must be an object of functions`);
    for (const [method, fn] of Object.entries(hooks.rpc)) {
      if (typeof fn !== 'function') throw new Error(`game.module ${modulePath}: rpc.${method} must be a function`);
    }
  }
  for (const key of Object.keys(hooks)) {
    if (!(HOOK_NAMES as readonly string[]).includes(key) && key !== 'rpc')
      throw new Error(`game.module ${modulePath}: unknown hook '${key}'`);
  }
  return hooks as GameHooks;
}
