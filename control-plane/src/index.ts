export { generateSigningKeys, KeyRing } from './auth/keys.js';
export { CONTROL_PLANE_SETTINGS, type ControlPlaneConfig, loadConfig } from './config.js';
export { AppError, ERRORS, type ErrorCode } from './errors.js';
export { type App, type AppDeps, buildApp } from './http/app.js';
export { openStores, type Stores } from './stores.js';

/** Names of the control-plane services; each is a Fastify plugin mounted by `buildApp(config)`. */
export const SERVICES = ['auth', 'saves'] as const;
export type ServiceName = (typeof SERVICES)[number];
