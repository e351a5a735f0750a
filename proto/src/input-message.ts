import { soleFieldStart, readVarint32 as varint, varintEnd } from './varint.js';

/**
 * The shard's hot inbound message — `ClientMessage { input: Input {…} }`, one per client per tick —
 * read in place into a reused object. The generated `ClientMessage.decode` makes three objects per
 * input (and the `body` oneof getter lists the message's keys); with thousands of clients at 40 Hz
 * those were a tenth of the shard's short-lived garbage. Anything this reader does not take as a
 * plain input (another body, an unknown field, a varint longer than a uint32, bytes past the end) it
 * leaves to the generated decoder, so the two never disagree on what a message means: where this
 * returns true, `ClientMessage.decode` gives an `input` with the same fields (tested against it).
 */
export interface InputFields {
  seq: number;
  clientTimeMs: number;
  /** Whether the input carried a `move` (the fields below are 0 when not). */
  hasMove: boolean;
  moveX: number;
  moveY: number;
  buttons: number;
  ackTick: number;
}

/** A blank {@link InputFields} to pass to {@link readInputMessage}. */
export function inputFields(): InputFields {
  return { seq: 0, clientTimeMs: 0, hasMove: false, moveX: 0, moveY: 0, buttons: 0, ackTick: 0 };
}

// Tags: ClientMessage.input = 2 (length-delimited); Input fields 1, 2, 4, 5 varint, 3 Vec2
// (length-delimited); Vec2 fields 1, 2 fixed32 floats.
const TAG_INPUT = 0x12;
const TAG_SEQ = 0x08;
const TAG_CLIENT_TIME = 0x10;
const TAG_MOVE = 0x1a;
const TAG_BUTTONS = 0x20;
const TAG_ACK_TICK = 0x28;
const TAG_X = 0x0d;
const TAG_Y = 0x15;

const scratch = new Float32Array(1);
const scratchBytes = new Uint8Array(scratch.buffer);
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Puts the little-endian float32 at `pos` into `scratch[0]` (read there: a returned double would be boxed). */
function float32(buf: Uint8Array, pos: number): void {
  if (littleEndian) {
    for (let i = 0; i < 4; i++) scratchBytes[i] = buf[pos + i] as number;
  } else {
    for (let i = 0; i < 4; i++) scratchBytes[3 - i] = buf[pos + i] as number;
  }
}

/**
 * Reads `buf` as `ClientMessage { input }` into `out` and returns true; returns false (with `out`
 * in an unspecified state) for anything else, which the caller hands to `ClientMessage.decode`.
 */
export function readInputMessage(buf: Uint8Array, out: InputFields): boolean {
  const end = buf.length;
  // Exactly one field, the input, filling the message: repeated or extra fields go the long way.
  let pos = soleFieldStart(buf, TAG_INPUT);
  if (pos < 0) return false;
  out.seq = 0;
  out.clientTimeMs = 0;
  out.hasMove = false;
  out.moveX = 0;
  out.moveY = 0;
  out.buttons = 0;
  out.ackTick = 0;
  while (pos < end) {
    const tag = buf[pos++];
    if (tag === TAG_MOVE) {
      const size = varint(buf, pos, end);
      if (varintEnd < 0 || varintEnd + size > end) return false;
      pos = varintEnd;
      const moveEnd = pos + size;
      // A repeated move merges into the one before (protobuf's rule, as the generated decoder does).
      while (pos < moveEnd) {
        const t = buf[pos++];
        if ((t !== TAG_X && t !== TAG_Y) || pos + 4 > moveEnd) return false;
        float32(buf, pos);
        if (t === TAG_X) out.moveX = scratch[0] as number;
        else out.moveY = scratch[0] as number;
        pos += 4;
      }
      out.hasMove = true;
      continue;
    }
    const value = varint(buf, pos, end);
    if (varintEnd < 0) return false;
    pos = varintEnd;
    if (tag === TAG_SEQ) out.seq = value;
    else if (tag === TAG_CLIENT_TIME) out.clientTimeMs = value;
    else if (tag === TAG_BUTTONS) out.buttons = value;
    else if (tag === TAG_ACK_TICK) out.ackTick = value;
    else return false;
  }
  return true;
}
