/** Roles an account can hold. Everyone starts as guest (device login) or player (email). */
export const ROLES = ['guest', 'player', 'developer', 'admin'] as const;
export type Role = (typeof ROLES)[number];

const PLAYER = ['read:profile', 'write:profile', 'read:saves', 'write:saves'];
const DEVELOPER = [...PLAYER, 'read:analytics'];
const ADMIN = [...DEVELOPER, 'read:saves:any', 'write:saves:any', 'read:users:any'];

/**
 * What each role may do. `X:any` extends permission X to other users' data; without it a
 * permission covers only the caller's own.
 */
export const ROLE_PERMISSIONS: Record<Role, readonly string[]> = {
  guest: PLAYER,
  player: PLAYER,
  developer: DEVELOPER,
  admin: ADMIN,
};

/** The union of the roles' permissions, sorted (put in access tokens at issue). */
export function permissionsFor(roles: readonly string[]): string[] {
  const out = new Set<string>();
  for (const r of roles) for (const p of ROLE_PERMISSIONS[r as Role] ?? []) out.add(p);
  return [...out].sort();
}

/** Who is calling, from a verified access token. */
export interface Principal {
  userId: string;
  email: string | null;
  roles: string[];
  permissions: string[];
  /** The session (refresh family) the token belongs to. */
  sid: string;
}

/**
 * May `who` use `permission` on data owned by `ownerId`? Their own data needs the permission;
 * anyone else's needs `<permission>:any`.
 */
export function mayAccess(who: Principal, ownerId: string, permission: string): boolean {
  if (!who.permissions.includes(permission)) return false;
  return who.userId === ownerId || who.permissions.includes(`${permission}:any`);
}
