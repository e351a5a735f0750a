export { clampInside, insideMax, insideMin, quantumRange } from './bounds.js';
export { aethex } from './gen/aethex.js';
export { type InputFields, inputFields, readInputMessage } from './input-message.js';
export * from './snapshot-layout.js';
export { encodeSnapshotMessage, readSnapshotMessage, type SnapshotFields, snapshotFields } from './snapshot-message.js';
export { unwrapTick } from './ticks.js';

/**
 * The close code a client sends when the shard speaks what it cannot read (a message that does not
 * decode, a snapshot layout it does not know): it will not come back on this protocol, so the shard
 * takes it as a leave, like 1000, not as a drop whose entity waits for a rejoin.
 */
export const CLOSE_CODE_CANNOT_READ = 4901;

/** The protocol version this build speaks; see docs/protocol.md for what changes it. */
export const PROTOCOL_VERSION = 1;

/**
 * The longest `Join.client_version`, in UTF-8 bytes (client.proto): the SDK refuses a longer
 * `clientVersion`, and a shard answers a Join carrying one as a bad message (`bad_join`).
 */
export const MAX_CLIENT_VERSION_BYTES = 64;
