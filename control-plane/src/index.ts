/** Names of the control-plane services; each becomes a Fastify plugin built by `buildApp(config)`. */
export const SERVICES = ['auth', 'saves'] as const;
export type ServiceName = (typeof SERVICES)[number];
