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
  fc.record({ join: fc.record({ joinToken: str, protocolVersion: u32, clientVersion: str }) }),
  fc.record({ input: fc.record({ seq: u32, clientTimeMs: u32, move: vec2, buttons: u32, ackTick: u32 }) }),
  fc.record({ ping: fc.record({ clientTimeMs: u32 }) }),
  fc.record({ rpc: fc.record({ callId: u32, method: str, payload: bytes }) }),
  fc.record({ ack: fc.record({ ackTick: u32 }) }),
  fc.record({ resume: fc.record({ resumeToken: str, protocolVersion: u32, ackTick: u32 }) }),
);

const rect = fc.record({ minX: f32, minY: f32, maxX: f32, maxY: f32 });

const serverMessage = fc.oneof(
  fc.record({
    welcome: fc.record({
      protocolVersion: u32,
      entityId: u32,
      tickRateHz: u32,
      serverTick: u32,
      region: rect,
      worldBounds: rect,
      aoiRadius: f32,
      maxSpeed: f32,
      positionScale: f32,
      lastInputSeq: u32,
      shardName: str,
      tickIntervalUs: u32,
      maxMessageSize: u32,
    }),
  }),
  fc.record({
    snapshot: fc.record({
      tick: u32,
      baseTick: u32,
      lastInputSeq: u32,
      layout: u32,
      entities: bytes,
      removed: fc.array(u32, { maxLength: 20 }),
    }),
  }),
  fc.record({ correction: fc.record({ tick: u32, lastInputSeq: u32, position: vec2, velocity: vec2 }) }),
  fc.record({ pong: fc.record({ clientTimeMs: u32, serverTick: u32 }) }),
  fc.record({ handoffRedirect: fc.record({ address: str, resumeToken: str, lastInputSeq: u32, shardName: str }) }),
  fc.record({ kick: fc.record({ reason, message: str }) }),
  fc.record({ error: fc.record({ reason, message: str }) }),
);

const shardMessage = fc.oneof(
  fc.record({
    ghostUpdate: fc.record({
      tick: u32,
      full: fc.boolean(),
      upserts: fc.array(fc.record({ entityId: u32, position: vec2, velocity: vec2, kind: u32, flags: u32 }), { maxLength: 8 }),
      removed: fc.array(u32, { maxLength: 8 }),
    }),
  }),
  fc.record({
    handoffOffer: fc.record({
      offerId: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
      entityId: u32,
      playerId: str,
      position: vec2,
      velocity: vec2,
      lastInputSeq: u32,
      state: bytes,
      tick: u32,
    }),
  }),
  fc.record({ handoffReject: fc.record({ offerId: fc.nat({ max: Number.MAX_SAFE_INTEGER }), entityId: u32, reason, message: str }) }),
);

/** What the three top-level message classes have in common, as the tests use it. */
interface MessageType {
  fromObject(object: { [k: string]: unknown }): unknown;
  encode(message: never): { finish(): Uint8Array };
  decode(bytes: Uint8Array): unknown;
  toObject(message: never, options: object): object;
}

/** The decoded object as plain data with every field present, for comparison with the input. */
function roundTrip(type: MessageType, message: object) {
  const decoded = type.decode(type.encode(type.fromObject(message as never) as never).finish());
  return type.toObject(decoded as never, { defaults: true, arrays: true, bytes: Array, oneofs: false });
}

function plain(type: MessageType, message: object) {
  return type.toObject(type.fromObject(message as never) as never, { defaults: true, arrays: true, bytes: Array, oneofs: false });
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
    const valid = ClientMessage.encode({ input: { seq: 9, move: { x: 1, y: -1 }, ackTick: 4 } }).finish();
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

  test("a Welcome from a shard that predates tick_interval_us and max_message_size decodes with both 0 (the SDK's 'unknown')", () => {
    // Field 3 (tick_rate_hz) = 40 and field 11 (shard_name) = "old", as an older shard wrote them.
    const old = Uint8Array.from([0x0a, 0x07, 0x18, 40, 0x5a, 0x03, 0x6f, 0x6c, 0x64]);
    const welcome = ServerMessage.decode(old).welcome as aethex.v1.Welcome;
    expect(welcome).toMatchObject({ tickRateHz: 40, shardName: 'old', tickIntervalUs: 0, maxMessageSize: 0 });
  });

  test('an input is small on the wire', () => {
    const buf = ClientMessage.encode({ input: { seq: 1000, clientTimeMs: 123456, move: { x: 0.5, y: -0.5 }, ackTick: 5000 } }).finish();
    expect(buf.length).toBeLessThanOrEqual(24);
  });
});
