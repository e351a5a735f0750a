import { spawnSync } from 'node:child_process';
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
   * a shard of an older build. `flags` is 32 bits (an integer from -2^31 to 2^32 - 1, as bit
   * operators leave it; read back unsigned): anything else throws a RangeError naming it.
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
  /**
   * Removes a game entity (kind ≥ 2) of this shard; false when there is none. An NPC's or a
   * player's entity (they come and go with their sessions) throws a RangeError naming the rule, a
   * neighbour's ghost an Error.
   */
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

/** What a game's RPC error code must look like: 1–64 of A–Z 0–9 _, starting with a letter. */
export const RPC_ERROR_CODE = /^[A-Z][A-Z0-9_]{0,63}$/;

/**
 * The codes the shard itself answers RPCs with (docs/protocol.md): a game's handler cannot use
 * them (one that throws such a code answers `INTERNAL`, and the failure is logged).
 */
export const RESERVED_RPC_CODES: ReadonlySet<string> = new Set([
  'UNKNOWN_METHOD',
  'INTERNAL',
  'HANDED_OVER',
  'NOT_JOINED',
  'TIMEOUT',
  'BUSY',
  'RATE_LIMITED',
]);

/** Why `code` cannot be a game's RPC error code, or undefined when it can. */
export function rpcCodeProblem(code: unknown): string | undefined {
  if (typeof code !== 'string') return `an RpcError code is a string, got ${typeof code}`;
  if (!RPC_ERROR_CODE.test(code))
    return `an RpcError code is 1–64 of A–Z 0–9 _ starting with a letter, got ${JSON.stringify(code.slice(0, 80))}${code.length > 80 ? '…' : ''}`;
  if (RESERVED_RPC_CODES.has(code)) return `the RpcError code ${code} is reserved for the shard's own answers`;
  return undefined;
}

/**
 * An error a game's RPC handler throws to answer with a stable, game-defined code (upper case,
 * digits and underscores, at most 64, starting with a letter; not one of the shard's own:
 * `RESERVED_RPC_CODES`). Any other code throws a RangeError here, naming the rule. A game's own
 * error class named `RpcError` with such a `code` works the same, so game modules need not import
 * this package. Only the code reaches the client; the message stays in the shard.
 */
export class RpcError extends Error {
  constructor(
    readonly code: string,
    message = code,
  ) {
    const problem = rpcCodeProblem(code);
    if (problem !== undefined) throw new RangeError(problem);
    super(message);
    this.name = 'RpcError';
  }
}

/**
 * The extension points of a shard, in the manner of Colyseus rooms and Nakama match handlers. A
 * game's module default-exports (or exports as `hooks`) an object with any of these. Hooks run on
 * the tick thread and must be quick; an exception is caught, logged and counted, never fatal. They
 * are not awaited: a hook may be async, but the tick goes on without waiting for its promise (a
 * rejection is logged and counted as a thrown exception is). Only RPC handlers' promises are
 * awaited, up to `rpc.timeout_ms`.
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
   * still exists meanwhile, so clear whatever it should not come back with. `handedOver`: the
   * player walked on to a neighbouring shard with their entity (its flags and game state go with
   * it; the neighbour's onJoin says `handedOver`): the entity is the neighbour's now, no longer this
   * shard's to change — a leave from this shard, not from the game.
   */
  onLeave?(ctx: GameContext, player: HookPlayer, info: { dropped: boolean; handedOver: boolean }): void;
  /** After the movement intent was accepted; `buttons` are the client's game-defined bits. */
  onInput?(ctx: GameContext, player: HookPlayer, input: { seq: number; buttons: number }): void;
  /** Once per tick, after movement and before snapshots. */
  onTick?(ctx: GameContext): void;
  /**
   * RPC handlers by method name; the result (at most 16 KiB) is sent back as RpcResult.payload. A
   * handler runs at the start of the tick after its call arrived, in arrival order, up to
   * `rpc.max_ms_per_tick` of them a tick. A promise is awaited up to `rpc.timeout_ms` from the
   * call's arrival (then the client gets TIMEOUT).
   */
  rpc?: Record<string, (ctx: GameContext, player: HookPlayer, payload: Uint8Array) => Uint8Array | Promise<Uint8Array>>;
}

const HOOK_NAMES = ['onJoin', 'onLeave', 'onInput', 'onTick'] as const;

/** How long a game module may take to load (its top-level code, awaits included). */
export const LOAD_TIMEOUT_MS = 30_000;

/**
 * Loads a game's hooks from a module path (relative paths resolve from the working directory).
 * Throws naming the module and what is wrong with its export, and when its loading has not
 * finished within `timeoutMs` (a top-level await that never settles).
 */
export async function loadHooks(modulePath: string, timeoutMs = LOAD_TIMEOUT_MS): Promise<GameHooks> {
  const file = isAbsolute(modulePath) ? modulePath : resolve(process.cwd(), modulePath);
  const url = pathToFileURL(file).href;
  let mod: Record<string, unknown>;
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(
              `game.module ${modulePath}: its loading did not finish within ${timeoutMs} ms (a top-level await that never settles?)`,
            ),
          ),
        timeoutMs,
      );
    });
    mod = (await Promise.race([import(url), timeout])) as Record<string, unknown>;
  } catch (err) {
    if ((err as Error).message?.startsWith(`game.module ${modulePath}: its loading`)) throw err;
    // A syntax error: where it is (the loader's SyntaxError does not say).
    const syntax = syntaxError(file);
    const why = syntax ? `${syntax.message} (at ${syntax.at})` : (err as Error).message;
    throw new Error(`game.module ${modulePath}: cannot load it: ${why}`, { cause: err });
  } finally {
    clearTimeout(timer);
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

/**
 * A module's syntax error and where it is (file:line:column), or undefined when it has none. Node's
 * ESM loader gives a SyntaxError without its place; `node --check` prints it. Only on a failed load.
 */
function syntaxError(file: string): { message: string; at: string } | undefined {
  const check = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8', timeout: 10_000 });
  if (check.status === 0) return undefined;
  // "<file>:<line>\n<source line>\n<caret line>\n\nSyntaxError: …"
  const lines = (check.stderr ?? '').split('\n');
  const at = lines.findIndex((l) => l.startsWith(`${file}:`) && /:\d+$/.test(l));
  const message = lines.find((l) => l.startsWith('SyntaxError: '))?.slice('SyntaxError: '.length);
  if (at < 0 || message === undefined) return undefined;
  const caret = lines[at + 2]?.indexOf('^') ?? -1;
  return { message, at: caret >= 0 ? `${lines[at]}:${caret + 1}` : (lines[at] as string) };
}
