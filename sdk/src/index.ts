export { aethex, PROTOCOL_VERSION } from '@aethex/proto';
export {
  ApiError,
  AuthClient,
  type AuthClientOptions,
  type FetchLike,
  MemoryTokenStorage,
  parseRetryAfter,
  type Session,
  type TokenStorage,
  type User,
  type WebStorageLike,
  webTokenStorage,
} from './auth.js';
export { fromBase64, sha256Checksum, toBase64 } from './encoding.js';
export { interpolate, type Positioned } from './interpolation.js';
export {
  CLIENT_CLOSE_CODES,
  type ConnectError,
  RealtimeClient,
  type RealtimeEvents,
  type RealtimeOptions,
  type Vec2,
  type WebSocketFactory,
  type WebSocketLike,
} from './realtime.js';
export { MAX_RENDER_DELAY_MS, RenderBuffer } from './render-buffer.js';
export {
  type ConflictResolution,
  type LoadedSave,
  type SaveConflict,
  type SaveMeta,
  type SaveOptions,
  SavesClient,
  type SavesClientOptions,
  verifySave,
} from './saves.js';
export { type EntityRecord, Frame, type SnapshotChanges, SnapshotStore } from './snapshots.js';
