// The control plane's auth API (/api/v1/auth) for games: accounts, guest sign-in, and a session
// whose access token is attached and renewed for every other client of the control plane.
// Browser-safe: only fetch and web APIs, no node: imports, no process.env.

/** A user's profile as the control plane reports it. */
export interface User {
  id: string;
  /** Null for a guest that has not been upgraded. */
  email: string | null;
  display_name: string;
  roles: string[];
  permissions: string[];
  /** ISO 8601. */
  created_at: string;
}

/** A signed-in session: what the token storage keeps. Plain JSON, so it can be persisted as is. */
export interface Session {
  accessToken: string;
  /** When the access token expires, in the client's clock (ms since the epoch). */
  accessExpiresAt: number;
  /** Single use: each refresh replaces it; presenting a spent one ends the session server-side. */
  refreshToken: string;
  /** When the session ends however often it is refreshed (ms since the epoch, server's clock). */
  refreshExpiresAt: number;
  user: User;
}

/**
 * Where the session lives between calls (and, if it persists, between runs). Calls are
 * synchronous so every read sees the latest write; `MemoryTokenStorage` is the default and
 * `webTokenStorage(localStorage)` persists in a browser.
 */
export interface TokenStorage {
  load(): Session | undefined;
  save(session: Session): void;
  clear(): void;
}

/** Keeps the session in memory: it lasts as long as the object. */
export class MemoryTokenStorage implements TokenStorage {
  private session: Session | undefined;
  constructor(initial?: Session) {
    this.session = initial;
  }
  load(): Session | undefined {
    return this.session;
  }
  save(session: Session): void {
    this.session = session;
  }
  clear(): void {
    this.session = undefined;
  }
}

/** The subset of the Web Storage API (`localStorage`, `sessionStorage`) `webTokenStorage` uses. */
export interface WebStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * Keeps the session as JSON under `key` in a Web Storage (for example `localStorage`). An entry
 * that does not parse counts as no session. Note that two tabs sharing it each refresh on their
 * own; a refresh token is single use, so give each tab its own key (or `sessionStorage`) if tabs
 * may refresh at the same time.
 */
export function webTokenStorage(storage: WebStorageLike, key = 'aethex.session'): TokenStorage {
  return {
    load() {
      const text = storage.getItem(key);
      if (text === null) return undefined;
      try {
        const s = JSON.parse(text) as Session;
        return typeof s?.accessToken === 'string' && typeof s.refreshToken === 'string' ? s : undefined;
      } catch {
        return undefined;
      }
    },
    save(session) {
      storage.setItem(key, JSON.stringify(session));
    },
    clear() {
      storage.removeItem(key);
    },
  };
}

/**
 * Any failure of a control-plane call. `status` and `code` are the HTTP status and the error
 * code of the control plane's catalogue (`{ error: { code, message, data } }`), for example 409
 * SAVES_VERSION_CONFLICT with `data.current`. Failures the SDK detects itself have status 0:
 * NETWORK_ERROR (no answer; `cause` holds the fetch error), BAD_RESPONSE (an answer that is not
 * the API's JSON), AUTH_REQUIRED (no session), SAVES_CHECKSUM_MISMATCH (loaded bytes do not match
 * their checksum). `retryAfterS` is the Retry-After header in seconds (429, 503), when sent.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly data?: Record<string, unknown>,
    readonly retryAfterS?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ApiError';
  }

  /**
   * The error a non-2xx response stands for. Reads the body; an answer that is not the API's
   * error JSON (a proxy's HTML page, say) becomes code `HTTP_<status>`.
   */
  static async fromResponse(res: Response, now: () => number = Date.now): Promise<ApiError> {
    const retryAfterS = parseRetryAfter(res.headers.get('retry-after'), now());
    let body: unknown;
    let text = '';
    try {
      text = await res.text();
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const e = (body as { error?: { code?: unknown; message?: unknown; data?: unknown } } | undefined)?.error;
    if (e && typeof e.code === 'string') {
      const data = e.data !== null && typeof e.data === 'object' ? (e.data as Record<string, unknown>) : undefined;
      return new ApiError(res.status, e.code, typeof e.message === 'string' ? e.message : e.code, data, retryAfterS);
    }
    const snippet = text.slice(0, 200).trim();
    return new ApiError(res.status, `HTTP_${res.status}`, `HTTP ${res.status}${snippet ? `: ${snippet}` : ''}`, undefined, retryAfterS);
  }
}

/**
 * Seconds to wait from a Retry-After header: delay-seconds, or an HTTP date relative to `nowMs`
 * (never negative). Undefined when absent or unreadable.
 */
export function parseRetryAfter(header: string | null | undefined, nowMs: number): number | undefined {
  if (header === null || header === undefined) return undefined;
  const h = header.trim();
  if (/^\d+$/.test(h)) return Number(h);
  // HTTP dates all start with the day's name; Date.parse alone would take '-5' as a year.
  const at = /^[A-Za-z]{3}/.test(h) ? Date.parse(h) : Number.NaN;
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - nowMs) / 1000));
}

/** How the clients call HTTP: `fetch`'s shape, restricted to a URL string. */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface AuthClientOptions {
  /** The control plane's address, for example `https://api.example.com` (a path prefix is kept). */
  baseUrl: string;
  /** The HTTP implementation; defaults to the global fetch (browsers, Node 18+). */
  fetch?: FetchLike;
  /** Where the session is kept; defaults to memory (a fresh client is signed out). */
  storage?: TokenStorage;
  /** Milliseconds since the epoch; defaults to Date.now. Decides when the access token is stale. */
  now?: () => number;
  /** Refresh this long before the access token expires (ms, default 30 000). */
  refreshLeewayMs?: number;
  /**
   * Called when the session ends without the caller asking: a refresh was refused (the refresh
   * token expired, was revoked by a logout elsewhere, or was spent). The session is already
   * cleared from storage; the game should send the player to sign-in. Not called by logout().
   */
  onSessionEnded?: (error: ApiError) => void;
}

interface TokensBody {
  token_type: 'Bearer';
  access_token: string;
  expires_in: number;
  refresh_token: string;
  refresh_expires_at: string;
  user: User;
}

const AUTH = '/api/v1/auth';

/**
 * A player's session with the control plane. Signs in (email and password, or as a guest by
 * device id), keeps the session in its TokenStorage, and gives other clients (SavesClient)
 * `request`/`authorizedFetch`, which attach the access token and renew it:
 *
 * - before a request, when the access token expires within `refreshLeewayMs` (by the clock);
 * - after a request answered 401 AUTH_INVALID_TOKEN, once, then the request is retried once.
 *
 * Refreshes are single-flight: however many calls need one at the same moment, one refresh
 * request is made and they all wait for it. This matters because refresh tokens are single use
 * and presenting a spent one revokes the whole session. When the server refuses a refresh
 * (4xx), the session is cleared and `onSessionEnded` is called; a refresh that fails transiently
 * (network, 429, 5xx) leaves the session in place and the call rejects, so a later call retries.
 *
 * Every failure is an ApiError.
 */
export class AuthClient {
  private readonly baseUrl: string;
  private readonly fetchImpl: FetchLike;
  private readonly storage: TokenStorage;
  private readonly now: () => number;
  private readonly leewayMs: number;
  private readonly onSessionEnded: ((error: ApiError) => void) | undefined;
  /** The refresh in flight, keyed by the refresh token it spends. */
  private inflight: { refreshToken: string; promise: Promise<Session> } | undefined;
  /** logout() calls in progress: a refresh they cause ending the session is not news. */
  private loggingOut = 0;

  constructor(options: AuthClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.fetchImpl = options.fetch ?? ((url, init) => globalThis.fetch(url, init));
    this.storage = options.storage ?? new MemoryTokenStorage();
    this.now = options.now ?? Date.now;
    this.leewayMs = options.refreshLeewayMs ?? 30_000;
    this.onSessionEnded = options.onSessionEnded;
  }

  /** The current session, or undefined when signed out. */
  get session(): Session | undefined {
    return this.storage.load();
  }

  /** The signed-in user as of the last sign-in, refresh or profile call. */
  get user(): User | undefined {
    return this.storage.load()?.user;
  }

  /** Creates an account and signs in to it. Fails with 409 AUTH_EMAIL_TAKEN. */
  async register(email: string, password: string, displayName?: string): Promise<User> {
    const body: Record<string, string> = { email, password };
    if (displayName !== undefined) body.display_name = displayName;
    return this.start(await this.send<TokensBody>('POST', `${AUTH}/register`, body));
  }

  /** Signs in with email and password. Fails with 401 AUTH_INVALID_CREDENTIALS, or 429 (retryAfterS). */
  async login(email: string, password: string): Promise<User> {
    return this.start(await this.send<TokensBody>('POST', `${AUTH}/login`, { email, password }));
  }

  /**
   * Signs in as the guest identified by `deviceId` (16–128 of `A-Za-z0-9._:-`), creating it on
   * first use. The device id is the guest's only credential: generate it randomly
   * (`crypto.randomUUID()`), keep it, and keep it secret.
   */
  async loginGuest(deviceId: string): Promise<User> {
    return this.start(await this.send<TokensBody>('POST', `${AUTH}/guest`, { device_id: deviceId }));
  }

  /**
   * Gives the signed-in guest an email and password; it becomes a full account keeping its id and
   * saves, in the same session. Fails with 409 AUTH_ALREADY_REGISTERED or AUTH_EMAIL_TAKEN.
   */
  async upgrade(email: string, password: string): Promise<User> {
    const r = await this.request<Omit<TokensBody, 'refresh_token' | 'refresh_expires_at'>>('POST', `${AUTH}/upgrade`, {
      email,
      password,
    });
    const current = this.storage.load();
    // The session (and its refresh token) carries on; only the access token and profile change.
    if (current) {
      this.storage.save({ ...current, accessToken: r.access_token, accessExpiresAt: this.now() + r.expires_in * 1000, user: r.user });
    }
    return r.user;
  }

  /**
   * Trades the refresh token for a new access token and its successor. Single-flight: calls made
   * while a refresh is in flight share it. Rejects with ApiError AUTH_REQUIRED (status 0) when
   * signed out; when the server refuses, the session is cleared and `onSessionEnded` called.
   */
  refresh(): Promise<Session> {
    const current = this.storage.load();
    if (!current) return Promise.reject(new ApiError(0, 'AUTH_REQUIRED', 'not signed in'));
    if (this.inflight?.refreshToken === current.refreshToken) return this.inflight.promise;
    const spent = current.refreshToken;
    const promise = this.doRefresh(spent).finally(() => {
      if (this.inflight?.promise === promise) this.inflight = undefined;
    });
    this.inflight = { refreshToken: spent, promise };
    return promise;
  }

  private async doRefresh(spent: string): Promise<Session> {
    let tokens: TokensBody;
    try {
      tokens = await this.send<TokensBody>('POST', `${AUTH}/refresh`, { refresh_token: spent });
    } catch (err) {
      const e = err as ApiError;
      const refused = e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429;
      if (refused && this.storage.load()?.refreshToken === spent) {
        this.storage.clear();
        if (this.loggingOut === 0) this.onSessionEnded?.(e);
      }
      throw e;
    }
    const next = this.toSession(tokens);
    // Signed out or signed in anew meanwhile: that newer state wins.
    const stored = this.storage.load();
    if (stored?.refreshToken !== spent) {
      if (stored) return stored;
      throw new ApiError(0, 'AUTH_REQUIRED', 'signed out while the session was being refreshed');
    }
    this.storage.save(next);
    return next;
  }

  /**
   * Ends this session on the server (`all`: every session of the account) and clears it locally.
   * The local session is cleared even if the server cannot be reached; that error is then
   * rethrown (the server-side session may live on until it expires). A session the server
   * already ended counts as success.
   */
  async logout(options: { all?: boolean } = {}): Promise<void> {
    if (!this.storage.load()) return;
    this.loggingOut++;
    try {
      await this.request<void>('POST', `${AUTH}/logout`, options.all ? { all: true } : {});
    } catch (err) {
      // 401: the session had already ended (revoked elsewhere, or its refresh was refused).
      const ended = err instanceof ApiError && (err.status === 401 || err.code === 'AUTH_REQUIRED');
      if (!ended) throw err;
    } finally {
      this.loggingOut--;
      this.storage.clear();
    }
  }

  /** The signed-in user's profile, fresh from the server (also updates the stored one). */
  async me(): Promise<User> {
    return this.keepUser(await this.request<User>('GET', `${AUTH}/me`));
  }

  /** Changes the display name (0–64 characters, no control characters). */
  async updateProfile(profile: { displayName: string }): Promise<User> {
    return this.keepUser(await this.request<User>('PATCH', `${AUTH}/me`, { display_name: profile.displayName }));
  }

  /**
   * Calls the control plane with the session's access token (see the class comment for when it
   * refreshes) and returns the parsed JSON body, or undefined for an empty one (204). A non-2xx
   * answer rejects with its ApiError.
   */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'content-type': 'application/json' };
    }
    const res = await this.authorizedFetch(path, init);
    return this.read<T>(res);
  }

  /**
   * `fetch(baseUrl + path, init)` with `Authorization: Bearer <access token>` when signed in,
   * refreshing as described on the class. Resolves with the Response whatever its status; rejects
   * with an ApiError when there was no answer or a needed refresh failed. `init.body` must be
   * replayable (a string, bytes, not a stream): it is sent again after a refresh on 401.
   */
  async authorizedFetch(path: string, init: RequestInit = {}): Promise<Response> {
    const session = await this.validSession();
    const res = await this.fetchWith(path, init, session?.accessToken);
    if (res.status !== 401 || !session) return res;
    const code = await res
      .clone()
      .json()
      .then((b: { error?: { code?: unknown } }) => b?.error?.code)
      .catch(() => undefined);
    if (code !== 'AUTH_INVALID_TOKEN') return res;
    const latest = this.storage.load();
    if (!latest) return res;
    await res.body?.cancel().catch(() => undefined);
    // Another call may have refreshed meanwhile: then its token is the one to retry with.
    const retryWith = latest.accessToken !== session.accessToken ? latest : await this.refresh();
    return this.fetchWith(path, init, retryWith.accessToken);
  }

  /**
   * The stored session, refreshed first if its access token is within the leeway of expiring.
   * Reading and deciding happen in one synchronous step, so a call never refreshes a session
   * another call has just refreshed.
   */
  private validSession(): Promise<Session | undefined> {
    const s = this.storage.load();
    if (!s || this.now() < s.accessExpiresAt - this.leewayMs) return Promise.resolve(s);
    return this.refresh();
  }

  private async fetchWith(path: string, init: RequestInit, token: string | undefined): Promise<Response> {
    const headers = new Headers(init.headers);
    if (token !== undefined) headers.set('authorization', `Bearer ${token}`);
    try {
      return await this.fetchImpl(this.baseUrl + path, { ...init, headers });
    } catch (err) {
      throw new ApiError(0, 'NETWORK_ERROR', `${init.method ?? 'GET'} ${path}: ${(err as Error)?.message ?? err}`, undefined, undefined, {
        cause: err,
      });
    }
  }

  /** An unauthenticated JSON call. */
  private async send<T>(method: string, path: string, body: unknown): Promise<T> {
    const res = await this.fetchWith(
      path,
      { method, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } },
      undefined,
    );
    return this.read<T>(res);
  }

  private async read<T>(res: Response): Promise<T> {
    if (!res.ok) throw await ApiError.fromResponse(res, this.now);
    const text = await res.text();
    if (text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(0, 'BAD_RESPONSE', `HTTP ${res.status} answer is not JSON: ${text.slice(0, 200)}`);
    }
  }

  private toSession(t: TokensBody): Session {
    return {
      accessToken: t.access_token,
      accessExpiresAt: this.now() + t.expires_in * 1000,
      refreshToken: t.refresh_token,
      refreshExpiresAt: Date.parse(t.refresh_expires_at),
      user: t.user,
    };
  }

  private start(t: TokensBody): User {
    this.storage.save(this.toSession(t));
    return t.user;
  }

  private keepUser(user: User): User {
    const s = this.storage.load();
    if (s && s.user.id === user.id) this.storage.save({ ...s, user });
    return user;
  }
}
