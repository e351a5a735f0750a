export { ConfigError, type Env, enumSetting, intSetting, listenSetting } from './config.js';
export { createLogger, LOG_LEVELS, type Logger, type LogLevel } from './logger.js';
