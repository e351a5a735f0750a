import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip as gunzipCb, gzip as gzipCb } from 'node:zlib';
import { AppError } from '../errors.js';

const gzip = promisify(gzipCb);
const gunzip = promisify(gunzipCb);

/** A save's checksum as stored and reported: `sha256:<hex>` of the uncompressed bytes. */
export function checksumOf(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** What is stored for a save: its gzip and the checksum of the original bytes. */
export async function encodeSave(data: Buffer): Promise<{ stored: Buffer; checksum: string; size: number }> {
  return { stored: await gzip(data, { level: 6 }), checksum: checksumOf(data), size: data.length };
}

/**
 * Undoes encodeSave and verifies the checksum. A blob that does not decompress, or whose bytes
 * do not match, throws SAVES_CORRUPTED: corrupt data is reported, never served.
 */
export async function decodeSave(stored: Buffer, checksum: string, where: string): Promise<Buffer> {
  let data: Buffer;
  try {
    data = await gunzip(stored);
  } catch {
    throw new AppError('SAVES_CORRUPTED', `stored save ${where} is corrupted (does not decompress); it was not served`, {
      checksum_expected: checksum,
    });
  }
  const actual = checksumOf(data);
  if (actual !== checksum) {
    throw new AppError('SAVES_CORRUPTED', `stored save ${where} is corrupted (checksum mismatch); it was not served`, {
      checksum_expected: checksum,
      checksum_actual: actual,
    });
  }
  return data;
}

/**
 * The conflict rule: a write names the version it replaces (`expected`, or null to create only).
 * Returns true when the write may proceed against the slot's `current` version (undefined if the
 * slot does not exist).
 */
export function writeAllowed(current: number | undefined, expected: number | null): boolean {
  return expected === null ? current === undefined : current === expected;
}

/**
 * The quota rule: with `usedBytes` across the user's current saves, of which `replacedBytes` are
 * the slot being replaced, may a save of `newBytes` be written? `slots` counts existing slots.
 */
export function quotaCheck(o: {
  usedBytes: number;
  replacedBytes: number;
  newBytes: number;
  quotaBytes: number;
  slots: number;
  newSlot: boolean;
  maxSlots: number;
}): void {
  if (o.newSlot && o.slots >= o.maxSlots) {
    throw new AppError('SAVES_QUOTA_EXCEEDED', `at most ${o.maxSlots} save slots per user`, { max_slots: o.maxSlots, slots: o.slots });
  }
  const after = o.usedBytes - o.replacedBytes + o.newBytes;
  if (after > o.quotaBytes) {
    throw new AppError('SAVES_QUOTA_EXCEEDED', `this save would bring the user's saves to ${after} bytes; the quota is ${o.quotaBytes}`, {
      quota_bytes: o.quotaBytes,
      used_bytes: o.usedBytes,
    });
  }
}
