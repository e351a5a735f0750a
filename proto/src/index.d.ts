export { aethex } from './gen/aethex.js';

/** The protocol version this build speaks; see docs/protocol.md for what changes it. */
export declare const PROTOCOL_VERSION = 1;
