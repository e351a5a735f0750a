import { randomUUID } from 'node:crypto';
import type { Client as MinioClient } from 'minio';
import { AppError } from '../errors.js';

/**
 * Save blobs in S3/MinIO under `<user>/<slot>/<uuid>` in a versioned bucket; metadata in
 * PostgreSQL names the key and the version id. Failures of the store become
 * UNAVAILABLE (503) so clients retry; a version that is gone becomes SAVES_CORRUPTED.
 */
export class BlobStore {
  constructor(
    private readonly client: MinioClient,
    private readonly bucket: string,
  ) {}

  /**
   * A fresh key per write (`<user>/<slot>/<uuid>`): each object then holds one version, where one
   * key per slot would pile up a version per write and slow every PUT as its version list grows.
   * Versioning still protects each object against overwrite and deletion.
   */
  static key(userId: string, slot: string): string {
    return `${userId}/${slot}/${randomUUID()}`;
  }

  async put(key: string, body: Buffer, checksum: string): Promise<string> {
    let r: { versionId?: string | null };
    try {
      r = await this.client.putObject(this.bucket, key, body, body.length, {
        'Content-Type': 'application/octet-stream',
        'Content-Encoding': 'gzip',
        'x-amz-meta-checksum': checksum,
      });
    } catch (err) {
      throw new AppError('UNAVAILABLE', 'save storage is unavailable; retry shortly', undefined, 1, { cause: err });
    }
    if (!r.versionId || r.versionId === 'null') throw new Error(`bucket ${this.bucket} returned no version id: is versioning on?`);
    return r.versionId;
  }

  async get(key: string, versionId: string): Promise<Buffer> {
    try {
      const stream = await this.client.getObject(this.bucket, key, { versionId });
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'NoSuchKey' || code === 'NoSuchVersion') {
        throw new AppError('SAVES_CORRUPTED', `stored save ${key} version ${versionId} is missing from storage`);
      }
      throw new AppError('UNAVAILABLE', 'save storage is unavailable; retry shortly', undefined, 1, { cause: err });
    }
  }

  /** Removes object versions; best effort (an orphan costs storage, never correctness). */
  async remove(objects: { key: string; versionId: string }[]): Promise<void> {
    await Promise.all(objects.map((o) => this.client.removeObject(this.bucket, o.key, { versionId: o.versionId }).catch(() => undefined)));
  }
}
