export { ConfigError, type Env } from './config.js';
export { createLogger, LOG_LEVELS, type Logger, type LogLevel } from './logger.js';
export { envName, loadSettings, type Rect, type SettingSpec, type Settings, type SettingsSchema } from './settings.js';
