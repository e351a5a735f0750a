import { expect, it } from 'vitest';
import { mayAccess, type Principal, permissionsFor } from './roles.js';

const who = (roles: string[], userId = 'me'): Principal => ({ userId, email: null, roles, permissions: permissionsFor(roles), sid: 's' });

it.each([
  [['guest'], 'me', 'read:saves', true],
  [['guest'], 'other', 'read:saves', false],
  [['player'], 'other', 'write:saves', false],
  [['developer'], 'other', 'read:saves', false],
  [['admin'], 'other', 'read:saves', true],
  [['admin'], 'other', 'write:saves', true],
  [[], 'me', 'read:saves', false],
  [['superuser'], 'me', 'read:saves', false],
])('%j acting on %s with %s → %s', (roles, owner, permission, allowed) => {
  expect(mayAccess(who(roles), owner, permission)).toBe(allowed);
});
