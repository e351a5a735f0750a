export { insideMax } from './bounds.js';
export { aethex } from './gen/aethex.js';
export { type InputFields, inputFields, readInputMessage } from './input-message.js';
export * from './snapshot-layout.js';
export { encodeSnapshotMessage, readSnapshotMessage, type SnapshotFields, snapshotFields } from './snapshot-message.js';

/** The protocol version this build speaks; see docs/protocol.md for what changes it. */
export const PROTOCOL_VERSION = 1;
