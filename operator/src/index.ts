export * from './api/gameworld.js';
export { loadConfig as loadOperatorConfig, OPERATOR_SETTINGS } from './config.js';
