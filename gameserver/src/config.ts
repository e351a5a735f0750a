import { type Env, enumSetting, LOG_LEVELS, type LogLevel, listenSetting } from '@aethex/runtime';

/** The shard server's settings, parsed once at start. */
export interface GameserverConfig {
  /** Where /healthz, /readyz and /metrics are served (AETHEX_GAMESERVER_HTTP_ADDR, default 127.0.0.1:7350). */
  http: { host: string; port: number };
  /** AETHEX_GAMESERVER_LOG_LEVEL, default info. */
  logLevel: LogLevel;
}

/** Parses the environment; throws a ConfigError naming the first invalid variable. */
export function loadConfig(env: Env): GameserverConfig {
  return {
    http: listenSetting(env, 'AETHEX_GAMESERVER_HTTP_ADDR', '127.0.0.1:7350'),
    logLevel: enumSetting(env, 'AETHEX_GAMESERVER_LOG_LEVEL', 'info', LOG_LEVELS),
  };
}
