// Tag: on each shard one of the players there is "it" (flag bit 1). When "it" comes within 3 units
// of another player, that player becomes "it"; a tagged player cannot tag back for 2 seconds. Run
// a shard with
//   AETHEX_GAMESERVER_GAME_MODULE=examples/game/tag.mjs
// Clients see who is "it" in the entities' flags, hear each tag as a 'tagged' message, and may
// ask with client.rpc('whoIsIt'). Each player's count of tags is kept in their entity's game
// state (ctx.setState), so it follows them to a neighbouring shard and across a restart; they read
// it with client.rpc('score').
//
// Who is "it" lives in the entities' flags, not in this module: the module's variables are this
// process's alone — a restart starts them afresh, and a neighbouring shard has its own — while
// flags go with a player handed over to a neighbour and come back with a rejoining player's entity
// (from the shard's snapshot after a restart). So "it" is found from the flags of the players who
// join (`handedOver`, `rejoined`), and a shard never keeps two: an "it" arriving where there is
// one already is "it" no longer.
const IT = 1;
const TAG_RANGE = 3;
const COOLDOWN_TICKS = 80;

let it; // entity id of the player here who is "it" (rebuilt from flags as players join)
let taggedAt = -Infinity;
const players = new Map(); // entity id → player id, of the players on this shard

// The game state: { tags } as JSON (any encoding will do; the platform only stores the bytes).
const scoreOf = (ctx, entityId) => JSON.parse(new TextDecoder().decode(ctx.state(entityId) ?? new TextEncoder().encode('{"tags":0}')));

/** Passes "it" to another player here, if there is one (a leave took it away). */
function passOn(ctx) {
  it = players.keys().next().value;
  if (it !== undefined) ctx.setFlags(it, IT);
}

export default {
  onJoin(ctx, player) {
    players.set(player.entityId, player.playerId);
    const isIt = ((ctx.flags(player.entityId) ?? 0) & IT) !== 0;
    if (it !== undefined && ctx.position(it) === undefined) it = undefined;
    if (it === undefined) {
      // The first player here, or one who comes back (or walks in) as "it".
      it = player.entityId;
      ctx.setFlags(it, IT);
    } else if (isIt && it !== player.entityId) {
      // This shard has its "it" already (chosen while they were away or on another shard).
      ctx.setFlags(player.entityId, 0);
    }
  },
  onLeave(ctx, player, { dropped, handedOver }) {
    players.delete(player.entityId);
    if (it !== player.entityId) return;
    // A dropped player's entity waits for them to rejoin: it must not come back a second "it".
    // One handed over keeps its flag: it is "it" on the neighbour (unless that one has its own).
    if (dropped && !handedOver) ctx.setFlags(player.entityId, 0);
    passOn(ctx);
  },
  onTick(ctx) {
    if (it === undefined || ctx.tick - taggedAt < COOLDOWN_TICKS) return;
    const p = ctx.position(it);
    if (!p) return;
    for (const other of players.keys()) {
      if (other === it) continue;
      const q = ctx.position(other);
      if (q && Math.hypot(q.x - p.x, q.y - p.y) <= TAG_RANGE) {
        // Counted first: once "it" belongs to a neighbouring shard (a ghost here), its state is the
        // neighbour's (setState is false) and the tag is not this shard's to make.
        const score = scoreOf(ctx, it);
        if (!ctx.setState(it, new TextEncoder().encode(JSON.stringify({ tags: score.tags + 1 })))) return;
        ctx.setFlags(it, 0);
        ctx.setFlags(other, IT);
        ctx.log.info({ from: players.get(it), to: players.get(other) }, 'tagged');
        // Everyone hears who is "it" now (the SDK's 'message' event, topic 'tagged').
        ctx.broadcast('tagged', new TextEncoder().encode(JSON.stringify({ from: players.get(it), to: players.get(other) })));
        it = other;
        taggedAt = ctx.tick;
        return;
      }
    }
  },
  rpc: {
    score(ctx, player) {
      return new TextEncoder().encode(JSON.stringify(scoreOf(ctx, player.entityId)));
    },
    whoIsIt() {
      return new TextEncoder().encode(JSON.stringify({ entityId: it ?? null, playerId: it === undefined ? null : players.get(it) }));
    },
  },
};
