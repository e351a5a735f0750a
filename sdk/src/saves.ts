// The control plane's cloud saves (/api/v1/saves) for games: versioned blobs per user and slot,
// with optimistic concurrency. Browser-safe: no Buffer, no node: imports.

import { ApiError, type AuthClient } from './auth.js';
import { fromBase64, sha256Checksum, toBase64, toBytes } from './encoding.js';

/** One version of a save, as the control plane reports it. */
export interface SaveMeta {
  slot: string;
  version: number;
  /** Bytes of the save. */
  size: number;
  /** Bytes stored (compressed). */
  stored_size: number;
  /** `sha256:<hex>` of the bytes. */
  checksum: string;
  device_id: string;
  game_version: string;
  engine_version: string;
  /** The version this one restored, if it was made by restore(). */
  restored_from: number | null;
  /** ISO 8601. */
  created_at: string;
}

/** A loaded save: its metadata and its bytes (checksum verified). */
export interface LoadedSave {
  meta: SaveMeta;
  data: Uint8Array;
}

/** What onConflict is told when a write lost a race. */
export interface SaveConflict {
  slot: string;
  /** The bytes this write tried to store. */
  local: Uint8Array;
  /** The slot's current version on the server, or null if the slot no longer exists. */
  remote: SaveMeta | null;
  /** Loads the bytes of exactly `remote` (null when `remote` is null), checksum verified. */
  load: () => Promise<Uint8Array | null>;
}

/**
 * How to settle a conflict:
 * - `'keep-local'`: write `local` again, replacing the remote version;
 * - `'keep-remote'`: drop `local` and adopt the remote version (save() resolves with its meta);
 * - `{ merged }`: write these bytes, replacing the remote version.
 */
export type ConflictResolution = 'keep-local' | 'keep-remote' | { merged: Uint8Array | string };

export interface SavesClientOptions {
  /**
   * Settles a write that lost to another device's (409 SAVES_VERSION_CONFLICT). Without it, such
   * a write rejects with that ApiError (`data.current` holds the remote meta).
   */
  onConflict?: (conflict: SaveConflict) => ConflictResolution | Promise<ConflictResolution>;
  /** Whose saves; defaults to the signed-in user (another user's needs an admin's permissions). */
  userId?: string;
  /** Default labels recorded with each save (printable ASCII, at most 64 characters). */
  deviceId?: string;
  gameVersion?: string;
  engineVersion?: string;
  /** How many times one save() settles a conflict before giving up with the last one (default 5). */
  maxConflictRounds?: number;
}

export interface SaveOptions {
  /**
   * The version this write replaces; null: create only. Defaults to the version this client last
   * saw for the slot (from load, save or restore), or null if it has seen none.
   */
  expectedVersion?: number | null;
  deviceId?: string;
  gameVersion?: string;
  engineVersion?: string;
}

const SAVES = '/api/v1/saves';

/**
 * A user's cloud saves, through an AuthClient's session. Writes are compare-and-set: each names
 * the version it replaces, and this client remembers per slot the last version it saw (loaded
 * without `version`, saved or restored), so `save(slot, data)` after a `load(slot)` replaces
 * exactly what was loaded, and a slot it has never seen is created, never overwritten. list()
 * and history() do not change what it remembers: having seen a version number is not having
 * seen its data.
 *
 * Each save carries the SHA-256 of its bytes, which the server checks; each load verifies the
 * bytes it got against their checksum and rejects with ApiError SAVES_CHECKSUM_MISMATCH
 * (status 0) rather than return corrupted data.
 */
export class SavesClient {
  /** Last version seen, by user and slot. */
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly auth: AuthClient,
    private readonly options: SavesClientOptions = {},
  ) {}

  /** The version this client will name in the next save(slot) without expectedVersion. */
  knownVersion(slot: string): number | undefined {
    return this.seen.get(this.key(slot));
  }

  /**
   * Writes a new version of `slot` (strings are stored as UTF-8) and resolves with its meta.
   * On a conflict, onConflict settles it (see SavesClientOptions); with 'keep-remote' against a
   * slot deleted elsewhere there is no version to adopt, so it rejects with ApiError
   * SAVES_NOT_FOUND (404) and forgets the slot. Other failures reject with their ApiError
   * (SAVES_TOO_LARGE, SAVES_QUOTA_EXCEEDED, …).
   */
  async save(slot: string, data: Uint8Array | string, options: SaveOptions = {}): Promise<SaveMeta> {
    const local = toBytes(data);
    let bytes = local;
    let expected = options.expectedVersion !== undefined ? options.expectedVersion : (this.knownVersion(slot) ?? null);
    const rounds = this.options.maxConflictRounds ?? 5;
    for (let round = 0; ; round++) {
      try {
        return await this.put(slot, bytes, expected, options);
      } catch (err) {
        if (!(err instanceof ApiError && err.code === 'SAVES_VERSION_CONFLICT') || !this.options.onConflict || round >= rounds) throw err;
        const remote = (err.data?.current as SaveMeta | null | undefined) ?? null;
        const resolution = await this.options.onConflict({
          slot,
          local,
          remote,
          load: async () => (remote ? (await this.load(slot, { version: remote.version })).data : null),
        });
        if (resolution === 'keep-remote') {
          if (!remote) {
            this.seen.delete(this.key(slot));
            throw new ApiError(404, 'SAVES_NOT_FOUND', `slot ${slot} was deleted elsewhere; kept that (no save)`, undefined, undefined, {
              cause: err,
            });
          }
          this.seen.set(this.key(slot), remote.version);
          return remote;
        }
        if (resolution === 'keep-local') bytes = local;
        else if (resolution !== null && typeof resolution === 'object' && 'merged' in resolution) bytes = toBytes(resolution.merged);
        else throw new TypeError(`onConflict returned ${JSON.stringify(resolution)}; expected 'keep-local', 'keep-remote' or { merged }`);
        expected = remote ? remote.version : null;
      }
    }
  }

  private async put(slot: string, bytes: Uint8Array, expected: number | null, o: SaveOptions): Promise<SaveMeta> {
    const body: Record<string, unknown> = { data: toBase64(bytes), expected_version: expected, checksum: await sha256Checksum(bytes) };
    const deviceId = o.deviceId ?? this.options.deviceId;
    const gameVersion = o.gameVersion ?? this.options.gameVersion;
    const engineVersion = o.engineVersion ?? this.options.engineVersion;
    if (deviceId !== undefined) body.device_id = deviceId;
    if (gameVersion !== undefined) body.game_version = gameVersion;
    if (engineVersion !== undefined) body.engine_version = engineVersion;
    const meta = await this.auth.request<SaveMeta>('PUT', this.path(slot), body);
    this.seen.set(this.key(slot), meta.version);
    return meta;
  }

  /**
   * Loads the current version of `slot` (and remembers it for the next save), or `version`
   * (which changes nothing remembered). Rejects with 404 SAVES_NOT_FOUND when there is none, and
   * with SAVES_CHECKSUM_MISMATCH (status 0) if the bytes do not match their checksum.
   */
  async load(slot: string, options: { version?: number } = {}): Promise<LoadedSave> {
    const q = options.version === undefined ? '' : `?version=${options.version}`;
    const r = await this.auth.request<{ meta: SaveMeta; data: string }>('GET', `${this.path(slot)}${q}`);
    let data: Uint8Array;
    try {
      data = fromBase64(r.data);
    } catch (err) {
      throw new ApiError(0, 'BAD_RESPONSE', `save ${slot} v${r.meta.version}: data is not base64`, undefined, undefined, { cause: err });
    }
    await verifySave(r.meta, data);
    if (options.version === undefined) this.seen.set(this.key(slot), r.meta.version);
    return { meta: r.meta, data };
  }

  /** The user's slots with their current meta, by name; pass `next_after` as `after` for the next page. */
  list(options: { limit?: number; after?: string } = {}): Promise<{ saves: SaveMeta[]; next_after: string | null }> {
    const q = new URLSearchParams();
    if (options.limit !== undefined) q.set('limit', String(options.limit));
    if (options.after !== undefined) q.set('after', options.after);
    const qs = q.toString();
    return this.auth.request('GET', `${SAVES}/${encodeURIComponent(this.userId())}${qs ? `?${qs}` : ''}`);
  }

  /** A slot's kept versions, newest first; pass `next_before` as `before` for the next page. */
  history(slot: string, options: { limit?: number; before?: number } = {}): Promise<{ versions: SaveMeta[]; next_before: number | null }> {
    const q = new URLSearchParams();
    if (options.limit !== undefined) q.set('limit', String(options.limit));
    if (options.before !== undefined) q.set('before', String(options.before));
    const qs = q.toString();
    return this.auth.request('GET', `${this.path(slot)}/history${qs ? `?${qs}` : ''}`);
  }

  /**
   * Deletes a slot and all its versions, if it is still at `expectedVersion` (default: the
   * version last seen); otherwise rejects with 409 SAVES_VERSION_CONFLICT.
   */
  async delete(slot: string, expectedVersion?: number): Promise<void> {
    const expected = this.expectedOrKnown(slot, expectedVersion);
    await this.auth.request<void>('DELETE', `${this.path(slot)}?expected_version=${expected}`);
    this.seen.delete(this.key(slot));
  }

  /**
   * Makes `version` current again, as a new version, if the slot is still at `expectedVersion`
   * (default: the version last seen); otherwise rejects with 409 SAVES_VERSION_CONFLICT.
   */
  async restore(slot: string, version: number, expectedVersion?: number): Promise<SaveMeta> {
    const body: Record<string, unknown> = { version, expected_version: this.expectedOrKnown(slot, expectedVersion) };
    if (this.options.deviceId !== undefined) body.device_id = this.options.deviceId;
    const meta = await this.auth.request<SaveMeta>('POST', `${this.path(slot)}/restore`, body);
    this.seen.set(this.key(slot), meta.version);
    return meta;
  }

  private expectedOrKnown(slot: string, expectedVersion: number | undefined): number {
    const v = expectedVersion ?? this.knownVersion(slot);
    if (v === undefined) throw new TypeError(`no version of slot ${slot} seen yet: load it or pass expectedVersion`);
    return v;
  }

  private userId(): string {
    const id = this.options.userId ?? this.auth.user?.id;
    if (id === undefined) throw new ApiError(0, 'AUTH_REQUIRED', 'not signed in');
    return id;
  }

  private key(slot: string): string {
    return `${this.userId()}/${slot}`;
  }

  private path(slot: string): string {
    return `${SAVES}/${encodeURIComponent(this.userId())}/${encodeURIComponent(slot)}`;
  }
}

/** Rejects with ApiError SAVES_CHECKSUM_MISMATCH (status 0) unless `data` is what `meta` describes. */
export async function verifySave(meta: Pick<SaveMeta, 'slot' | 'version' | 'checksum' | 'size'>, data: Uint8Array): Promise<void> {
  const actual = await sha256Checksum(data);
  if (actual !== meta.checksum || data.length !== meta.size) {
    throw new ApiError(
      0,
      'SAVES_CHECKSUM_MISMATCH',
      `save ${meta.slot} v${meta.version} arrived corrupted: expected ${meta.checksum} (${meta.size} bytes), got ${actual} (${data.length} bytes)`,
      { expected: meta.checksum, actual, expected_size: meta.size, actual_size: data.length },
    );
  }
}
