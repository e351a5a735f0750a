import { expect, test } from 'vitest';
import { loadConfig } from '../config.js';
import { ShardEngine } from '../engine.js';
import { KIND_PLAYER } from '../sim/world.js';
import { Interest } from '../spatial/aoi.js';
import { viewerFocus, viewerState } from './state.js';

const settings = loadConfig({
  AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
  AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,2000,2000',
  AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '100',
});

test('a focus asked for between ticks, after entities came and went, lists the entities in range now', () => {
  const e = new ShardEngine(settings, { send: () => true, kick: () => undefined });
  const join = e.join(1, 'ann');
  if (!join.ok) throw new Error(join.message);
  const me = join.entityId;
  const w = e.world;
  const at = w.indexOf(me);
  const [px, py] = [w.x[at] as number, w.y[at] as number];
  // A neighbour's ghosts, a ring of them around the player and more far away, as ghost updates
  // bring them between ticks.
  const ghosts: number[] = [];
  for (let k = 0; k < 40; k++) {
    const near = k % 2 === 0;
    const r = near ? 50 : 900;
    const x = Math.min(1999, Math.max(0, px + r * Math.cos(k)));
    const y = Math.min(1999, Math.max(0, py + r * Math.sin(k)));
    const id = (1 << 24) + k;
    expect(e.upsertGhost({ entityId: id, x, y, vx: 0, vy: 0, kind: 0, flags: 0 })).toBe(true);
    ghosts.push(id);
  }
  e.step();
  // Between ticks: half the near ones go (their slots are taken by others), and new ones come.
  for (let k = 0; k < 40; k += 4) e.removeGhost(ghosts[k] as number);
  for (let k = 40; k < 44; k++) e.upsertGhost({ entityId: (1 << 24) + k, x: px + 10, y: py + k - 40, vx: 0, vy: 0, kind: 0, flags: 0 });
  const inRange: number[] = [];
  for (let i = 0; i < w.count; i++) {
    if (Math.hypot((w.x[i] as number) - px, (w.y[i] as number) - py) <= 100) inRange.push(w.id[i] as number);
  }
  const focus = viewerFocus(e, new Interest(settings['engine.max_visible']), me);
  expect(focus?.visible[0]).toBe(me);
  expect([...(focus?.visible ?? [])].sort((a, b) => a - b)).toEqual(inRange.sort((a, b) => a - b));
});

test('a focus asked for between ticks, after ghosts moved (and nothing came or went), lists the entities in range now', () => {
  const e = new ShardEngine(settings, { send: () => true, kick: () => undefined });
  const join = e.join(1, 'ann');
  if (!join.ok) throw new Error(join.message);
  const w = e.world;
  const at = w.indexOf(join.entityId);
  const [px, py] = [w.x[at] as number, w.y[at] as number];
  const ghost = (k: number, x: number, y: number) =>
    e.upsertGhost({
      entityId: (1 << 24) + k,
      x: Math.min(1999, Math.max(0, x)),
      y: Math.min(1999, Math.max(0, y)),
      vx: 0,
      vy: 0,
      kind: 0,
      flags: 0,
    });
  ghost(1, px + 900, py);
  ghost(2, px + 10, py);
  e.step();
  // One far away comes close, one close goes far: ghost updates between ticks.
  ghost(1, px + 5, py);
  ghost(2, px + 900, py);
  const focus = viewerFocus(e, new Interest(settings['engine.max_visible']), join.entityId);
  expect(focus?.visible).toEqual([join.entityId, (1 << 24) + 1]);
});

test('a focus is only on a player this shard owns: not on a neighbour’s ghost of one', () => {
  const e = new ShardEngine(settings, { send: () => true, kick: () => undefined });
  const id = (1 << 24) + 5;
  expect(e.upsertGhost({ entityId: id, x: 10, y: 10, vx: 0, vy: 0, kind: KIND_PLAYER, flags: 0 })).toBe(true);
  e.step();
  expect(viewerFocus(e, new Interest(settings['engine.max_visible']), id)).toBeUndefined();
});

test('the viewer state lists ops.viewer_max_entities entities at most, and as players only those this shard owns', () => {
  const e = new ShardEngine(settings, { send: () => true, kick: () => undefined });
  const ghost = (1 << 24) + 5;
  expect(e.upsertGhost({ entityId: ghost, x: 10, y: 10, vx: 0, vy: 0, kind: KIND_PLAYER, flags: 0 })).toBe(true);
  const join = e.join(1, 'ann');
  if (!join.ok) throw new Error(join.message);
  e.step();
  const state = viewerState(e, 'local-0-0', 1);
  expect(state.entityCount).toBe(2);
  // One entity of the two: x, y, kind, id, mode.
  expect(state.entities).toHaveLength(5);
  // A neighbour's ghost of a player is no player here.
  expect(state.players).toEqual([join.entityId]);
});
