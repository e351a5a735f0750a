import { createLocalJWKSet, errors, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { redactUrl, redactUrlsIn } from './settings.js';

/** How a {@link RemoteKeySet} fetches and keeps its key set; every duration in milliseconds. */
export interface RemoteKeySetOptions {
  /** How long one fetch may take (default 5000). */
  timeoutMs?: number;
  /** A loaded set is fetched again this long after its last fetch, in the background (default 300_000). */
  refreshMs?: number;
  /**
   * After a failed fetch the next background one waits this long, doubled for each failure in a
   * row, at most `refreshMs` (default 1000).
   */
  retryMs?: number;
  /**
   * Least time between two fetches a token can cause (one naming a `kid` the set lacks, or any
   * while no set has loaded yet), and never sooner than the back-off after failures (default 30_000).
   */
  cooldownMs?: number;
  /** Largest key set answer read, in bytes (default 65536): a larger one is a failed fetch. */
  maxBytes?: number;
  /** Clock in milliseconds (tests). */
  now?: () => number;
}

/**
 * Why a key set could never be fetched from `url`, or undefined: it does not parse, is not http(s),
 * or carries credentials (`user:password@`), which fetch refuses to send. The shard's
 * configuration refuses such an `auth.jwks_url` (it would sit unready for ever); RemoteKeySet
 * refuses it too.
 */
export function jwksUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'is not a URL (it does not parse)';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'is not an http(s) URL';
  if (parsed.username !== '' || parsed.password !== '') {
    return 'carries credentials (user:password@), which fetch refuses to send, so the keys could never load: give the key server a token in the query instead (?token=…; every query value is masked in the logs)';
  }
  return undefined;
}

/**
 * `err` fit to show: when its message or a cause's quotes `url` (fetch's own errors quote the URL
 * they refuse) or a secret of it, an Error of the same name whose message is theirs with those
 * masked (redactUrlsIn), without the causes that quote it; otherwise `err` itself.
 */
function masked(err: unknown, url: string): unknown {
  const messages: string[] = [];
  for (let e: unknown = err; e instanceof Error && messages.length < 4; e = e.cause) messages.push(e.message);
  const shown = messages.map((m) => redactUrlsIn(m, url));
  if (shown.every((m, i) => m === messages[i])) return err;
  const safe = new Error(shown.join(': '));
  safe.name = (err as Error).name;
  return safe;
}

/** Bytes of a JWKS answer read at most by default: a set of a few dozen keys is a few KiB. */
export const JWKS_MAX_BYTES = 64 * 1024;

/**
 * The join-token keys at a JWKS URL. Unlike jose's `createRemoteJWKSet`, which drops a set older
 * than its `cacheMaxAge` and fetches it again for every token while the URL fails, the last set
 * that loaded is kept and used whatever happens to the URL later, and is fetched again:
 *
 * - in the background, `refreshMs` after its last fetch (after a failure, with a back-off from
 *   `retryMs` doubling to `refreshMs`), so a key removed from the set stops verifying within about
 *   `refreshMs`, and a key added is known before tokens use it;
 * - for a token naming a `kid` the set lacks, or while no set has loaded, at most once per
 *   `cooldownMs` and not during the back-off: forged tokens cannot make the shard hammer its key
 *   server;
 * - on `load()` (the shard at start, until it succeeds).
 *
 * At most one fetch is in flight; everyone asking meanwhile waits for it. The answer's body is
 * read up to `maxBytes`.
 */
export class RemoteKeySet {
  private local: JWTVerifyGetKey | undefined;
  /** The body of the set in use (a fetch of the same body changes nothing). */
  private body = '';
  /** When the set in use was last fetched (or fetched again unchanged). */
  private loadedAt: number | undefined;
  private inflight: Promise<void> | undefined;
  /** When the last fetch began (-Infinity: none yet). */
  private lastAttemptAt = Number.NEGATIVE_INFINITY;
  /** Failed fetches in a row. */
  private failures = 0;
  private lastError: unknown;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Counts the changes of the set: 0 before the first load. */
  generation = 0;
  private readonly url: string;
  private readonly timeoutMs: number;
  private readonly refreshMs: number;
  private readonly retryMs: number;
  private readonly cooldownMs: number;
  private readonly maxBytes: number;
  private readonly now: () => number;

  constructor(url: string, options: RemoteKeySetOptions = {}) {
    const problem = jwksUrlProblem(url);
    if (problem !== undefined) throw new Error(`the JWKS URL ${redactUrl(url) ?? '(not shown)'} ${problem}`);
    this.url = new URL(url).href;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.refreshMs = options.refreshMs ?? 300_000;
    this.retryMs = Math.min(options.retryMs ?? 1000, this.refreshMs);
    this.cooldownMs = options.cooldownMs ?? 30_000;
    this.maxBytes = options.maxBytes ?? JWKS_MAX_BYTES;
    this.now = options.now ?? (() => performance.now());
  }

  /** Whether a set has loaded (it is kept from then on). */
  loaded(): boolean {
    return this.local !== undefined;
  }

  /** Milliseconds since the set in use was fetched; undefined before the first load. */
  ageMs(): number | undefined {
    return this.loadedAt === undefined ? undefined : this.now() - this.loadedAt;
  }

  /**
   * Fetches the set now (or waits for the fetch in flight), rejecting with why it failed (its
   * message never holds the URL's password or query values).
   */
  load(): Promise<void> {
    if (this.inflight) return this.inflight;
    this.lastAttemptAt = this.now();
    const fetching = this.fetchSet().then(
      () => {
        this.failures = 0;
        this.lastError = undefined;
        this.schedule(this.refreshMs);
      },
      (failure: unknown) => {
        // Whoever gets it may log it: a fetch error that quotes the URL has its secrets masked.
        const err = masked(failure, this.url);
        this.failures++;
        this.lastError = err;
        // Before the first load, whoever asked retries (the shard's start); after it, the
        // background refresh does, backing off.
        if (this.local) this.schedule(this.backoffMs());
        throw err;
      },
    );
    this.inflight = fetching.finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  /** Stops the background refresh. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /**
   * The key for a token, for `jwtVerify`. Throws jose's `JWKSNoMatchingKey` when the set (fetched
   * again if allowed) has no key for it, and the fetch's error when there is no set to look in, or
   * the fetch the token caused failed.
   */
  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    if (!this.local) {
      if (!this.inflight && !this.mayFetchForToken()) throw this.lastError ?? new Error('the key set has not loaded yet');
      await this.load();
    }
    const local = this.local as JWTVerifyGetKey;
    try {
      return await local(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey) || !(this.inflight || this.mayFetchForToken())) throw err;
    }
    // A key the set lacks: perhaps one added since the last fetch.
    await this.load();
    return (this.local as JWTVerifyGetKey)(header, token);
  };

  /** After `failures` failures in a row, how long before the next fetch. */
  private backoffMs(): number {
    return Math.min(this.retryMs * 2 ** Math.max(0, this.failures - 1), this.refreshMs);
  }

  /** Whether a token may cause a fetch now: not within the cooldown, nor the back-off after failures. */
  private mayFetchForToken(): boolean {
    const since = this.now() - this.lastAttemptAt;
    return since >= this.cooldownMs && (this.failures === 0 || since >= this.backoffMs());
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.load().catch(() => undefined);
    }, ms);
    this.timer.unref();
  }

  private async fetchSet(): Promise<void> {
    const response = await fetch(this.url, {
      method: 'GET',
      redirect: 'manual',
      signal: AbortSignal.timeout(this.timeoutMs),
      headers: { accept: 'application/json, application/jwk-set+json' },
    }).catch((err: unknown) => {
      if ((err as Error).name === 'TimeoutError') throw new errors.JWKSTimeout(undefined, { cause: err });
      throw err;
    });
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => undefined);
      throw new errors.JOSEError(`Expected 200 OK from the JSON Web Key Set HTTP response, got ${response.status}`);
    }
    const text = await readCapped(response, this.maxBytes, redactUrl(this.url) ?? 'the JWKS URL');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (cause) {
      throw new errors.JOSEError('Failed to parse the JSON Web Key Set HTTP response as JSON', { cause });
    }
    // Throws JWKSInvalid for anything but { keys: [...] }.
    const local = createLocalJWKSet(json as JSONWebKeySet);
    this.loadedAt = this.now();
    if (this.local && text === this.body) return;
    this.local = local;
    this.body = text;
    this.generation++;
  }
}

/** The body of `response` as text, failing once it passes `maxBytes` (the rest is not read). */
async function readCapped(response: Response, maxBytes: number, shownUrl: string): Promise<string> {
  const tooLarge = () => new errors.JOSEError(`the JSON Web Key Set at ${shownUrl} is larger than ${maxBytes} bytes`);
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw tooLarge();
  }
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    length += value.byteLength;
    if (length > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, length).toString('utf8');
}
