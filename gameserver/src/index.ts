// What a game module may import from the shard (AETHEX_GAMESERVER_GAME_MODULE, docs/gameserver.md):
// the error an RPC handler throws for a game-defined failure, and the hooks' types.
export { type GameContext, type GameHooks, type HookPlayer, RpcError } from './hooks.js';
