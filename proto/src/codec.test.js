// Property tests of the generated codec: every message the protocol defines survives an encode and
// decode unchanged, and arbitrary bytes never crash the decoder with anything but an Error.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { aethex, PROTOCOL_VERSION } from './index.js';

const { ClientMessage, ServerMessage, ShardMessage, ReasonCode } = aethex.v1;

const u32 = fc.nat({ max: 0xffffffff });
const f32 = fc.float({ noNaN: true, noDefaultInfinity: true }).map((v) => Math.fround(v));
const vec2 = fc.record({ x: f32, y: f32 });
const reason = fc.constantFrom(...Object.values(ReasonCode).filter((v) => typeof v === 'number'));
const str = fc.string({ maxLength: 40 });
const bytes = fc.uint8Array({ maxLength: 64 });

const clientMessage = fc.oneof(
  fc.record({ join: fc.record({ join_token: str, protocol_version: u32, client_version: str }) }),
  fc.record({ input: fc.record({ seq: u32, client_time_ms: u32, move: vec2, buttons: u32, ack_tick: u32 }) }),
  fc.record({ ping: fc.record({ client_time_ms: u32 }) }),
  fc.record({ rpc: fc.record({ call_id: u32, method: str, payload: bytes }) }),
  fc.record({ ack: fc.record({ ack_tick: u32 }) }),
  fc.record({ resume: fc.record({ resume_token: str, protocol_version: u32, ack_tick: u32 }) }),
);

const serverMessage = fc.oneof(
  fc.record({
    snapshot: fc.record({
      tick: u32,
      base_tick: u32,
      last_input_seq: u32,
      layout: u32,
      entities: bytes,
      removed: fc.array(u32, { maxLength: 20 }),
    }),
  }),
  fc.record({ correction: fc.record({ tick: u32, last_input_seq: u32, position: vec2, velocity: vec2 }) }),
  fc.record({ pong: fc.record({ client_time_ms: u32, server_tick: u32 }) }),
  fc.record({ handoff_redirect: fc.record({ address: str, resume_token: str, last_input_seq: u32, shard_name: str }) }),
  fc.record({ kick: fc.record({ reason, message: str }) }),
  fc.record({ error: fc.record({ reason, message: str }) }),
);

const shardMessage = fc.oneof(
  fc.record({
    ghost_update: fc.record({
      tick: u32,
      full: fc.boolean(),
      upserts: fc.array(fc.record({ entity_id: u32, position: vec2, velocity: vec2, kind: u32, flags: u32 }), { maxLength: 8 }),
      removed: fc.array(u32, { maxLength: 8 }),
    }),
  }),
  fc.record({
    handoff_offer: fc.record({
      offer_id: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
      entity_id: u32,
      player_id: str,
      position: vec2,
      velocity: vec2,
      last_input_seq: u32,
      state: bytes,
      tick: u32,
    }),
  }),
  fc.record({ handoff_reject: fc.record({ offer_id: fc.nat({ max: Number.MAX_SAFE_INTEGER }), entity_id: u32, reason, message: str }) }),
);

/** The decoded object as plain data with every field present, for comparison with the input. */
function roundTrip(type, message) {
  const decoded = type.decode(type.encode(type.fromObject(message)).finish());
  return type.toObject(decoded, { defaults: true, arrays: true, bytes: Array, oneofs: false });
}

function plain(type, message) {
  return type.toObject(type.fromObject(message), { defaults: true, arrays: true, bytes: Array, oneofs: false });
}

describe('protocol v1 codec', () => {
  test('speaks protocol version 1', () => {
    expect(PROTOCOL_VERSION).toBe(1);
  });

  test.each([
    ['ClientMessage', ClientMessage, clientMessage],
    ['ServerMessage', ServerMessage, serverMessage],
    ['ShardMessage', ShardMessage, shardMessage],
  ])('%s survives encode and decode', (_name, type, arbitrary) => {
    fc.assert(
      fc.property(arbitrary, (message) => {
        expect(roundTrip(type, message)).toEqual(plain(type, message));
      }),
      { numRuns: 500 },
    );
  });

  test('arbitrary and truncated bytes decode or throw an Error, never anything else', () => {
    const valid = ClientMessage.encode({ input: { seq: 9, move: { x: 1, y: -1 }, ack_tick: 4 } }).finish();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 256 }),
          fc.nat({ max: valid.length }).map((n) => valid.subarray(0, n)),
        ),
        (buf) => {
          try {
            ClientMessage.decode(buf);
          } catch (err) {
            expect(err).toBeInstanceOf(Error);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('an input is small on the wire', () => {
    const buf = ClientMessage.encode({ input: { seq: 1000, client_time_ms: 123456, move: { x: 0.5, y: -0.5 }, ack_tick: 5000 } }).finish();
    expect(buf.length).toBeLessThanOrEqual(24);
  });
});
