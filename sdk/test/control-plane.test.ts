// The SDK's HTTP clients against a real control plane (PostgreSQL, Redis and MinIO of the test
// environment). Time is the only thing faked: the AuthClient's clock, to make tokens look stale.
import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dropSchema, startPlane, type TestPlane, testEnv } from '../../control-plane/test/harness.js';
import {
  ApiError,
  AuthClient,
  type AuthClientOptions,
  type FetchLike,
  MemoryTokenStorage,
  type SaveConflict,
  SavesClient,
  type SavesClientOptions,
} from '../src/index.js';

let plane: TestPlane;
beforeAll(async () => {
  // Every test signs up fresh accounts from 127.0.0.1; the default budget (20 per window) is too few.
  plane = await startPlane({ AETHEX_AUTH_SIGNUP_ADDRESS_BUDGET: '1000' });
});
afterAll(async () => {
  await plane?.close();
  if (plane) await dropSchema(testEnv(), plane.config['postgres.schema']);
});

const PASSWORD = 'correct horse battery';
const email = () => `sdk-${randomUUID()}@example.com`;
const text = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));
const bytes = (s: string) => new TextEncoder().encode(s);

/** A clock the test moves. */
class Clock {
  t = Date.now();
  readonly now = () => this.t;
}

/** The real fetch, recording each call as `METHOD /path` (the server is not touched). */
function recordingFetch(): { fetch: FetchLike; calls: string[]; count: (call: string) => number } {
  const calls: string[] = [];
  return {
    calls,
    fetch: (url, init) => {
      calls.push(`${init.method ?? 'GET'} ${new URL(url).pathname}`);
      return fetch(url, init);
    },
    count: (call) => calls.filter((c) => c === call).length,
  };
}

function client(options: Partial<AuthClientOptions> = {}) {
  const storage = new MemoryTokenStorage();
  const ended: ApiError[] = [];
  const auth = new AuthClient({ baseUrl: plane.url, storage, onSessionEnded: (e) => ended.push(e), ...options });
  return { auth, storage, ended };
}

/** A raw call with a given access token, bypassing the SDK, to see what the server thinks of it. */
async function meStatus(accessToken: string): Promise<number> {
  const res = await fetch(`${plane.url}/api/v1/auth/me`, { headers: { authorization: `Bearer ${accessToken}` } });
  await res.body?.cancel();
  return res.status;
}

describe('accounts', () => {
  it('registers, logs in, reads and updates the profile', async () => {
    const address = email();
    const a = client();
    const registered = await a.auth.register(address.toUpperCase(), PASSWORD, 'Ada');
    expect(registered).toMatchObject({ email: address, display_name: 'Ada', roles: ['player'] });
    expect(a.storage.load()?.user.id).toBe(registered.id);

    const b = client();
    const user = await b.auth.login(address, PASSWORD);
    expect(user.id).toBe(registered.id);
    expect(await b.auth.me()).toMatchObject({
      id: registered.id,
      permissions: ['read:profile', 'read:saves', 'write:profile', 'write:saves'],
    });
    // Two sign-ins are two sessions.
    expect(b.storage.load()?.refreshToken).not.toBe(a.storage.load()?.refreshToken);

    const updated = await b.auth.updateProfile({ displayName: 'Countess' });
    expect(updated.display_name).toBe('Countess');
    expect(b.auth.user?.display_name).toBe('Countess');
    expect((await a.auth.me()).display_name).toBe('Countess');
  });

  it('surfaces failures as ApiError with the catalogue code', async () => {
    const address = email();
    await client().auth.register(address, PASSWORD);
    const taken = await client()
      .auth.register(address, PASSWORD)
      .catch((e: unknown) => e);
    expect(taken).toBeInstanceOf(ApiError);
    expect(taken).toMatchObject({ status: 409, code: 'AUTH_EMAIL_TAKEN' });

    const c = client();
    await expect(c.auth.login(address, 'not the password')).rejects.toMatchObject({ status: 401, code: 'AUTH_INVALID_CREDENTIALS' });
    expect(c.storage.load()).toBeUndefined();
    await expect(c.auth.register(email(), 'short')).rejects.toMatchObject({ status: 400, code: 'VALIDATION_FAILED' });
    // The account-and-address budget is 5 attempts per window; the sixth is refused with Retry-After.
    for (let i = 0; i < 4; i++) await c.auth.login(address, 'not the password').catch(() => undefined);
    const limited = (await c.auth.login(address, 'not the password').catch((e: unknown) => e)) as ApiError;
    expect(limited).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
    expect(limited.retryAfterS).toBeGreaterThan(0);
    expect(limited.data?.retry_after_s).toBe(limited.retryAfterS);

    await expect(c.auth.me()).rejects.toMatchObject({ status: 401, code: 'AUTH_REQUIRED' });
    const offline = new AuthClient({ baseUrl: 'http://127.0.0.1:1' });
    await expect(offline.login(address, PASSWORD)).rejects.toMatchObject({ status: 0, code: 'NETWORK_ERROR' });
  });

  it('signs in a guest by device id and upgrades it to an account, keeping its id, session and saves', async () => {
    const deviceId = `device-${randomUUID()}`;
    const g = client();
    const guest = await g.auth.loginGuest(deviceId);
    expect(guest).toMatchObject({ email: null, roles: ['guest'] });
    // The same device is the same guest.
    expect((await client().auth.loginGuest(deviceId)).id).toBe(guest.id);
    const saves = new SavesClient(g.auth);
    await saves.save('progress', 'guest progress');

    const refreshBefore = g.storage.load()?.refreshToken;
    const address = email();
    const upgraded = await g.auth.upgrade(address, PASSWORD);
    expect(upgraded).toMatchObject({ id: guest.id, email: address, roles: ['player'] });
    expect(g.storage.load()).toMatchObject({ refreshToken: refreshBefore, user: { email: address } });
    expect(await g.auth.me()).toMatchObject({ id: guest.id, email: address });
    // The session carries on: its refresh token still works.
    await g.auth.refresh();
    expect(text((await saves.load('progress')).data)).toBe('guest progress');

    const again = client();
    expect((await again.auth.login(address, PASSWORD)).id).toBe(guest.id);
    await expect(again.auth.upgrade(email(), PASSWORD)).rejects.toMatchObject({ status: 409, code: 'AUTH_ALREADY_REGISTERED' });
  });
});

describe('sessions', () => {
  it('refreshes before a request when the access token is about to expire', async () => {
    const clock = new Clock();
    const rec = recordingFetch();
    const c = client({ now: clock.now, fetch: rec.fetch });
    await c.auth.register(email(), PASSWORD);
    const first = c.storage.load();
    if (!first) throw new Error('no session');
    expect(first.accessExpiresAt).toBe(clock.t + 900_000);

    // More than 30 s left: no refresh.
    clock.t = first.accessExpiresAt - 31_000;
    await c.auth.me();
    expect(rec.count('POST /api/v1/auth/refresh')).toBe(0);

    // Within 30 s of expiry: refreshed first, then the request goes out with the new token.
    clock.t = first.accessExpiresAt - 29_000;
    const before = rec.calls.length;
    await c.auth.me();
    expect(rec.calls.slice(before)).toEqual(['POST /api/v1/auth/refresh', 'GET /api/v1/auth/me']);
    const second = c.storage.load();
    expect(second?.refreshToken).toMatch(/^rt_/);
    expect(second?.refreshToken).not.toBe(first.refreshToken);
    // (The access token may be byte-identical: same claims within the same second, deterministic EdDSA.)
    expect(second?.accessExpiresAt).toBe(clock.t + 900_000);

    // Long past expiry (the server still thinks the old token is young; the client's clock decides).
    clock.t += 3_600_000;
    expect((await c.auth.me()).id).toBe(first.user.id);
    expect(rec.count('POST /api/v1/auth/refresh')).toBe(2);
    expect(c.storage.load()?.refreshToken).not.toBe(second?.refreshToken);
    expect(c.ended).toEqual([]);
  });

  it('makes one refresh for any number of concurrent requests that need it', async () => {
    const clock = new Clock();
    const rec = recordingFetch();
    const c = client({ now: clock.now, fetch: rec.fetch });
    const user = await c.auth.register(email(), PASSWORD);
    const spent = c.storage.load()?.refreshToken;
    const saves = new SavesClient(c.auth);
    clock.t += 20 * 60_000;

    // allSettled: on failure, no request is still in flight when the plane closes.
    const results = await Promise.allSettled([c.auth.me(), c.auth.me(), saves.list(), c.auth.me(), saves.history('none')]);
    expect(results.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok'))).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
    expect(results[0]).toMatchObject({ value: { id: user.id } });
    expect(rec.count('POST /api/v1/auth/refresh')).toBe(1);
    const session = c.storage.load();
    expect(session?.refreshToken).not.toBe(spent);

    // Had the spent token been presented twice, the server would have revoked the whole session;
    // it is alive: the access token works and so does the next refresh.
    expect((await c.auth.me()).id).toBe(user.id);
    expect(await meStatus(session?.accessToken as string)).toBe(200);
    await c.auth.refresh();
    expect((await c.auth.me()).id).toBe(user.id);
    expect(c.ended).toEqual([]);

    // refresh() itself is single-flight too.
    const [r1, r2, r3] = await Promise.all([c.auth.refresh(), c.auth.refresh(), c.auth.refresh()]);
    expect(r2).toBe(r1);
    expect(r3).toBe(r1);
    expect(rec.count('POST /api/v1/auth/refresh')).toBe(3);
    expect((await c.auth.me()).id).toBe(user.id);
  });

  it('refreshes and retries once when a request gets 401 AUTH_INVALID_TOKEN', async () => {
    const rec = recordingFetch();
    const c = client({ fetch: rec.fetch });
    const user = await c.auth.register(email(), PASSWORD);
    const s = c.storage.load();
    if (!s) throw new Error('no session');
    // An access token the server refuses although the clock says it is fresh.
    c.storage.save({ ...s, accessToken: 'not-a-valid-token' });
    expect((await c.auth.me()).id).toBe(user.id);
    expect(rec.calls).toEqual(['POST /api/v1/auth/register', 'GET /api/v1/auth/me', 'POST /api/v1/auth/refresh', 'GET /api/v1/auth/me']);
    expect(c.storage.load()?.refreshToken).not.toBe(s.refreshToken);
    expect(c.ended).toEqual([]);
  });

  it('ends the session when a refresh is refused: clears storage and calls onSessionEnded', async () => {
    const a = client();
    const user = await a.auth.register(email(), PASSWORD);
    const copy = a.storage.load();
    if (!copy) throw new Error('no session');
    // A second client holding a copy of the same session: exactly what single-flight prevents.
    const b = client({ storage: new MemoryTokenStorage({ ...copy }) });
    await a.auth.refresh();
    const refused = (await b.auth.refresh().catch((e: unknown) => e)) as ApiError;
    expect(refused).toMatchObject({ status: 401, code: 'AUTH_REFRESH_INVALID' });
    expect(b.auth.session).toBeUndefined();
    expect(b.ended).toEqual([refused]);

    // The spent token revoked the session for a too: its access token is refused, the refresh
    // that follows is refused, and the session ends.
    const err = (await a.auth.me().catch((e: unknown) => e)) as ApiError;
    expect(err).toMatchObject({ status: 401, code: 'AUTH_REFRESH_INVALID' });
    expect(a.storage.load()).toBeUndefined();
    expect(a.ended).toHaveLength(1);
    expect(a.ended[0]?.code).toBe('AUTH_REFRESH_INVALID');
    await expect(a.auth.me()).rejects.toMatchObject({ status: 401, code: 'AUTH_REQUIRED' });
    // Signing in again works.
    expect((await a.auth.login(user.email as string, PASSWORD)).id).toBe(user.id);
    expect((await a.auth.me()).id).toBe(user.id);
  });

  it('logs out: clears storage and the server refuses the session', async () => {
    const address = email();
    const a = client();
    await a.auth.register(address, PASSWORD);
    const s = a.storage.load();
    await a.auth.logout();
    expect(a.storage.load()).toBeUndefined();
    expect(a.auth.session).toBeUndefined();
    expect(await meStatus(s?.accessToken as string)).toBe(401);
    expect(a.ended).toEqual([]);
    await a.auth.logout(); // signed out already: nothing to do

    // logout({ all }) ends the other sessions too.
    const phone = client();
    const pc = client();
    await phone.auth.login(address, PASSWORD);
    await pc.auth.login(address, PASSWORD);
    await phone.auth.logout({ all: true });
    expect(phone.storage.load()).toBeUndefined();
    await expect(pc.auth.me()).rejects.toMatchObject({ status: 401, code: 'AUTH_REFRESH_INVALID' });
    expect(pc.storage.load()).toBeUndefined();
    expect(pc.ended.map((e) => e.code)).toEqual(['AUTH_REFRESH_INVALID']);
    expect(phone.ended).toEqual([]);
    // Logging out of a session another device ended is done, not an end to report.
    const tablet = client();
    await tablet.auth.login(address, PASSWORD);
    await phone.auth.login(address, PASSWORD);
    await phone.auth.logout({ all: true });
    await tablet.auth.logout();
    expect(tablet.storage.load()).toBeUndefined();
    expect(tablet.ended).toEqual([]);
  });

  it('a logout in flight when another device logs out everywhere ends quietly, and later ends are reported again', async () => {
    const address = email();
    await client().auth.register(address, PASSWORD);
    // The real fetch, recording each call and holding the first logout until released.
    const calls: string[] = [];
    let held = false;
    let arrived: () => void = () => undefined;
    const inFlight = new Promise<void>((r) => (arrived = r));
    let release: () => void = () => undefined;
    const released = new Promise<void>((r) => (release = r));
    const tablet = client({
      fetch: async (url, init) => {
        const call = `${init.method ?? 'GET'} ${new URL(url).pathname}`;
        calls.push(call);
        if (call === 'POST /api/v1/auth/logout' && !held) {
          held = true;
          arrived();
          await released;
        }
        return fetch(url, init);
      },
    });
    const phone = client();
    await tablet.auth.login(address, PASSWORD);
    await phone.auth.login(address, PASSWORD);
    const out = tablet.auth.logout();
    await inFlight;
    await phone.auth.logout({ all: true });
    release();
    await out;
    // The logout's token was refused, its refresh too (the session had ended): signed out, no end to report.
    expect(calls.slice(1)).toEqual(['POST /api/v1/auth/logout', 'POST /api/v1/auth/refresh']);
    expect(tablet.storage.load()).toBeUndefined();
    expect(tablet.ended).toEqual([]);
    // That logout is over: a later session of this client ended elsewhere is reported.
    await tablet.auth.login(address, PASSWORD);
    await phone.auth.login(address, PASSWORD);
    await phone.auth.logout({ all: true });
    await expect(tablet.auth.me()).rejects.toMatchObject({ status: 401, code: 'AUTH_REFRESH_INVALID' });
    expect(tablet.storage.load()).toBeUndefined();
    expect(tablet.ended.map((e) => e.code)).toEqual(['AUTH_REFRESH_INVALID']);
  });

  it('a refresh the server rate-limits (429) keeps the session: it is not refused, only delayed', async () => {
    const strict = await startPlane({ AETHEX_AUTH_REFRESH_ADDRESS_BUDGET: '1' });
    try {
      const ended: ApiError[] = [];
      const storage = new MemoryTokenStorage();
      const auth = new AuthClient({ baseUrl: strict.url, storage, onSessionEnded: (e) => ended.push(e) });
      await auth.register(email(), PASSWORD);
      // One refresh a minute from this address: the second at the latest is refused for now.
      let limited: ApiError | undefined;
      for (let i = 0; i < 2 && !limited; i++)
        limited = (await auth.refresh().then(
          () => undefined,
          (e: unknown) => e,
        )) as ApiError | undefined;
      expect(limited).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
      expect(storage.load()).toBeDefined();
      expect(ended).toEqual([]);
    } finally {
      await strict.close();
      await dropSchema(testEnv(), strict.config['postgres.schema']);
    }
  });

  it('a logout whose refresh fails for now (429) still signs out here: storage cleared, the error rethrown, no end reported', async () => {
    const strict = await startPlane({ AETHEX_AUTH_REFRESH_ADDRESS_BUDGET: '1' });
    try {
      const clock = new Clock();
      const ended: ApiError[] = [];
      const storage = new MemoryTokenStorage();
      const auth = new AuthClient({ baseUrl: strict.url, storage, now: clock.now, onSessionEnded: (e) => ended.push(e) });
      await auth.register(email(), PASSWORD);
      // Spend the address's one refresh a minute (the second at the latest is refused for now).
      for (let i = 0; i < 2; i++) await auth.refresh().catch(() => undefined);
      // An access token the clock says is stale: the logout must refresh first, and is rate-limited.
      clock.t += 20 * 60_000;
      await expect(auth.logout()).rejects.toMatchObject({ status: 429, code: 'RATE_LIMITED' });
      expect(storage.load()).toBeUndefined();
      expect(ended).toEqual([]);
    } finally {
      await strict.close();
      await dropSchema(testEnv(), strict.config['postgres.schema']);
    }
  });

  it('an answer that lands after the session changed never overwrites the new one', async () => {
    // The real fetch, holding the answer of the next call of a `held` path until released.
    let held: string[] = [];
    let release: () => void = () => undefined;
    const gate = () => new Promise<void>((r) => (release = r));
    let waiting: Promise<void> = Promise.resolve();
    const c = client({
      fetch: async (url, init) => {
        // The next call of a held path only.
        const hold = held.includes(new URL(url).pathname) ? waiting : undefined;
        if (hold) held = [];
        const res = await fetch(url, init);
        await hold;
        return res;
      },
    });
    const [ann, bea] = [email(), email()];
    await client().auth.register(bea, PASSWORD);
    const annUser = await c.auth.register(ann, PASSWORD);
    // Ann's profile read, answered after Bea signed in on this client: Bea's session keeps Bea.
    held = ['/api/v1/auth/me'];
    waiting = gate();
    const me = c.auth.me();
    const beaUser = await c.auth.login(bea, PASSWORD);
    release();
    expect((await me).id).toBe(annUser.id);
    expect(c.storage.load()?.user.id).toBe(beaUser.id);
    // Bea's refresh, answered after Ann signed in again: Ann's session is kept, not Bea's refreshed one.
    held = ['/api/v1/auth/refresh'];
    waiting = gate();
    const refreshed = c.auth.refresh();
    await c.auth.login(ann, PASSWORD);
    const annSession = c.storage.load();
    release();
    expect(await refreshed).toBe(annSession);
    expect(c.storage.load()).toBe(annSession);
    expect(c.ended).toEqual([]);
  });
});

describe('saves', () => {
  async function signedIn(options: SavesClientOptions = {}) {
    const c = client();
    await c.auth.register(email(), PASSWORD);
    return { ...c, saves: new SavesClient(c.auth, options) };
  }

  it('round-trips binary data and lists, pages, restores and deletes', async () => {
    const { saves } = await signedIn({ deviceId: 'pc-1', gameVersion: '1.2.0', engineVersion: 'aethex-0.1' });
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const v1 = await saves.save('bin', all);
    expect(v1).toMatchObject({
      slot: 'bin',
      version: 1,
      size: 256,
      checksum: `sha256:${createHash('sha256').update(all).digest('hex')}`,
      device_id: 'pc-1',
      game_version: '1.2.0',
      engine_version: 'aethex-0.1',
      restored_from: null,
    });
    const loaded = await saves.load('bin');
    expect(loaded.meta).toEqual(v1);
    expect(loaded.data).toEqual(all);
    expect(saves.knownVersion('bin')).toBe(1);

    // Later saves replace the version last seen, without naming it.
    const v2 = await saves.save('bin', all.slice().reverse(), { deviceId: 'pc-2' });
    expect(v2).toMatchObject({ version: 2, device_id: 'pc-2' });
    const v3 = await saves.save('bin', 'third, as UTF-8: é');
    expect(v3.version).toBe(3);
    expect(text((await saves.load('bin')).data)).toBe('third, as UTF-8: é');
    expect((await saves.load('bin', { version: 2 })).data).toEqual(all.slice().reverse());
    await saves.save('a', new Uint8Array(0));
    await saves.save('z', 'last slot');

    const listed = await saves.list();
    expect(listed.saves.map((m) => [m.slot, m.version])).toEqual([
      ['a', 1],
      ['bin', 3],
      ['z', 1],
    ]);
    expect(listed.next_after).toBeNull();
    const page1 = await saves.list({ limit: 2 });
    expect(page1.saves.map((m) => m.slot)).toEqual(['a', 'bin']);
    const page2 = await saves.list({ limit: 2, after: page1.next_after as string });
    expect(page2.saves.map((m) => m.slot)).toEqual(['z']);
    expect((await saves.load('a')).data).toEqual(new Uint8Array(0));

    const history = await saves.history('bin');
    expect(history.versions.map((m) => m.version)).toEqual([3, 2, 1]);
    const older = await saves.history('bin', { limit: 2 });
    expect(older.versions.map((m) => m.version)).toEqual([3, 2]);
    expect(older.next_before).toBe(2);
    expect((await saves.history('bin', { before: 2 })).versions.map((m) => m.version)).toEqual([1]);

    const restored = await saves.restore('bin', 1);
    expect(restored).toMatchObject({ version: 4, restored_from: 1, checksum: v1.checksum, device_id: 'pc-1' });
    expect(saves.knownVersion('bin')).toBe(4);
    expect((await saves.load('bin')).data).toEqual(all);
    await expect(saves.restore('bin', 2, 3)).rejects.toMatchObject({ status: 409, code: 'SAVES_VERSION_CONFLICT' });

    await expect(saves.delete('bin', 3)).rejects.toMatchObject({ status: 409, code: 'SAVES_VERSION_CONFLICT' });
    await saves.delete('bin');
    expect(saves.knownVersion('bin')).toBeUndefined();
    await expect(saves.load('bin')).rejects.toMatchObject({ status: 404, code: 'SAVES_NOT_FOUND' });
    await expect(saves.load('z', { version: 9 })).rejects.toMatchObject({ status: 404, code: 'SAVES_NOT_FOUND' });
  });

  it('creates only, when it has never seen the slot', async () => {
    const { auth, saves } = await signedIn();
    await saves.save('main', 'first');
    // A fresh client on the same account has seen nothing: its save must not overwrite.
    const fresh = new SavesClient(auth);
    const err = (await fresh.save('main', 'blind overwrite').catch((e: unknown) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 409, code: 'SAVES_VERSION_CONFLICT', data: { current: { version: 1 } } });
    // Explicit expectedVersion overrides what it remembers.
    expect((await fresh.save('main', 'second', { expectedVersion: 1 })).version).toBe(2);
    expect((await saves.save('new', 'x', { expectedVersion: null })).version).toBe(1);
  });

  it('verifies the checksum of what it loads', async () => {
    const c = client({
      // A transport that flips one bit of the save data in every load answer.
      fetch: async (url, init) => {
        const res = await fetch(url, init);
        if ((init.method ?? 'GET') !== 'GET' || !new URL(url).pathname.startsWith('/api/v1/saves/') || !res.ok) return res;
        const body = (await res.json()) as { meta: unknown; data: string };
        const raw = Buffer.from(body.data, 'base64');
        raw[0] = (raw[0] as number) ^ 1;
        return new Response(JSON.stringify({ ...body, data: raw.toString('base64') }), { status: 200 });
      },
    });
    await c.auth.register(email(), PASSWORD);
    const saves = new SavesClient(c.auth);
    await saves.save('slot', 'precious');
    const err = (await saves.load('slot').catch((e: unknown) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 0, code: 'SAVES_CHECKSUM_MISMATCH' });
    expect(err.message).toContain('save slot v1 arrived corrupted');
  });

  describe('conflicts between two devices', () => {
    /** A saves v1, B loads it, A saves v2: B's next save conflicts with remote version 2. */
    async function race(onConflict?: SavesClientOptions['onConflict'], options: SavesClientOptions = {}) {
      const address = email();
      const a = client();
      await a.auth.register(address, PASSWORD);
      const b = client();
      await b.auth.login(address, PASSWORD);
      const deviceA = new SavesClient(a.auth, { deviceId: 'A' });
      const deviceB = new SavesClient(b.auth, { deviceId: 'B', ...options, ...(onConflict ? { onConflict } : {}) });
      await deviceA.save('world', 'v1 from A');
      expect(text((await deviceB.load('world')).data)).toBe('v1 from A');
      const v2 = await deviceA.save('world', 'v2 from A');
      expect(v2.version).toBe(2);
      return { deviceA, deviceB, v2 };
    }

    it("'keep-local' writes B's data over the remote version", async () => {
      const seen: SaveConflict[] = [];
      const { deviceA, deviceB, v2 } = await race((c) => {
        seen.push(c);
        return 'keep-local';
      });
      const meta = await deviceB.save('world', 'from B');
      expect(seen).toHaveLength(1);
      expect(seen[0]).toMatchObject({ slot: 'world', remote: v2 });
      expect(text(seen[0]?.local ?? null)).toBe('from B');
      expect(meta).toMatchObject({ version: 3, device_id: 'B' });
      const current = await deviceA.load('world');
      expect(current.meta.version).toBe(3);
      expect(text(current.data)).toBe('from B');
      expect(deviceB.knownVersion('world')).toBe(3);
    });

    it("'keep-remote' drops B's data and adopts the remote version", async () => {
      const seen: SaveConflict[] = [];
      const { deviceA, deviceB, v2 } = await race((c) => {
        seen.push(c);
        return 'keep-remote';
      });
      const meta = await deviceB.save('world', 'from B');
      expect(seen.map((c) => c.remote?.version)).toEqual([2]);
      expect(meta).toEqual(v2);
      expect(deviceB.knownVersion('world')).toBe(2);
      const current = await deviceA.load('world');
      expect(current.meta.version).toBe(2);
      expect(text(current.data)).toBe('v2 from A');
      // B now builds on version 2.
      expect((await deviceB.save('world', 'next from B')).version).toBe(3);
    });

    it('{ merged } writes the merge of remote and local', async () => {
      const seen: SaveConflict[] = [];
      const { deviceA, deviceB } = await race(async (c) => {
        seen.push(c);
        const remote = text(await c.load());
        return { merged: bytes(`${remote} + ${text(c.local)}`) };
      });
      const meta = await deviceB.save('world', 'from B');
      expect(seen.map((c) => c.remote?.version)).toEqual([2]);
      expect(meta.version).toBe(3);
      expect(text((await deviceA.load('world')).data)).toBe('v2 from A + from B');
      expect((await deviceA.history('world')).versions.map((m) => [m.version, m.device_id])).toEqual([
        [3, 'B'],
        [2, 'A'],
        [1, 'A'],
      ]);
    });

    it('settles again when the slot moves on while the callback runs', async () => {
      let deviceA: SavesClient | undefined;
      const remotes: (number | undefined)[] = [];
      const r = await race(async (c) => {
        remotes.push(c.remote?.version);
        // A saves once more before B's resolution lands: B's retry conflicts again, with v3.
        if (remotes.length === 1) await deviceA?.save('world', 'v3 from A');
        return 'keep-local' as const;
      });
      deviceA = r.deviceA;
      const meta = await r.deviceB.save('world', 'from B');
      expect(remotes).toEqual([2, 3]);
      expect(meta.version).toBe(4);
      expect(text((await r.deviceA.load('world')).data)).toBe('from B');
    });

    it("each round resolves from B's own data: a 'keep-local' after a merge writes what B saved, not the merge", async () => {
      let deviceA: SavesClient | undefined;
      const remotes: (number | undefined)[] = [];
      const r = await race(async (c) => {
        remotes.push(c.remote?.version);
        if (remotes.length > 1) return 'keep-local' as const;
        // The merge lands after A's next save: it conflicts again, and B keeps its own this time.
        await deviceA?.save('world', 'v3 from A');
        return { merged: 'merged' };
      });
      deviceA = r.deviceA;
      const meta = await r.deviceB.save('world', 'from B');
      expect(remotes).toEqual([2, 3]);
      expect(meta.version).toBe(4);
      expect(text((await r.deviceA.load('world')).data)).toBe('from B');
    });

    it('gives up after maxConflictRounds rounds of a slot that keeps moving, with the last conflict', async () => {
      let deviceA: SavesClient | undefined;
      let rounds = 0;
      const r = await race(
        async () => {
          rounds++;
          await deviceA?.save('world', `v${rounds + 2} from A`);
          return 'keep-local' as const;
        },
        { maxConflictRounds: 2 },
      );
      deviceA = r.deviceA;
      await expect(r.deviceB.save('world', 'from B')).rejects.toMatchObject({ status: 409, code: 'SAVES_VERSION_CONFLICT' });
      expect(rounds).toBe(2);
      expect(text((await r.deviceA.load('world')).data)).toBe('v4 from A');
    });

    it('without onConflict rejects with ApiError 409 SAVES_VERSION_CONFLICT', async () => {
      const { deviceA, deviceB, v2 } = await race();
      const err = (await deviceB.save('world', 'from B').catch((e: unknown) => e)) as ApiError;
      expect(err).toBeInstanceOf(ApiError);
      expect(err).toMatchObject({ status: 409, code: 'SAVES_VERSION_CONFLICT', data: { current: v2 } });
      // Nothing was written, and B still remembers version 1: retrying blindly conflicts again.
      expect(deviceB.knownVersion('world')).toBe(1);
      expect((await deviceA.load('world')).meta.version).toBe(2);
      await expect(deviceB.save('world', 'from B')).rejects.toMatchObject({ code: 'SAVES_VERSION_CONFLICT' });
    });

    it("a slot deleted elsewhere: 'keep-local' recreates it, 'keep-remote' leaves it deleted", async () => {
      const remotes: (number | null)[] = [];
      let choice: 'keep-local' | 'keep-remote' = 'keep-remote';
      const { deviceA, deviceB } = await race((c) => {
        remotes.push(c.remote?.version ?? null);
        return choice;
      });
      await deviceA.delete('world');
      const err = (await deviceB.save('world', 'from B').catch((e: unknown) => e)) as ApiError;
      expect(err).toMatchObject({ status: 404, code: 'SAVES_NOT_FOUND' });
      expect(deviceB.knownVersion('world')).toBeUndefined();
      choice = 'keep-local';
      await deviceA.save('world', 'A again');
      // B's create-only write conflicts with A's new version 1.
      expect((await deviceB.save('world', 'from B')).version).toBe(2);
      expect(remotes).toEqual([null, 1]);
    });
  });
});
