export { type Cli, intFlag, parseCli } from './cli.js';
export { ConfigError, type Env } from './config.js';
export {
  createJoinVerifier,
  JOIN_TOKEN_ALGORITHMS,
  type JoinClaims,
  JoinTokenError,
  type JoinVerifier,
  type JoinVerifierOptions,
  joinPublicKey,
  signJoinToken,
  unprintableAt,
} from './join-token.js';
export { jwksUrlProblem } from './jwks.js';
export { createLogger, LOG_LEVELS, type Logger, type LogLevel } from './logger.js';
export { freePortBlock, LOOPBACK_SHARD_ENV } from './ports.js';
export {
  CLIENT_ADDRESS_HEADERS,
  type ClientAddressHeader,
  PROXY_V1_MAX_BYTES,
  type ProxyHeader,
  readProxyHeader,
  TrustedProxies,
} from './proxies.js';
export { type Region, regions } from './regions.js';
export { cpuPercent, runQueueWaitMs, threadCpuMs } from './run-queue.js';
export {
  envName,
  listenFailure,
  loadSettings,
  type Rect,
  redactUrl,
  redactUrlsIn,
  type SettingSpec,
  type Settings,
  type SettingsSchema,
  shownValue,
} from './settings.js';
export { bucketPercentile, percentile } from './stats.js';
export { DNS_LABEL, eventStreamKey, eventStreamPattern, PRESENCE_PATTERN, presenceKey, type ShardKey, worldRef } from './store-keys.js';
export {
  DEFAULT_POSITION_SCALE,
  GRID_CELL_FACTOR,
  MAX_GRID_CELLS,
  MAX_POSITION_QUANTA,
  WORLD_SETTING_RANGES,
  type WorldBoundsProblem,
  type WorldLimits,
  worldBoundsProblem,
} from './world-bounds.js';
