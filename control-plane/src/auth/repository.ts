import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type pg from 'pg';
import { AppError } from '../errors.js';

export interface UserRow {
  id: string;
  email: string | null;
  password_hash: string | null;
  device_id: string | null;
  display_name: string;
  roles: string[];
  created_at: Date;
}

/** A refresh token: 256 random bits, prefixed so it is never mistaken for a JWT. Only its hash is stored. */
export function newRefreshToken(): { token: string; hash: Buffer } {
  const token = `rt_${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashRefreshToken(token) };
}

export function hashRefreshToken(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

const USER_COLUMNS = 'id, email, password_hash, device_id, display_name, roles, created_at';

function isUniqueViolation(err: unknown, constraint: string): boolean {
  const e = err as { code?: string; constraint?: string };
  return e.code === '23505' && e.constraint === constraint;
}

/** The auth service's SQL: users, refresh-token families and the audit log. */
export class AuthRepository {
  constructor(private readonly pool: pg.Pool) {}

  async createUser(u: {
    email: string | null;
    passwordHash: string | null;
    deviceId: string | null;
    displayName: string;
    roles: string[];
  }): Promise<UserRow> {
    try {
      const r = await this.pool.query<UserRow>(
        `INSERT INTO users (id, email, password_hash, device_id, display_name, roles) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${USER_COLUMNS}`,
        [randomUUID(), u.email, u.passwordHash, u.deviceId, u.displayName, u.roles],
      );
      return r.rows[0] as UserRow;
    } catch (err) {
      if (isUniqueViolation(err, 'users_email_key')) throw new AppError('AUTH_EMAIL_TAKEN', 'an account with this email exists');
      throw err;
    }
  }

  /** Finds the guest with this device id, creating it if there is none (safe under races). */
  async guest(deviceId: string): Promise<{ user: UserRow; created: boolean }> {
    const found = await this.pool.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE device_id = $1`, [deviceId]);
    if (found.rows[0]) return { user: found.rows[0], created: false };
    const r = await this.pool.query<UserRow>(
      `INSERT INTO users (id, device_id, roles) VALUES ($1, $2, '{guest}') ON CONFLICT (device_id) DO NOTHING RETURNING ${USER_COLUMNS}`,
      [randomUUID(), deviceId],
    );
    if (r.rows[0]) return { user: r.rows[0], created: true };
    const again = await this.pool.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE device_id = $1`, [deviceId]);
    return { user: again.rows[0] as UserRow, created: false };
  }

  async byEmail(email: string): Promise<UserRow | undefined> {
    return (await this.pool.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE email = $1`, [email])).rows[0];
  }

  async byId(id: string): Promise<UserRow | undefined> {
    return (await this.pool.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE id = $1`, [id])).rows[0];
  }

  async setPasswordHash(id: string, hash: string): Promise<void> {
    await this.pool.query('UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1 AND password_hash IS NOT NULL', [
      id,
      hash,
    ]);
  }

  /** Gives a guest an email and password and makes it a player. Refuses an account that has an email. */
  async upgradeGuest(id: string, email: string, passwordHash: string): Promise<UserRow> {
    try {
      const r = await this.pool.query<UserRow>(
        `UPDATE users SET email = $2, password_hash = $3, roles = array_replace(roles, 'guest', 'player'), updated_at = now()
          WHERE id = $1 AND email IS NULL RETURNING ${USER_COLUMNS}`,
        [id, email, passwordHash],
      );
      if (!r.rows[0]) throw new AppError('AUTH_ALREADY_REGISTERED', 'this account already has an email and password');
      return r.rows[0];
    } catch (err) {
      if (isUniqueViolation(err, 'users_email_key')) throw new AppError('AUTH_EMAIL_TAKEN', 'an account with this email exists');
      throw err;
    }
  }

  async setDisplayName(id: string, displayName: string): Promise<UserRow | undefined> {
    return (
      await this.pool.query<UserRow>(`UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1 RETURNING ${USER_COLUMNS}`, [
        id,
        displayName,
      ])
    ).rows[0];
  }

  /** Starts a session: a refresh family expiring at `expiresAt` holding its first token. */
  async startFamily(userId: string, expiresAt: Date): Promise<{ familyId: string; token: string }> {
    const familyId = randomUUID();
    const { token, hash } = newRefreshToken();
    await this.pool.query(
      `WITH f AS (INSERT INTO refresh_families (id, user_id, expires_at) VALUES ($1, $2, $3) RETURNING id)
       INSERT INTO refresh_tokens (token_hash, family_id) SELECT $4, id FROM f`,
      [familyId, userId, expiresAt, hash],
    );
    return { familyId, token };
  }

  /**
   * Spends a refresh token and issues its successor, in one transaction that locks the family, so
   * two concurrent uses of one token create exactly one successor. A token already spent revokes
   * its family (`reused`); an unknown, revoked or expired one is `invalid`.
   */
  async rotate(
    presented: string,
    now: Date,
  ): Promise<
    | { kind: 'ok'; userId: string; familyId: string; token: string; expiresAt: Date }
    | { kind: 'reused'; userId: string; familyId: string }
    | { kind: 'invalid' }
  > {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const r = await client.query<{ family_id: string; used_at: Date | null; user_id: string; expires_at: Date; revoked_at: Date | null }>(
        `SELECT t.family_id, t.used_at, f.user_id, f.expires_at, f.revoked_at
           FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
          WHERE t.token_hash = $1 FOR UPDATE OF f, t`,
        [hashRefreshToken(presented)],
      );
      const row = r.rows[0];
      if (!row || row.revoked_at !== null || row.expires_at <= now) {
        await client.query('ROLLBACK');
        return { kind: 'invalid' };
      }
      if (row.used_at !== null) {
        await client.query("UPDATE refresh_families SET revoked_at = $2, revoked_reason = 'reuse' WHERE id = $1", [row.family_id, now]);
        await client.query(`INSERT INTO audit_log (user_id, action, data) VALUES ($1, 'refresh_reuse', $2)`, [
          row.user_id,
          { family_id: row.family_id },
        ]);
        await client.query('COMMIT');
        return { kind: 'reused', userId: row.user_id, familyId: row.family_id };
      }
      const next = newRefreshToken();
      await client.query('UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1', [hashRefreshToken(presented), now]);
      await client.query('INSERT INTO refresh_tokens (token_hash, family_id) VALUES ($1, $2)', [next.hash, row.family_id]);
      await client.query('COMMIT');
      return { kind: 'ok', userId: row.user_id, familyId: row.family_id, token: next.token, expiresAt: row.expires_at };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  /** Revokes one session of `userId` (or all its sessions); returns the revoked family ids. */
  async revoke(userId: string, familyId: string | 'all', reason: string, now: Date): Promise<string[]> {
    const r = await this.pool.query<{ id: string }>(
      `UPDATE refresh_families SET revoked_at = $3, revoked_reason = $4
        WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id = $2::uuid) RETURNING id`,
      [userId, familyId === 'all' ? null : familyId, now, reason],
    );
    return r.rows.map((x) => x.id);
  }

  async audit(
    action: string,
    e: { userId?: string | null; actorId?: string | null; address?: string; data?: Record<string, unknown> },
  ): Promise<void> {
    await this.pool.query('INSERT INTO audit_log (user_id, actor_id, action, address, data) VALUES ($1, $2, $3, $4, $5)', [
      e.userId ?? null,
      e.actorId ?? null,
      action,
      e.address ?? null,
      e.data ?? {},
    ]);
  }
}
