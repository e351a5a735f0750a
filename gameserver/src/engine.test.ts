import { aethex } from '@aethex/proto';
import { expect, test } from 'vitest';
import { loadConfig } from './config.js';
import { ShardEngine } from './engine.js';
import { createMetrics, type ShardMetrics } from './metrics.js';
import { HISTORY_TICKS } from './net/delta-history.js';
import { decodeState } from './persist/state-codec.js';
import { step } from './sim/step.js';
import { ID_REST_TICKS, MODE_DORMANT, MODE_OWNED } from './sim/world.js';

// 1 s at 40 Hz: a dropped player's entity waits 40 ticks.
const settings = loadConfig({
  AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
  AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: '1000',
  AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100,-100,100,100',
});
const WINDOW_TICKS = 40;
const out = { send: () => true, kick: () => undefined };
const { ServerMessage } = aethex.v1;

function steps(e: ShardEngine, n: number): void {
  for (let i = 0; i < n; i++) e.step();
}

function joined(e: ShardEngine, sessionId: number, playerId: string): number {
  const r = e.join(sessionId, playerId);
  if (!r.ok) throw new Error(r.message);
  return r.entityId;
}

test('a dropped player’s entity waits where it stood, unsimulated, and is theirs again when they rejoin in time', () => {
  const events: string[] = [];
  const e = new ShardEngine(settings, out, {
    hooks: {
      onJoin: (_c, p) => events.push(`join ${p.playerId}`),
      onLeave: (_c, p) => events.push(`leave ${p.playerId}`),
    },
  });
  const w = e.world;
  const id = joined(e, 1, 'ann');
  const slot = () => w.indexOf(id);
  w.x[slot()] = 0;
  w.y[slot()] = 0;
  for (let seq = 1; seq <= 3; seq++) {
    e.input(1, seq, 2, 0, 0);
    e.step();
  }
  // Two more inputs arrive, one is waiting when the connection drops.
  e.input(1, 4, 2, 0, 0);
  e.input(1, 5, 2, 0, 0);
  expect([w.x[slot()], w.lastSeq[slot()]]).toEqual([6, 3]);

  e.suspend(1);
  expect(w.mode[slot()]).toBe(MODE_DORMANT);
  expect(e.playerCount).toBe(0);
  expect(e.waitingPlayers).toBe(1);
  expect(e.input(1, 6, 2, 0, 0)).toBe('unknown');
  steps(e, WINDOW_TICKS - 1);
  // Not moved by the steps (nor by the moves that were waiting), and not acknowledged past 3.
  expect([w.x[slot()], w.y[slot()], w.lastSeq[slot()]]).toEqual([6, 0, 3]);

  const back = e.join(2, 'ann');
  expect(back).toEqual({ ok: true, entityId: id, lastInputSeq: 3 });
  expect(w.mode[slot()]).toBe(MODE_OWNED);
  expect(e.waitingPlayers).toBe(0);
  // The client re-sends 4 and 5; each moves the entity once.
  e.input(2, 4, 2, 0, 0);
  e.input(2, 5, 2, 0, 0);
  steps(e, 2);
  expect([w.x[slot()], w.lastSeq[slot()]]).toEqual([10, 5]);
  // Long after the window: rejoined players are not expired.
  steps(e, WINDOW_TICKS * 2);
  expect(w.indexOf(id)).toBeGreaterThanOrEqual(0);
  expect(events).toEqual(['join ann', 'leave ann', 'join ann']);
});

test('after the window the entity goes, in the order players dropped; a later join spawns a new one', () => {
  const e = new ShardEngine(settings, out);
  const w = e.world;
  const ann = joined(e, 1, 'ann');
  const bob = joined(e, 2, 'bob');
  const cat = joined(e, 3, 'cat');
  e.suspend(1);
  steps(e, 10);
  e.suspend(2);
  // Cat closed on purpose: gone at once.
  e.leave(3);
  expect(w.indexOf(cat)).toBe(-1);
  expect(e.waitingPlayers).toBe(2);
  steps(e, WINDOW_TICKS - 10);
  expect(w.indexOf(ann)).toBe(-1);
  expect(w.indexOf(bob)).toBeGreaterThanOrEqual(0);
  expect(e.waitingPlayers).toBe(1);
  steps(e, 10);
  expect(w.indexOf(bob)).toBe(-1);
  expect(e.waitingPlayers).toBe(0);
  expect(w.count).toBe(0);
  const again = joined(e, 4, 'ann');
  expect(again).not.toBe(ann);
  expect(w.mode[w.indexOf(again)]).toBe(MODE_OWNED);
});

test('a player dropped twice waits from the second drop', () => {
  const e = new ShardEngine(settings, out);
  const w = e.world;
  const ann = joined(e, 1, 'ann');
  const bob = joined(e, 2, 'bob');
  e.suspend(1);
  steps(e, 5);
  expect(joined(e, 3, 'ann')).toBe(ann);
  e.suspend(2);
  steps(e, 5);
  e.suspend(3);
  // Bob dropped first now and goes first; ann 5 ticks later.
  steps(e, WINDOW_TICKS - 5);
  expect([w.indexOf(bob), w.indexOf(ann) >= 0]).toEqual([-1, true]);
  steps(e, 5);
  expect(w.indexOf(ann)).toBe(-1);
});

test('players restored from a snapshot wait the window from the restart, then go', () => {
  const before = new ShardEngine(settings, out);
  const ann = joined(before, 1, 'ann');
  const bob = joined(before, 2, 'bob');
  const after = new ShardEngine(settings, out, { restored: decodeState(before.persistentState(), settings['engine.max_entities']) });
  expect(after.waitingPlayers).toBe(2);
  steps(after, WINDOW_TICKS - 1);
  expect(joined(after, 1, 'ann')).toBe(ann);
  after.step();
  expect(after.world.indexOf(bob)).toBe(-1);
  expect(after.world.indexOf(ann)).toBeGreaterThanOrEqual(0);
  expect(after.waitingPlayers).toBe(0);
});

test('a rejoin window outside 1 s – 1 h stops the shard naming the key', () => {
  for (const v of ['999', '3600001', '-1', 'soon']) {
    expect(() =>
      loadConfig({ AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks', AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: v }),
    ).toThrow(/engine\.rejoin_window_ms/);
  }
});

test('an offer that rolls back keeps the moves that were waiting when it was made, then applies those held meanwhile', () => {
  const e = new ShardEngine(settings, out);
  const w = e.world;
  const id = joined(e, 1, 'ann');
  const slot = () => w.indexOf(id);
  w.x[slot()] = 0;
  // Two inputs in one tick: the first moves the next step, the second waits for the one after.
  e.input(1, 1, 2, 0, 0);
  e.input(1, 2, 2, 0, 0);
  e.step();
  expect([w.x[slot()], w.lastSeq[slot()]]).toEqual([2, 1]);
  expect(e.offer(id)?.lastInputSeq).toBe(1);
  e.input(1, 3, 2, 0, 0);
  e.step();
  // Frozen on offer.
  expect([w.x[slot()], w.lastSeq[slot()]]).toEqual([2, 1]);
  e.rollback(id);
  steps(e, 3);
  expect([w.x[slot()], w.lastSeq[slot()]]).toEqual([6, 3]);
});

test('an offer held for all of handoff.timeout_ms keeps every input of it, and after the rollback the live ones wait behind them; a flood past that moves nothing more', () => {
  // The longest offer (240 ticks: 6 s at 40 Hz), one input a tick throughout, and then on.
  const long = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_HANDOFF_TIMEOUT_MS: '6000',
    AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '0.5',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-1000,-1000,1000,1000',
  });
  const e = new ShardEngine(long, out);
  const w = e.world;
  const ann = joined(e, 1, 'ann');
  // Far from any wall: every move counts whole.
  w.x[w.indexOf(ann)] = -500;
  const x0 = w.x[w.indexOf(ann)] as number;
  // Both clients read their snapshots (one that does not is dropped as too slow).
  const stepAcked = () => {
    e.step();
    for (const session of [1, 2]) e.ack(session, e.tick);
  };
  e.offer(ann);
  let seq = 0;
  for (; seq < 240; ) {
    expect(e.input(1, ++seq, 0.25, 0, e.tick)).toBe('applied');
    stepAcked();
  }
  expect(e.input(1, seq, 0.25, 0, 0), 'a replay while on offer').toBe('stale');
  e.rollback(ann);
  // The client walks on: each live input waits behind the 240 the offer held (none answered as a
  // flood), and the credit of the frozen ticks catches up on them all.
  for (let t = 0; t < 300; t++) {
    expect(e.input(1, ++seq, 0.25, 0, e.tick)).toBe('applied');
    stepAcked();
  }
  for (let t = 0; t < 20; t++) stepAcked();
  expect(w.lastSeq[w.indexOf(ann)]).toBe(540);
  expect((w.x[w.indexOf(ann)] as number) - x0).toBeCloseTo(540 * 0.25, 3);

  // A client sending far faster than the shard ticks: what the offer's ticks and a full queue do
  // not explain (240 + 160 inputs) moves nothing and is answered with the newest sequence.
  const bob = joined(e, 2, 'bob');
  w.x[w.indexOf(bob)] = -500;
  const x1 = w.x[w.indexOf(bob)] as number;
  e.offer(bob);
  for (let s = 1; s <= 1000; s++) e.input(2, s, 0.25, 0, 0);
  e.rollback(bob);
  for (let t = 0; t < 420; t++) stepAcked();
  expect(w.lastSeq[w.indexOf(bob)]).toBe(1000);
  expect((w.x[w.indexOf(bob)] as number) - x1).toBeCloseTo(400 * 0.25, 3);
});

test('the room a rollback makes for its held inputs goes with the entity when a later offer of it commits before its next input', () => {
  const e = new ShardEngine(settings, out);
  const ann = joined(e, 1, 'ann');
  const room = () => (e as unknown as { rollbackRoom: Map<number, number> }).rollbackRoom;
  e.offer(ann);
  for (let seq = 1; seq <= 10; seq++) e.input(1, seq, 1, 0, 0);
  e.rollback(ann);
  expect(room().get(ann)).toBe(10);
  e.step();
  // The player stands still across the border: offered again and committed.
  e.offer(ann);
  e.commitOffer(ann);
  expect(room().has(ann)).toBe(false);
});

test('inputs re-sent after a rejoin and inputs held while on offer are each applied whole, caught up on within a few steps', () => {
  const e = new ShardEngine(settings, out);
  const w = e.world;
  const ann = joined(e, 1, 'ann');
  const bob = joined(e, 2, 'bob');
  for (const id of [ann, bob]) {
    w.x[w.indexOf(id)] = -90;
    w.y[w.indexOf(id)] = 0;
  }
  const corrections: number[] = [];
  // Ann drops for 30 ticks; her client made 30 moves meanwhile and re-sends them on rejoining.
  e.suspend(1);
  steps(e, 30);
  expect(joined(e, 3, 'ann')).toBe(ann);
  for (let seq = 1; seq <= 30; seq++) e.input(3, seq, 2, 0, 0);
  // Bob's entity is offered for 30 ticks, his 30 moves held, and the offer rolls back.
  e.offer(bob);
  for (let seq = 1; seq <= 30; seq++) {
    e.input(2, seq, 2, 0, 0);
    e.step();
  }
  e.rollback(bob);
  let took = 0;
  while ((w.lastSeq[w.indexOf(ann)] !== 30 || w.lastSeq[w.indexOf(bob)] !== 30) && took < 100) {
    const n = step(w, e.rules, new Uint32Array(8));
    if (n > 0) corrections.push(n);
    took++;
  }
  // Every move applied, none clamped: where the clients predicted, within 12 steps (4 a step).
  expect([w.x[w.indexOf(ann)], w.x[w.indexOf(bob)]]).toEqual([-30, -30]);
  expect(corrections).toEqual([]);
  expect(took).toBeLessThanOrEqual(12);
});

test('a player restored after a restart catches up on the inputs held while the shard was down, and no more', async () => {
  const { encodeState } = await import('./persist/state-codec.js');
  const first = new ShardEngine(settings, out);
  const ann = joined(first, 1, 'ann');
  first.world.x[first.world.indexOf(ann)] = -90;
  first.world.y[first.world.indexOf(ann)] = 0;
  // The shard drained and was down for 3 s (120 ticks) before it restored; ann's client held its
  // moves meanwhile (one a tick) and re-sends them as it rejoins.
  const restarted = (storedMs: number) => {
    const restored = decodeState(encodeState(first.tick, first.world, new Map([[ann, 'ann']])), settings['engine.max_entities']);
    restored.storedMs = storedMs;
    const e = new ShardEngine(settings, out, { restored });
    expect(joined(e, 1, 'ann')).toBe(ann);
    for (let seq = 1; seq <= 100; seq++) e.input(1, seq, 1.5, 0, 0);
    const w = e.world;
    let took = 0;
    while (w.lastSeq[w.indexOf(ann)] !== 100 && took < 200) {
      e.step();
      took++;
    }
    return { took, moved: (w.x[w.indexOf(ann)] as number) + 90 };
  };
  const after = restarted(3000);
  // 4 a step: caught up in 25 ticks, not 100 (lag that lasted until the player stood still).
  expect(after.took).toBeLessThanOrEqual(26);
  expect(after.moved).toBeCloseTo(150, 3);
  // Never further than the time allows: a snapshot stored 0.5 s before gives 20 ticks, no more.
  const short = restarted(500);
  expect(short.took).toBeGreaterThan(70);
});

test('credit is the time an entity really waited, spent on the burst that follows: dropping, rejoining, handoffs or saving it up never outrun max_speed', () => {
  const wide = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: '30000',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100000,-100000,100000,100000',
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '2000',
  });
  const speed = wide['engine.max_speed'];
  const e = new ShardEngine(wide, out);
  const w = e.world;
  let session = 1;
  let seq = 0;
  const id = joined(e, session, 'ann');
  const x = () => w.x[w.indexOf(id)] as number;
  const burst = (n: number) => {
    for (let k = 0; k < n; k++) e.input(session, ++seq, speed, 0, 0);
  };
  // Dropping and rejoining at once, every other tick, with 4 inputs a tick.
  let from = x();
  for (let t = 0; t < 200; t += 2) {
    e.suspend(session);
    expect(joined(e, ++session, 'ann')).toBe(id);
    burst(4);
    e.step();
    burst(4);
    e.step();
  }
  expect(x() - from).toBeLessThanOrEqual(speed * 200 + 1e-3);

  // 300 ticks away, then ordinary play: the credit they earned is gone once caught up on.
  e.suspend(session);
  steps(e, 300);
  joined(e, ++session, 'ann');
  for (let t = 0; t < 100; t++) {
    burst(1);
    e.step();
  }
  from = x();
  for (let t = 0; t < 40; t++) {
    burst(4);
    e.step();
  }
  expect(x() - from).toBeLessThanOrEqual(speed * (40 + 8) + 1e-3);

  // 300 ticks away, then standing still a while before sprinting: the credit of the wait was for
  // inputs re-sent at once, and has lapsed.
  e.suspend(session);
  steps(e, 300);
  joined(e, ++session, 'ann');
  steps(e, 60);
  from = x();
  for (let t = 0; t < 40; t++) {
    burst(4);
    e.step();
  }
  expect(x() - from).toBeLessThanOrEqual(speed * (40 + 8) + 1e-3);

  // Handed over and resumed in the same tick: nothing to catch up on.
  const bob = 0x7000_0001;
  expect(e.adopt({ entityId: bob, x: 0, y: 50, vx: 0, vy: 0, kind: 1, flags: 0, lastInputSeq: 0 })).toBe(true);
  expect(e.resume(99, 'bob', bob, 0).ok).toBe(true);
  for (let k = 1; k <= 12; k++) e.input(99, k, speed, 0, 0);
  steps(e, 3);
  expect(w.x[w.indexOf(bob)]).toBeLessThanOrEqual(speed * 3 + 1e-3);
});

test('ticks the loop dropped may be caught up on: a player moving on does not lag behind by them for good', () => {
  const e = new ShardEngine(settings, out);
  const w = e.world;
  const id = joined(e, 1, 'ann');
  const slot = () => w.indexOf(id);
  w.x[slot()] = -90;
  let seq = 0;
  for (let t = 0; t < 20; t++) {
    e.input(1, ++seq, 1, 0, 0);
    e.step();
  }
  // The process stalled for 100 ticks: their inputs arrive at once, and the loop drops the ticks.
  for (let k = 0; k < 100; k++) e.input(1, ++seq, 1, 0, 0);
  e.skipped(100);
  const from = w.x[slot()] as number;
  for (let t = 0; t < 60; t++) {
    e.input(1, ++seq, 1, 0, 0);
    e.step();
  }
  // Caught up, the last waiting move too: moves had been left waiting after JITTER_BUFFER_STEPS
  // steps in a row (the burst being worked off), so once one was left a step with the credit left
  // applied it as well.
  expect(w.lastSeq[slot()]).toBe(seq);
  // Every move applied once.
  expect(w.x[slot()]).toBeCloseTo(from + (seq - 20), 3);
});

test('a shard restored from its snapshot goes on exactly as the one that saved it: the same state hash tick for tick', () => {
  const npcs = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100,-100,100,100',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '50',
  });
  const a = new ShardEngine(npcs, out);
  steps(a, 100);
  const b = new ShardEngine(npcs, out, { restored: decodeState(a.persistentState(), npcs['engine.max_entities']) });
  expect(b.world.stateHash()).toBe(a.world.stateHash());
  for (let t = 0; t < 200; t++) {
    a.step();
    b.step();
    expect(b.world.stateHash()).toBe(a.world.stateHash());
  }
});

test('acknowledging ticks never sent counts for nothing: a client that reads nothing is dropped as slow however it acks', () => {
  const quick = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_GATEWAY_SLOW_SKIP_TICKS: '8',
    AETHEX_GAMESERVER_GATEWAY_SLOW_DROP_TICKS: '40',
  });
  const kicks: [number, aethex.v1.ReasonCode][] = [];
  // Its socket takes 10 snapshots, then no more: the client reads nothing.
  let room = 10;
  const e = new ShardEngine(quick, { send: () => room-- > 0, kick: (id, reason) => kicks.push([id, reason]) });
  joined(e, 1, 'ann');
  for (let t = 0; t < 100 && kicks.length === 0; t++) {
    e.step();
    // It guesses the newest tick from the time, and acknowledges it.
    e.ack(1, e.tick);
  }
  expect(kicks).toEqual([[1, aethex.v1.ReasonCode.REASON_CODE_TOO_SLOW]]);
  expect(e.tick).toBeLessThanOrEqual(10 + 40 + 2);
});

/**
 * An engine with one player, `ann` (session 1), whose client acknowledges every snapshot `delay`
 * ticks after it was cut; `run(ticks)` steps it. `offered` counts the snapshots sent, `kicks` the kicks.
 */
function distantClient(delay: number, metrics?: ShardMetrics) {
  const kicks: [number, aethex.v1.ReasonCode][] = [];
  const counts = { offered: 0 };
  const sent: number[] = [];
  const e = new ShardEngine(
    settings,
    {
      send: () => {
        counts.offered++;
        return true;
      },
      kick: (id, reason) => kicks.push([id, reason]),
    },
    metrics ? { metrics } : {},
  );
  joined(e, 1, 'ann');
  const run = (ticks: number) => {
    for (let t = 0; t < ticks; t++) {
      const due = sent.filter((tick) => tick + delay <= e.tick);
      for (const tick of due) e.ack(1, tick);
      sent.splice(0, due.length);
      const before = counts.offered;
      e.step();
      if (counts.offered > before) sent.push(e.tick);
    }
  };
  return { e, kicks, counts, run };
}

test('a far client that reads everything gets every snapshot; one that then stops reading is cut back and dropped', () => {
  // 400 ms away (16 ticks at 40 Hz), twice gateway.slow_skip_ticks: each snapshot is acknowledged
  // 16 ticks after it was cut.
  const rtt = 16;
  const { e, kicks, counts, run } = distantClient(rtt);
  run(400);
  // The first round trip goes by before any acknowledgement tells the distance.
  expect(counts.offered).toBeGreaterThanOrEqual(400 - 2 * rtt);
  expect(kicks).toEqual([]);
  // It stops reading (its socket's buffers take what is sent): nothing more is acknowledged. One
  // snapshot in 4 ticks once the lag is past its round trip, then dropped as slow.
  const from = counts.offered;
  let ticks = 0;
  while (kicks.length === 0 && ticks < 400) {
    e.step();
    ticks++;
  }
  expect(kicks).toEqual([[1, aethex.v1.ReasonCode.REASON_CODE_TOO_SLOW]]);
  expect(ticks).toBeLessThanOrEqual(settings['gateway.slow_drop_ticks'] + 1);
  expect(counts.offered - from).toBeLessThanOrEqual(settings['gateway.slow_skip_ticks'] + rtt + ticks / 4 + 1);
});

test('a client that holds its acknowledgements back past a second is cut back to one snapshot in four, each one skipped counted in aether_snapshots_dropped_total', async () => {
  // Each snapshot acknowledged 3 s (120 ticks) after it was cut: a round trip no player has, and
  // short of gateway.slow_drop_ticks (200), so the client is never dropped.
  const metrics = createMetrics();
  const { kicks, counts, run } = distantClient(120, metrics);
  run(800);
  expect(kicks).toEqual([]);
  expect(counts.offered).toBeGreaterThan(800 / 4 - 10);
  expect(counts.offered).toBeLessThanOrEqual(800 / 4 + settings['gateway.slow_skip_ticks'] + 2);
  // One session, whose socket takes everything: every tick it got no snapshot is one skipped.
  expect((await metrics.snapshotsDropped.get()).values[0]?.value).toBe(800 - counts.offered);
});

/** An output that keeps what each session is sent, decoded, in `received` (session id → messages). */
function recording() {
  const received = new Map<number, aethex.v1.ServerMessage[]>();
  const output = {
    send: (id: number, bytes: Uint8Array) => {
      const list = received.get(id) ?? [];
      list.push(ServerMessage.decode(bytes));
      received.set(id, list);
      return true;
    },
    kick: () => undefined,
  };
  return { output, received };
}

test('an acknowledgement older than one already taken moves nothing back: the next snapshot is still a delta against the newer', () => {
  const { output, received } = recording();
  const e = new ShardEngine(settings, output);
  joined(e, 1, 'ann');
  steps(e, 5);
  // Reordered on the way: 4 arrives first, then 2 (an Input's ack_tick) and 3 (an Ack).
  e.ack(1, 4);
  e.step();
  e.input(1, 1, 0, 0, 2);
  e.step();
  e.ack(1, 3);
  e.step();
  const snapshots = (received.get(1) ?? []).flatMap((m) => (m.snapshot ? [m.snapshot] : []));
  expect(snapshots.slice(-3).map((s) => [s.tick, s.baseTick])).toEqual([
    [6, 4],
    [7, 4],
    [8, 4],
  ]);
});

test('a clamped move is answered with a Correction at the input that moved the entity, not one still waiting behind it', () => {
  const { output, received } = recording();
  const e = new ShardEngine(settings, output);
  const w = e.world;
  const speed = settings['engine.max_speed'];
  const id = joined(e, 1, 'ann');
  const slot = () => w.indexOf(id);
  w.x[slot()] = 0;
  w.y[slot()] = 0;
  // Three in one tick: 1, a speed hack, moves the next step (clamped); 2 and 3 wait behind it.
  e.input(1, 1, speed * 10, 0, 0);
  e.input(1, 2, speed, 0, 0);
  e.input(1, 3, speed, 0, 0);
  e.step();
  expect(w.lastSeq[slot()]).toBe(1);
  const corrections = (received.get(1) ?? []).flatMap((m) => (m.correction ? [m.correction] : []));
  expect(corrections.map((c) => [c.tick, c.lastInputSeq, c.position?.x, c.position?.y])).toEqual([[e.tick, 1, speed, 0]]);
});

test('every clamped move is counted in aether_corrections_total, whether or not its client’s socket takes the Correction', async () => {
  const metrics = createMetrics();
  const corrected: number[] = [];
  // Bob's socket is full: it takes nothing.
  const e = new ShardEngine(
    settings,
    {
      send: (id, bytes) => {
        if (id === 2) return false;
        if (ServerMessage.decode(bytes).correction) corrected.push(id);
        return true;
      },
      kick: () => undefined,
    },
    { metrics },
  );
  const w = e.world;
  const speed = settings['engine.max_speed'];
  const counted = async () => (await metrics.corrections.get()).values[0]?.value;
  const ann = joined(e, 1, 'ann');
  const bob = joined(e, 2, 'bob');
  for (const id of [ann, bob]) {
    w.x[w.indexOf(id)] = 0;
    w.y[w.indexOf(id)] = 0;
  }
  // Both speed hack in the same tick.
  e.input(1, 1, speed * 3, 0, 0);
  e.input(2, 1, 0, speed * 3, 0);
  e.step();
  expect(corrected).toEqual([1]);
  expect(await counted()).toBe(2);
  // A move within max_speed is no correction; one into the world's edge is.
  e.input(1, 2, speed, 0, 0);
  e.step();
  expect(await counted()).toBe(2);
  w.x[w.indexOf(ann)] = 99;
  e.input(1, 3, speed, 0, 0);
  e.step();
  expect(corrected).toEqual([1, 1]);
  expect(await counted()).toBe(3);
});

test('a restarted neighbour is told of players dropped here (theirs for sure), not of players restored here', () => {
  const before = new ShardEngine(settings, out);
  const carl = joined(before, 1, 'carl');
  const e = new ShardEngine(settings, out, { restored: decodeState(before.persistentState(), settings['engine.max_entities']) });
  const ann = joined(e, 1, 'ann');
  const bob = joined(e, 2, 'bob');
  e.suspend(2);
  expect(new Set(e.claimedPlayers())).toEqual(new Set([ann, bob]));
  expect(joined(e, 3, 'carl')).toBe(carl);
  expect(new Set(e.claimedPlayers())).toEqual(new Set([ann, bob, carl]));
  steps(e, WINDOW_TICKS);
  expect(new Set(e.claimedPlayers())).toEqual(new Set([ann, carl]));
});

test('a dropped player keeps their place: at the player capacity newcomers are refused until the window ends', () => {
  const two = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: '1000',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '2',
  });
  const e = new ShardEngine(two, out);
  joined(e, 1, 'ann');
  const bob = joined(e, 2, 'bob');
  e.suspend(2);
  expect(e.hasRoomForPlayer).toBe(false);
  expect(e.join(3, 'cat')).toMatchObject({
    ok: false,
    reason: aethex.v1.ReasonCode.REASON_CODE_SHARD_FULL,
    message: expect.stringMatching(/1 of them expected back/),
  });
  expect(joined(e, 4, 'bob')).toBe(bob);
  e.suspend(4);
  steps(e, WINDOW_TICKS);
  expect(e.hasRoomForPlayer).toBe(true);
  expect(e.join(5, 'cat').ok).toBe(true);
});

test("a session that replaces another starts from the moves actually made: the old one's queued moves go, and the new one's inputs from Welcome.last_input_seq on are applied", () => {
  const buttons: number[] = [];
  const e = new ShardEngine(settings, out, { hooks: { onInput: (_c, _p, input) => void buttons.push(input.buttons) } });
  const w = e.world;
  const speed = settings['engine.max_speed'];
  const id = joined(e, 1, 'ann');
  const slot = () => w.indexOf(id);
  w.x[slot()] = 0;
  w.y[slot()] = 0;
  // The first device sends a burst east, which queues.
  for (let seq = 1; seq <= 20; seq++) e.input(1, seq, speed, 0, 0);
  steps(e, 3);
  const applied = w.lastSeq[slot()] as number;
  expect(applied).toBeLessThan(20);
  const x = w.x[slot()] as number;
  // A second device takes over; its Welcome says what moved, and it goes north from there.
  const r = e.join(2, 'ann');
  expect(r).toMatchObject({ ok: true, entityId: id, lastInputSeq: applied });
  for (let k = 1; k <= 10; k++) {
    expect(e.input(2, applied + k, 0, speed, 0, 1)).toBe('applied');
    e.step();
  }
  expect(w.lastSeq[slot()]).toBe(applied + 10);
  expect([w.x[slot()], w.y[slot()]]).toEqual([x, speed * 10]);
  expect(buttons.filter((b) => b === 1)).toHaveLength(10);
});

test('a session that replaces one whose inputs stopped arriving catches up on the moves re-sent for those ticks, as a rejoin after a drop does', () => {
  // The client walks east a move a tick; its inputs stop arriving for 30 ticks (the connection
  // stalls); it joins again (replacing, or after the shard saw the drop, within the rejoin window
  // of 40 ticks), re-sends the 30 moves it made meanwhile and walks on a move a tick. How far
  // behind its inputs the entity stays:
  const behindAfter = (how: 'replace' | 'drop') => {
    const e = new ShardEngine(settings, out);
    const w = e.world;
    const id = joined(e, 1, 'ann');
    w.x[w.indexOf(id)] = -90;
    let seq = 0;
    for (let t = 0; t < 20; t++) {
      e.input(1, ++seq, 0.1, 0, 0);
      e.step();
    }
    if (how === 'drop') e.suspend(1);
    steps(e, 30);
    expect(e.join(2, 'ann')).toMatchObject({ ok: true, entityId: id, lastInputSeq: 20 });
    for (let k = 0; k < 30; k++) e.input(2, ++seq, 0.1, 0, 0);
    for (let t = 0; t < 100; t++) {
      e.input(2, ++seq, 0.1, 0, 0);
      e.step();
    }
    return seq - (w.lastSeq[w.indexOf(id)] as number);
  };
  expect(behindAfter('drop')).toBeLessThanOrEqual(1);
  expect(behindAfter('replace')).toBeLessThanOrEqual(1);
});

test('a shard whose entity slots are all taken refuses a join SHARD_FULL naming the entity capacity, though player places are free', () => {
  const small = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '6',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '3',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '3',
  });
  const e = new ShardEngine(small, out);
  const ctx = e.context;
  joined(e, 1, 'ann');
  // The game's entities take the last two slots: 3 NPCs, ann and these.
  const rock = ctx.spawn(0, 0, 2);
  ctx.spawn(1, 1, 2);
  expect(e.hasRoomForPlayer).toBe(false);
  expect(e.join(2, 'bob')).toEqual({
    ok: false,
    reason: aethex.v1.ReasonCode.REASON_CODE_SHARD_FULL,
    message: 'the shard is at its entity capacity of 6',
  });
  expect(e.playerCount).toBe(1);
  // A slot freed, bob gets it.
  ctx.despawn(rock);
  expect(e.join(3, 'bob').ok).toBe(true);
});

test('a player restored waiting with one entity who arrives by handoff with another: their place is freed and taken by handoff, so the stream shows both', () => {
  const places: string[] = [];
  const onPlace = (event: 'taken' | 'freed', playerId: string, handedOver: boolean) =>
    places.push(`${event} ${playerId}${handedOver ? ' by handoff' : ''}`);
  const before = new ShardEngine(settings, out);
  const old = joined(before, 1, 'ann');
  // Restarted from a snapshot that still holds ann (her handoff away was lost with the crash).
  const e = new ShardEngine(settings, out, { restored: decodeState(before.persistentState(), settings['engine.max_entities']), onPlace });
  expect(places).toEqual(['taken ann']);
  // She rejoined a neighbour meanwhile, with a new entity, and walks back in with it.
  expect(e.adopt({ entityId: 0x7000_0001, x: 1, y: 1, vx: 0, vy: 0, kind: 1, flags: 0, lastInputSeq: 0 })).toBe(true);
  expect(e.resume(2, 'ann', 0x7000_0001).ok).toBe(true);
  expect(places).toEqual(['taken ann', 'freed ann by handoff', 'taken ann by handoff']);
  expect(e.world.indexOf(old)).toBe(-1);
  // A second resume of the same entity (the client resumed again) tells nothing more.
  places.length = 0;
  expect(e.resume(3, 'ann', 0x7000_0001).ok).toBe(true);
  expect(places).toEqual([]);
});

test('a session whose player was handed over keeps no place, however long its client keeps the connection', () => {
  const e = new ShardEngine({ ...settings, 'engine.max_players': 1 }, out);
  const ann = joined(e, 1, 'ann');
  e.offer(ann);
  e.commitOffer(ann);
  steps(e, 100);
  // Session 1 is still open (its client has not closed it), but ann is the neighbour's now.
  expect(e.join(2, 'bob').ok).toBe(true);
  expect(e.join(3, 'cat')).toMatchObject({ ok: false, message: 'the shard is at its player capacity of 1 (0 of them expected back)' });
  e.leave(1);
  expect(e.join(3, 'cat').ok).toBe(false);
});

test('a place is taken and freed once per player: a drop and a rejoin keep it, a leave, the window’s end, a handoff and a drain free it; a handoff’s say so', () => {
  const places: string[] = [];
  const onPlace = (event: 'taken' | 'freed', playerId: string, handedOver: boolean) =>
    places.push(`${event} ${playerId}${handedOver ? ' by handoff' : ''}`);
  const e = new ShardEngine(settings, out, { onPlace });
  joined(e, 1, 'ann');
  joined(e, 2, 'bob');
  const cat = joined(e, 3, 'cat');
  e.suspend(1);
  joined(e, 4, 'ann'); // rejoined in time
  joined(e, 5, 'ann'); // replaces session 4
  e.leave(2);
  e.leave(2); // idempotent
  e.suspend(5);
  steps(e, WINDOW_TICKS);
  expect(places).toEqual(['taken ann', 'taken bob', 'taken cat', 'freed bob', 'freed ann']);

  // Handed over: the place goes with the entity, and comes with one handed in.
  places.length = 0;
  joined(e, 6, 'dan');
  e.offer(cat);
  e.commitOffer(cat);
  e.leave(3); // the redirected client closes later: nothing more
  expect(e.adopt({ entityId: 0x7000_0001, x: 1, y: 1, vx: 0, vy: 0, kind: 1, flags: 0, lastInputSeq: 0 })).toBe(true);
  expect(e.resume(7, 'eve', 0x7000_0001).ok).toBe(true);
  expect(e.resume(8, 'eve', 0x7000_0001).ok).toBe(true); // the same resume again: no second place
  e.leave(8);
  expect(places).toEqual(['taken dan', 'freed cat by handoff', 'taken eve by handoff', 'freed eve']);

  // A drain frees every place and keeps the state; the restart takes them again.
  places.length = 0;
  e.detach(6);
  e.releasePlaces();
  e.releasePlaces();
  expect(places).toEqual(['freed dan']);
  places.length = 0;
  const after = new ShardEngine(settings, out, { onPlace, restored: decodeState(e.persistentState(), settings['engine.max_entities']) });
  expect(places).toEqual(['taken dan']);
  joined(after, 1, 'dan');
  steps(after, WINDOW_TICKS);
  expect(places).toEqual(['taken dan']);
  after.leave(1);
  expect(places).toEqual(['taken dan', 'freed dan']);
});

test('a player resuming here after a handoff leaves no other entity of theirs behind: not a replaced session’s, not a waiting one', () => {
  const joins: string[] = [];
  const e = new ShardEngine(settings, out, {
    hooks: { onJoin: (_c, p, { rejoined, handedOver }) => joins.push(`${p.playerId} rejoined=${rejoined} handedOver=${handedOver}`) },
  });
  const w = e.world;
  const handedOver = (entityId: number) => {
    expect(e.adopt({ entityId, x: 1, y: 1, vx: 0, vy: 0, kind: 1, flags: 0, lastInputSeq: 7 })).toBe(true);
    return entityId;
  };
  // Ann is connected here on another device when her handed-over entity arrives.
  const annHere = joined(e, 1, 'ann');
  const annOver = handedOver(0x7000_0001);
  expect(e.resume(2, 'ann', annOver)).toEqual({ ok: true, entityId: annOver, lastInputSeq: 7 });
  expect(w.indexOf(annHere)).toBe(-1);
  // Bob dropped here, then came back through a neighbour.
  const bobHere = joined(e, 3, 'bob');
  e.suspend(3);
  const bobOver = handedOver(0x6000_0001);
  expect(e.resume(4, 'bob', bobOver).ok).toBe(true);
  expect([w.indexOf(bobHere), e.waitingPlayers]).toEqual([-1, 0]);
  steps(e, WINDOW_TICKS * 2);
  expect(e.playerCount).toBe(2);
  expect(w.count).toBe(settings['engine.npc_count'] + 2);
  // The game is told who walked in from a neighbour; a second resume of the same entity replaces
  // a session it already saw arrive.
  expect(e.resume(5, 'bob', bobOver).ok).toBe(true);
  expect(joins).toEqual([
    'ann rejoined=false handedOver=false',
    'ann rejoined=false handedOver=true',
    'bob rejoined=false handedOver=false',
    'bob rejoined=false handedOver=true',
    'bob rejoined=true handedOver=false',
  ]);
});

test('a restarted neighbour is told of players on offer too (still owned here), and a drain tells the game the entity waits', () => {
  const leaves: boolean[] = [];
  const e = new ShardEngine(settings, out, { hooks: { onLeave: (_c, _p, { dropped }) => leaves.push(dropped) } });
  const ann = joined(e, 1, 'ann');
  e.offer(ann);
  expect([...e.claimedPlayers()]).toEqual([ann]);
  e.detach(1);
  expect(leaves).toEqual([true]);
});

test('a hook’s game message is refused with the problem named: topic shape, payload type and size', () => {
  const e = new ShardEngine(settings, out);
  joined(e, 1, 'ann');
  const ctx = e.context;
  expect(ctx.send('ann', 'score.update', new Uint8Array(16 * 1024))).toBe(true);
  expect(ctx.send('nobody', 'score.update', new Uint8Array(1))).toBe(false);
  expect(ctx.broadcast('round:end', new Uint8Array(0))).toBe(1);
  expect(() => ctx.send('ann', 'no spaces', new Uint8Array(1))).toThrow(/topic is 1–64 of A–Z a–z 0–9 _ \. : -, got "no spaces"/);
  expect(() => ctx.send('ann', '', new Uint8Array(1))).toThrow(/topic is 1–64/);
  expect(() => ctx.broadcast('x'.repeat(65), new Uint8Array(1))).toThrow(/topic is 1–64/);
  expect(() => ctx.send('ann', 'ok', 'text' as unknown as Uint8Array)).toThrow(/payload is a Uint8Array, got string/);
  expect(() => ctx.send('ann', 'ok', new Uint8Array(16 * 1024 + 1))).toThrow(/payload is at most 16384 bytes, got 16385/);
});

test('game state: a copy per entity, checked; it travels with a handoff, may change on offer, stays on a rollback, waits with a dropped player, survives a restore and goes with the entity', () => {
  const e = new ShardEngine(settings, out);
  const ctx = e.context;
  const w = e.world;
  const bytes = (...b: number[]) => new Uint8Array(b);
  const ann = joined(e, 1, 'ann');
  const mine = bytes(1, 2, 3);
  expect(ctx.setState(ann, mine)).toBe(true);
  mine[0] = 99; // the shard kept a copy
  const read = ctx.state(ann) as Uint8Array;
  read[1] = 99; // and hands out copies
  expect(ctx.state(ann)).toEqual(bytes(1, 2, 3));
  const buf = Buffer.from([1, 2, 3]); // a Buffer's slice() would be a view
  expect(ctx.setState(ann, buf)).toBe(true);
  buf[0] = 99;
  expect(ctx.state(ann)).toEqual(bytes(1, 2, 3));
  expect(() => ctx.setState(ann, new Uint8Array(4097))).toThrow('game state of 4097 bytes is over the limit of 4096');
  expect(() => ctx.setState(ann, 'gold' as unknown as Uint8Array)).toThrow('game state must be a Uint8Array or undefined, got string');
  expect(ctx.setState(ann, new Uint8Array(4096))).toBe(true);
  expect(ctx.setState(ann, bytes(1, 2, 3))).toBe(true);
  expect(ctx.setState(123_456, bytes(1))).toBe(false);
  expect(ctx.state(123_456)).toBeUndefined();

  // On offer: the offer carries the state of that moment; a change made meanwhile is kept here
  // (the commit carries it on: docs/sharding.md), and a rollback keeps it.
  const offered = e.offer(ann);
  expect(offered?.state).toEqual(bytes(1, 2, 3));
  expect(ctx.setState(ann, bytes(4))).toBe(true);
  expect(offered?.state).toEqual(bytes(1, 2, 3));
  expect(w.gameState.get(ann)).not.toBe(offered?.state);
  e.rollback(ann);
  expect(ctx.state(ann)).toEqual(bytes(4));
  expect(ctx.setState(ann, bytes(4, 5))).toBe(true);
  // Committed: the neighbour has it, its ghost here has none (and takes none).
  const sent = e.offer(ann);
  e.commitOffer(ann);
  expect(ctx.state(ann)).toBeUndefined();
  expect(ctx.setState(ann, bytes(6))).toBe(false);
  expect(w.gameState.has(ann)).toBe(false);

  // The neighbour adopts it with its state, and a resuming player finds it.
  const b = new ShardEngine(settings, out);
  expect(b.adopt(sent as NonNullable<typeof sent>)).toBe(true);
  expect(b.resume(1, 'ann', ann).ok).toBe(true);
  expect(b.context.state(ann)).toEqual(bytes(4, 5));

  // A dropped player's entity keeps it while it waits; a restore brings it back; a leave clears it.
  b.context.setState(ann, bytes(7));
  b.suspend(1);
  expect(b.context.state(ann)).toEqual(bytes(7));
  expect(b.context.setState(ann, bytes(8))).toBe(true); // onLeave({ dropped }) may change it
  const restored = new ShardEngine(settings, out, { restored: decodeState(b.persistentState(), settings['engine.max_entities']) });
  expect(joined(restored, 1, 'ann')).toBe(ann);
  expect(restored.context.state(ann)).toEqual(bytes(8));
  restored.leave(1);
  expect(restored.world.gameState.size).toBe(0);

  // What the game wrote to a player is counted (a late change from a handoff must not undo it),
  // and the count goes with the entity.
  const cat = joined(e, 9, 'cat');
  ctx.setState(cat, bytes(1));
  ctx.setFlags(cat, 2);
  ctx.setFlags(cat, 3);
  expect([w.stateWrites.get(cat), w.flagWrites.get(cat)]).toEqual([1, 2]);
  // Flags are 32 bits: anything else is refused, naming it, not wrapped into other bits. The
  // negative numbers JavaScript's bit operators give for bit 31 are those bits.
  for (const bad of [2 ** 32, -(2 ** 31) - 1, 1.5, Number.NaN, '7' as unknown as number])
    expect(() => ctx.setFlags(cat, bad), String(bad)).toThrow(/^flags must be 32 bits: an integer from -2\^31 to 2\^32 - 1, got /);
  expect(ctx.flags(cat)).toBe(3);
  expect(ctx.setFlags(cat, 2 ** 32 - 1)).toBe(true);
  expect(ctx.flags(cat)).toBe(2 ** 32 - 1);
  expect(ctx.setFlags(cat, 1 | (1 << 31))).toBe(true);
  expect(ctx.flags(cat)).toBe(2 ** 31 + 1);
  expect(ctx.setFlags(cat, ~0)).toBe(true);
  expect(ctx.flags(cat)).toBe(2 ** 32 - 1);
  ctx.setFlags(cat, 3);
  e.leave(9);
  expect([w.stateWrites.has(cat), w.flagWrites.has(cat)]).toEqual([false, false]);

  // A spawn at a position that is not finite is refused, naming it.
  expect(() => ctx.spawn(Number.NaN, 0, 2)).toThrow(/finite position, got \(NaN, 0\)/);
  expect(() => ctx.spawn(0, Number.POSITIVE_INFINITY, 2)).toThrow(RangeError);

  // A game entity's state goes with it; its id, given again later, starts without one.
  const box = ctx.spawn(0, 0, 2);
  ctx.setState(box, bytes(1));
  ctx.despawn(box);
  steps(e, e.world.idRestTicks + 1);
  // (The ids of the players who left come back too, the oldest first.)
  const again = [ctx.spawn(0, 0, 2), ctx.spawn(0, 0, 2), ctx.spawn(0, 0, 2)];
  expect(again).toContain(box);
  for (const id of again) expect(ctx.state(id)).toBeUndefined();
});

test('a player whose connection drops while their entity is on offer keeps their place: a rollback leaves the entity waiting, a commit leaves the redirect to it', () => {
  const places: string[] = [];
  const e = new ShardEngine(settings, out, { onPlace: (event, playerId) => places.push(`${event} ${playerId}`) });
  const w = e.world;
  const redirect = (shardName: string) => ({
    message: { address: 'ws://127.0.0.1:1', resumeToken: `token-${shardName}`, lastInputSeq: 3, shardName },
    forMs: 500, // 20 ticks
  });
  // Rolled back: the entity waits for the player where it stood, as after any drop.
  const ann = joined(e, 1, 'ann');
  e.offer(ann);
  expect(e.suspend(1)).toBe(true);
  expect(e.join(2, 'ann')).toMatchObject({ ok: false, reason: aethex.v1.ReasonCode.REASON_CODE_NOT_READY });
  expect([...e.claimedPlayers()]).toEqual([ann]);
  e.rollback(ann);
  expect([w.mode[w.indexOf(ann)], e.waitingPlayers]).toEqual([MODE_DORMANT, 1]);
  expect(e.join(3, 'ann')).toMatchObject({ ok: true, entityId: ann });

  // Committed (the engine's own behaviour: Sharding never commits such an offer, it rolls it back
  // on the accept): the player's next join is answered with the redirect, once, until it expires.
  const bob = joined(e, 4, 'bob');
  e.offer(bob);
  e.suspend(4);
  expect(e.commitOffer(bob, redirect('east'))).toBeUndefined();
  const eve = joined(e, 5, 'eve');
  e.offer(eve);
  e.suspend(5);
  e.commitOffer(eve, redirect('east'));
  steps(e, 19);
  expect(e.join(6, 'bob')).toMatchObject({ ok: false, redirect: { resumeToken: 'token-east', shardName: 'east' } });
  // A client that got it and comes back failed to resume: the token would only send it back.
  const again = e.join(7, 'bob');
  expect(again.ok && again.entityId !== bob).toBe(true);
  e.step();
  const late = e.join(8, 'eve');
  expect(late.ok && late.entityId !== eve).toBe(true);
  expect(places).toEqual(['taken ann', 'taken bob', 'freed bob', 'taken eve', 'freed eve', 'taken bob', 'taken eve']);
});

test('a redirect remembered for a handed-over player: kept through a drop, forgotten once the client closes the old connection itself or has an entity here again', () => {
  const e = new ShardEngine(settings, out);
  const forMs = 60_000;
  const cat = joined(e, 1, 'cat');
  e.offer(cat);
  // Connected: the redirect goes to the session and is remembered too (it may never arrive).
  expect(e.commitOffer(cat, { message: { shardName: 'east', resumeToken: 'one' }, forMs })).toBe(1);
  // The connection drops (the redirect stalled on the way): the rejoin is answered with it.
  e.suspend(1);
  expect(e.join(2, 'cat')).toMatchObject({ ok: false, redirect: { resumeToken: 'one' } });
  // Handed over again after a (failed) resume and a new join here, she drops once more.
  const catAgain = joined(e, 7, 'cat');
  e.offer(catAgain);
  e.commitOffer(catAgain, { message: { shardName: 'east', resumeToken: 'three' }, forMs });
  e.suspend(7);
  // Dan's client resumed on the neighbour and closed its old connection (1000): nothing to redirect.
  const dan = joined(e, 3, 'dan');
  e.offer(dan);
  e.commitOffer(dan, { message: { shardName: 'east', resumeToken: 'two' }, forMs });
  e.leave(3);
  expect(e.join(4, 'dan')).toMatchObject({ ok: true });
  // Cat walked back: handed over to this shard again, she resumes here; her later joins (a drop,
  // a rejoin) find her entity, not the redirect that waited for her.
  e.removeGhost(catAgain);
  expect(e.adopt({ entityId: catAgain, x: 1, y: 1, vx: 0, vy: 0, kind: 1, flags: 0, lastInputSeq: 9 })).toBe(true);
  expect(e.resume(5, 'cat', catAgain).ok).toBe(true);
  e.suspend(5);
  expect(e.join(6, 'cat')).toMatchObject({ ok: true, entityId: catAgain });
  expect(e.world.mode[e.world.indexOf(catAgain)]).toBe(MODE_OWNED);
});

test('a freed id rests longer than a client may go without a snapshot and stay connected: no client takes a new entity for an old one', () => {
  let reading = true;
  const kicks: number[] = [];
  const e = new ShardEngine(settings, { send: () => reading, kick: (id) => kicks.push(id) });
  joined(e, 1, 'ann');
  const ctx = e.context;
  const rock = ctx.spawn(10, 10, 5);
  for (let t = 0; t < 5; t++) {
    e.step();
    e.ack(1, e.tick);
  }
  // Ann's socket takes nothing for a while, short of gateway.slow_drop_ticks: the rock goes, and
  // a fireball comes after ID_REST_TICKS, while her view still holds the rock.
  reading = false;
  ctx.despawn(rock);
  steps(e, ID_REST_TICKS + 10);
  const fireball = ctx.spawn(-20, 5, 9);
  expect(fireball).not.toBe(rock);
  expect(kicks).toEqual([]);
  // Once no connected client can still hold it (nor a neighbour an offer of it: the resume
  // timeout), the id is given again (a game spawning projectiles all the time never uses up its range).
  expect(e.world.idRestTicks).toBeGreaterThanOrEqual(settings['gateway.slow_drop_ticks'] + HISTORY_TICKS);
  expect(e.world.idRestTicks).toBeGreaterThanOrEqual(settings['handoff.resume_timeout_ms'] / settings['engine.tick_rate_ms']);
  steps(e, e.world.idRestTicks - (ID_REST_TICKS + 10));
  expect(kicks).toEqual([1]);
  const later = ctx.spawn(0, 0, 9);
  expect(later).toBe(rock);
});

test('players who join and leave, or drop and never come back, do not use up the shard’s ids; a restored player’s id is not given again', () => {
  // A soak saw every join take a new id for good: 16,777,215 of them last about 115 days of a
  // shard at 2,000 players in 20-minute sessions.
  const e = new ShardEngine(settings, out);
  const joins = 6000;
  for (let k = 1; k <= joins; k++) {
    joined(e, k, `p${k}`);
    if (k % 2 === 0) e.leave(k);
    else e.suspend(k);
    e.step();
  }
  const window = settings['engine.rejoin_window_ms'] / settings['engine.tick_rate_ms'];
  // Ids in use or resting at once: the dropped players' (their window, then the rest) and the
  // leavers' (the rest): about (window + rest) / 2 + rest / 2 per join a tick, far below a join each.
  expect(e.world.nextEntityId - 1).toBeLessThan(window / 2 + e.world.idRestTicks + 100);
  expect(e.world.nextEntityId - 1).toBeLessThan(joins / 2);

  // A restored player's entity may be a neighbour's by now (its claim not in at the restart): when
  // its window ends, its id is not handed out again.
  const before = new ShardEngine(settings, out);
  const restoredId = joined(before, 1, 'ann');
  const r = new ShardEngine(settings, out, { restored: decodeState(before.persistentState(), settings['engine.max_entities']) });
  steps(r, window + r.world.idRestTicks + 2);
  expect(r.world.indexOf(restoredId)).toBe(-1);
  const spawned = Array.from({ length: 5 }, () => r.context.spawn(0, 0, 2));
  expect(spawned).not.toContain(restoredId);
});

test("a commit redirect past its resume timeout is forgotten even when a longer one (a returned entity's rejoin window) was set before it", () => {
  const e = new ShardEngine(settings, out);
  // A neighbour restarted: a returned player's joins are sent there for the rejoin window (30 s here: 1200 ticks).
  e.redirectJoins('zed', { shardName: 'west', resumeToken: '', address: 'ws://w' }, 30_000);
  // Then bob is handed over with the usual resume timeout (500 ms: 20 ticks); his client drops.
  const bob = joined(e, 1, 'bob');
  e.offer(bob);
  e.suspend(1);
  e.commitOffer(bob, { message: { shardName: 'east', resumeToken: 'token-east', address: 'ws://e' }, forMs: 500 });
  // Long after the neighbour forgot bob's token, bob joins here: no redirect to a dead token.
  steps(e, 100);
  const late = e.join(2, 'bob');
  expect(late).toMatchObject({ ok: true });
});

test('a session that replaces one while its entity is on offer, then rolled back, is not credited the offer ticks twice', () => {
  const e = new ShardEngine(settings, out);
  const w = e.world;
  const id = joined(e, 1, 'ann');
  let seq = 0;
  for (let t = 0; t < 5; t++) {
    e.input(1, ++seq, 0.1, 0, 0);
    e.step();
  }
  // Her inputs stop (the connection stalls) as the entity is offered to a neighbour.
  e.offer(id);
  steps(e, 30);
  // Her client joins again, replacing the stalled session; the offer is rolled back 10 ticks later.
  expect(e.join(2, 'ann')).toMatchObject({ ok: true, entityId: id });
  steps(e, 10);
  e.rollback(id);
  // It stood 40 ticks since her last input: no more than that may be caught up on.
  expect(w.credit[w.indexOf(id)]).toBeLessThanOrEqual(41);
});

test('a handed-back copy takes the place of the waiting snapshot entity on a shard restored over its player capacity: a swap, no place lost', () => {
  const before = new ShardEngine(settings, out);
  const ann = joined(before, 1, 'ann');
  joined(before, 2, 'bob');
  joined(before, 3, 'cat');
  // Restarted with a lower player capacity: three restored players waiting, room for one.
  const tight = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: '1000',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100,-100,100,100',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '1',
  });
  const after = new ShardEngine(tight, out, { restored: decodeState(before.persistentState(), settings['engine.max_entities']) });
  expect(after.restoredWaitingOf('ann')).toBe(ann);
  const copy = { entityId: (1 << 24) + 5, x: 1, y: 1, vx: 0, vy: 0, kind: 1, flags: 0, lastInputSeq: 4, state: new Uint8Array([2]) };
  // A swap needs no room: the copy waits for ann in the old entity's place.
  expect(after.supplantWaiting(copy, 'ann')).toBe(true);
  expect([
    after.restoredWaitingOf('ann'),
    after.world.indexOf(ann),
    [...(after.context.state(copy.entityId) ?? [])],
    after.hasPlace('ann'),
  ]).toEqual([copy.entityId, -1, [2], true]);
});
