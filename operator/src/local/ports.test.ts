import { expect, it } from 'vitest';
import { allocateSlots, slotPorts } from './ports.js';

it('numbers a fresh start in listing order: worlds, instances, shards', () => {
  const slots = allocateSlots(new Map(), ['a/a-0-0', 'a/a-0-1', 'a/a-1-0', 'a/a-1-1', 'b/b-0-0'], []);
  expect([...slots]).toEqual([
    ['a/a-0-0', 0],
    ['a/a-0-1', 1],
    ['a/a-1-0', 2],
    ['a/a-1-1', 3],
    ['b/b-0-0', 4],
  ]);
  expect(slotPorts(7700, 0)).toEqual({ gateway: 7700, ops: 7701 });
  expect(slotPorts(7700, 4)).toEqual({ gateway: 7708, ops: 7709 });
});

it('keeps every shard on its slot while the others scale around it', () => {
  const first = allocateSlots(new Map(), ['a/a-0-0', 'b/b-0-0'], []);
  // World a scales up: its new shard takes the next free slot, b does not move.
  const up = allocateSlots(first, ['a/a-0-0', 'a/a-1-0', 'b/b-0-0'], ['a/a-0-0', 'b/b-0-0']);
  expect(up.get('b/b-0-0')).toBe(1);
  expect(up.get('a/a-1-0')).toBe(2);
  // a scales down while a-1-0 still drains: the slot stays taken until the process is gone.
  const draining = allocateSlots(up, ['a/a-0-0', 'b/b-0-0', 'c/c-0-0'], ['a/a-0-0', 'a/a-1-0', 'b/b-0-0']);
  expect(draining.get('a/a-1-0')).toBe(2);
  expect(draining.get('c/c-0-0')).toBe(3);
  // Once it exited, its slot is free for the next new shard.
  const after = allocateSlots(draining, ['a/a-0-0', 'b/b-0-0', 'c/c-0-0', 'd/d-0-0'], ['a/a-0-0', 'b/b-0-0', 'c/c-0-0']);
  expect(after.has('a/a-1-0')).toBe(false);
  expect(after.get('d/d-0-0')).toBe(2);
  expect(after.get('c/c-0-0')).toBe(3);
});

it('is stable: the same input gives the same slots', () => {
  const wanted = ['w/w-0-0', 'w/w-0-1'];
  const a = allocateSlots(new Map(), wanted, []);
  expect(allocateSlots(a, wanted, wanted)).toEqual(a);
});

it('refuses ports above 65535', () => {
  expect(slotPorts(65_530, 2)).toEqual({ gateway: 65_534, ops: 65_535 });
  expect(slotPorts(65_530, 3)).toBeUndefined();
});
