export { aethex, PROTOCOL_VERSION } from '@aethex/proto';
export { interpolate, type Positioned } from './interpolation.js';
export {
  RealtimeClient,
  type RealtimeEvents,
  type RealtimeOptions,
  type Vec2,
  type WebSocketFactory,
  type WebSocketLike,
} from './realtime.js';
export { type EntityRecord, type SnapshotChanges, SnapshotStore } from './snapshots.js';
