// The wire protocol's entry point: the generated message classes and the protocol version.
export { aethex } from './gen/aethex.js';

/** The protocol version this build speaks; see docs/protocol.md for what changes it. */
export const PROTOCOL_VERSION = 1;
