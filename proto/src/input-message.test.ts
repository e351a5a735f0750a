import fc from 'fast-check';
import $protobuf from 'protobufjs/minimal.js';
import { expect, test } from 'vitest';
import { aethex } from './gen/aethex.js';
import { checkHandMade, checkNoise, type Reader } from './in-place.testkit.js';
import { inputFields, readInputMessage } from './input-message.js';

const { ClientMessage } = aethex.v1;
const u32 = fc.oneof(fc.integer({ min: 0, max: 300 }), fc.nat({ max: 0xffffffff }));
const f32 = fc.oneof(fc.float(), fc.constantFrom(0, -0, Number.NaN, Number.POSITIVE_INFINITY, -1e30));

/** What the generated decoder makes of `bytes`, in the reader's terms; undefined when it is not an input. */
function theirs(bytes: Uint8Array) {
  let msg: aethex.v1.ClientMessage;
  try {
    msg = ClientMessage.decode(bytes);
  } catch {
    return undefined;
  }
  if (msg.body !== 'input' || !msg.input) return undefined;
  const i = msg.input;
  return {
    seq: i.seq,
    clientTimeMs: i.clientTimeMs,
    hasMove: i.move != null,
    moveX: i.move?.x ?? 0,
    moveY: i.move?.y ?? 0,
    buttons: i.buttons,
    ackTick: i.ackTick,
  };
}

function mine(bytes: Uint8Array) {
  const out = inputFields();
  // Left over from an earlier message: every field must be overwritten.
  Object.assign(out, { seq: 9, clientTimeMs: 9, hasMove: true, moveX: 9, moveY: 9, buttons: 9, ackTick: 9 });
  return readInputMessage(bytes, out) ? out : undefined;
}

function expectSame(a: ReturnType<typeof theirs>, b: ReturnType<typeof mine>) {
  expect(b).toBeDefined();
  expect(a).toBeDefined();
  for (const k of ['seq', 'clientTimeMs', 'hasMove', 'moveX', 'moveY', 'buttons', 'ackTick'] as const) {
    expect(Object.is(a?.[k], b?.[k]), `${k}: ${a?.[k]} vs ${b?.[k]}`).toBe(true);
  }
}

test('property: reads every input the generated encoder writes, to the same fields as the generated decoder', () => {
  fc.assert(
    fc.property(
      u32,
      u32,
      fc.option(fc.record({ x: f32, y: f32 }, { requiredKeys: [] })),
      u32,
      u32,
      (seq, clientTimeMs, move, buttons, ackTick) => {
        const bytes = ClientMessage.encode({ input: { seq, clientTimeMs, move, buttons, ackTick } }).finish();
        expectSame(theirs(bytes), mine(bytes));
      },
    ),
    { numRuns: 2000 },
  );
});

/** One field of an Input (or a Vec2), as the wire has it: any order, repeats, unknown and mistyped fields. */
type Field =
  | { kind: 'varint'; field: number; value: number }
  | { kind: 'move'; parts: { field: number; value: number }[] }
  | { kind: 'unknown-varint'; field: number; value: number }
  | { kind: 'bytes'; field: number; value: Uint8Array };

const field: fc.Arbitrary<Field> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('varint' as const), field: fc.constantFrom(1, 2, 4, 5), value: u32 }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('move' as const),
      // Mostly x and y, sometimes a field Vec2 does not have.
      parts: fc.array(
        fc.record({
          field: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(1, 2) }, { weight: 1, arbitrary: fc.constant(3) }),
          value: f32,
        }),
        {
          maxLength: 4,
        },
      ),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('unknown-varint' as const), field: fc.integer({ min: 6, max: 40 }), value: u32 }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('bytes' as const),
      field: fc.integer({ min: 1, max: 6 }),
      value: fc.uint8Array({ maxLength: 6 }),
    }),
  },
);

function encodeFields(fields: Field[]): Uint8Array {
  const w = $protobuf.Writer.create();
  for (const f of fields) {
    if (f.kind === 'varint' || f.kind === 'unknown-varint') w.uint32((f.field << 3) | 0).uint32(f.value);
    else if (f.kind === 'bytes') w.uint32((f.field << 3) | 2).bytes(f.value);
    else {
      w.uint32((3 << 3) | 2).fork();
      for (const p of f.parts) w.uint32((p.field << 3) | 5).float(p.value);
      w.ldelim();
    }
  }
  return w.finish();
}

const reader: Reader<NonNullable<ReturnType<typeof theirs>>> = { mine, theirs, same: expectSame };

test('property: hand-made inputs (any order, repeats, unknown fields) are read as the generated decoder reads them, or left to it', () => {
  // After the input, sometimes an empty ping, a ping or an ack: the reader must not take it as an input.
  checkHandMade(reader, field, encodeFields, (f) => f.kind === 'varint' || (f.kind === 'move' && f.parts.every((p) => p.field !== 3)), [
    [0x1a, 0],
    [0x1a, 2, 8, 1],
    [0x2a, 2, 8, 4],
  ]);
});

test('property: random, truncated and altered bytes are never read as an input the generated decoder does not see', () => {
  const valid = ClientMessage.encode({
    input: { seq: 300, clientTimeMs: 70_000, move: { x: 1.5, y: -2 }, buttons: 3, ackTick: 1 << 30 },
  }).finish();
  checkNoise(reader, valid, 100);
});

test('other messages, long varints and a wrong tag encoding are left to the generated decoder', () => {
  const out = inputFields();
  for (const other of [
    { join: { joinToken: 'x' } },
    { ping: { clientTimeMs: 5 } },
    { ack: { ackTick: 4 } },
    { rpc: { method: 'm', callId: 1 } },
    { resume: { resumeToken: 'r' } },
    {},
  ]) {
    expect(readInputMessage(ClientMessage.encode(other).finish(), out)).toBe(false);
  }
  // seq as a 10-byte varint (how a negative int32 is written): the generated decoder reads 5 bytes
  // and skips 5; the reader leaves it.
  const long = new Uint8Array([0x12, 11, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  expect(readInputMessage(long, out)).toBe(false);
  expect(theirs(long)?.seq).toBe(0xffffffff);
  // The input tag written in two bytes (0x92 0x00): valid protobuf, left to the generated decoder.
  const wide = new Uint8Array([0x92, 0x00, 2, 0x08, 7]);
  expect(readInputMessage(wide, out)).toBe(false);
  expect(theirs(wide)?.seq).toBe(7);
  // The smallest input: an empty body, every field at its default.
  expect(readInputMessage(new Uint8Array([0x12, 0]), out)).toBe(true);
  expect(out).toEqual({ seq: 0, clientTimeMs: 0, hasMove: false, moveX: 0, moveY: 0, buttons: 0, ackTick: 0 });
});
