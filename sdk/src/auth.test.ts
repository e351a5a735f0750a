// The parts of the auth client that need no server: error parsing, Retry-After, token storage.
import { describe, expect, test } from 'vitest';
import { ApiError, MemoryTokenStorage, parseRetryAfter, type Session, webTokenStorage } from './auth.js';

const session: Session = {
  accessToken: 'a.b.c',
  accessExpiresAt: 1_000,
  refreshToken: 'rt_x',
  refreshExpiresAt: 2_000,
  user: { id: 'u1', email: null, display_name: '', roles: ['guest'], permissions: [], created_at: '2026-01-01T00:00:00.000Z' },
};

describe('parseRetryAfter', () => {
  test('reads delay-seconds and HTTP dates, relative to the clock', () => {
    const now = Date.parse('2026-03-01T12:00:00Z');
    expect(parseRetryAfter('30', now)).toBe(30);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Sun, 01 Mar 2026 12:00:10 GMT', now)).toBe(10);
    expect(parseRetryAfter('Sun, 01 Mar 2026 11:00:00 GMT', now)).toBe(0);
  });

  test('is undefined when absent or unreadable', () => {
    expect(parseRetryAfter(null, 0)).toBeUndefined();
    expect(parseRetryAfter(undefined, 0)).toBeUndefined();
    expect(parseRetryAfter('soon', 0)).toBeUndefined();
    expect(parseRetryAfter('-5', 0)).toBeUndefined();
    // Digits followed by anything else are no delay-seconds.
    expect(parseRetryAfter('30s', 0)).toBeUndefined();
    expect(parseRetryAfter('1.5', 0)).toBeUndefined();
  });
});

describe('ApiError.fromResponse', () => {
  test("takes status, code, message, data and Retry-After from the control plane's error body", async () => {
    const res = new Response(JSON.stringify({ error: { code: 'RATE_LIMITED', message: 'slow down', data: { scope: 'login' } } }), {
      status: 429,
      headers: { 'content-type': 'application/json', 'retry-after': '12' },
    });
    const e = await ApiError.fromResponse(res);
    expect(e).toBeInstanceOf(ApiError);
    expect(e).toBeInstanceOf(Error);
    expect(e).toMatchObject({
      name: 'ApiError',
      status: 429,
      code: 'RATE_LIMITED',
      message: 'slow down',
      data: { scope: 'login' },
      retryAfterS: 12,
    });
  });

  test('names a body that is not the API error JSON by its status', async () => {
    const e = await ApiError.fromResponse(new Response('<html>Bad gateway</html>', { status: 502 }));
    expect(e).toMatchObject({ status: 502, code: 'HTTP_502', data: undefined, retryAfterS: undefined });
    expect(e.message).toContain('Bad gateway');
    const empty = await ApiError.fromResponse(new Response(null, { status: 503, headers: { 'retry-after': '1' } }));
    expect(empty).toMatchObject({ status: 503, code: 'HTTP_503', message: 'HTTP 503', retryAfterS: 1 });
  });

  test('leaves data undefined when the error has none', async () => {
    const e = await ApiError.fromResponse(
      new Response(JSON.stringify({ error: { code: 'AUTH_REQUIRED', message: 'm' } }), { status: 401 }),
    );
    expect(e.data).toBeUndefined();
    expect(e.code).toBe('AUTH_REQUIRED');
  });
});

describe('token storage', () => {
  test('memory storage keeps what it was given', () => {
    const s = new MemoryTokenStorage();
    expect(s.load()).toBeUndefined();
    s.save(session);
    expect(s.load()).toEqual(session);
    s.clear();
    expect(s.load()).toBeUndefined();
    expect(new MemoryTokenStorage(session).load()).toBe(session);
  });

  test('web storage round-trips the session as JSON and treats garbage as signed out', () => {
    const items = new Map<string, string>();
    const web = {
      getItem: (k: string) => items.get(k) ?? null,
      setItem: (k: string, v: string) => void items.set(k, v),
      removeItem: (k: string) => void items.delete(k),
    };
    const s = webTokenStorage(web, 'k');
    expect(s.load()).toBeUndefined();
    s.save(session);
    expect(JSON.parse(items.get('k') as string)).toEqual(session);
    expect(s.load()).toEqual(session);
    items.set('k', '{not json');
    expect(s.load()).toBeUndefined();
    items.set('k', '{"accessToken":1}');
    expect(s.load()).toBeUndefined();
    items.set('k', 'null');
    expect(s.load()).toBeUndefined();
    s.save(session);
    s.clear();
    expect(items.has('k')).toBe(false);
  });
});
