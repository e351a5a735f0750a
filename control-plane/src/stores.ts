import type { Logger } from '@aethex/runtime';
import { Redis } from 'ioredis';
import { Client as MinioClient } from 'minio';
import pg from 'pg';
import type { ControlPlaneConfig } from './config.js';
import { migrate } from './migrate.js';

/** The control plane's clients of PostgreSQL, Redis and S3. This module alone constructs them. */
export interface Stores {
  pg: pg.Pool;
  redis: Redis;
  /** Present when the saves service runs. */
  s3?: { client: MinioClient; bucket: string };
  /** Key prefix for every Redis key. */
  redisPrefix: string;
  /** Checks every store answers; throws naming the first that does not. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

function s3Client(config: ControlPlaneConfig): MinioClient {
  const url = new URL(config['s3.endpoint']);
  return new MinioClient({
    endPoint: url.hostname,
    port: url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80,
    useSSL: url.protocol === 'https:',
    accessKey: config['s3.access_key'],
    secretKey: config['s3.secret_key'],
    region: config['s3.region'],
  });
}

/** Creates the save bucket with versioning on, or turns versioning on for an existing one. Idempotent. */
export async function ensureBucket(client: MinioClient, bucket: string, region: string): Promise<void> {
  if (!(await client.bucketExists(bucket))) {
    try {
      await client.makeBucket(bucket, region);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'BucketAlreadyOwnedByYou' && code !== 'BucketAlreadyExists') throw err;
    }
  }
  const versioning = await client.getBucketVersioning(bucket).catch(() => undefined);
  if ((versioning as { Status?: string } | undefined)?.Status !== 'Enabled') {
    await client.setBucketVersioning(bucket, { Status: 'Enabled' });
  }
}

/**
 * Connects to every store the configured services need, applies the database migrations and
 * makes sure the save bucket exists with versioning on. Fails with the store's name in the message.
 */
export async function openStores(config: ControlPlaneConfig, log: Logger): Promise<Stores> {
  const schema = config['postgres.schema'];
  const pool = new pg.Pool({
    connectionString: config['postgres.url'],
    max: config['postgres.pool_size'],
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 30_000,
    statement_timeout: 10_000,
    options: `-c search_path=${schema}`,
  });
  pool.on('error', (err) => log.warn({ err: err.message }, 'idle PostgreSQL client failed'));
  const redis = new Redis(config['redis.url'], {
    maxRetriesPerRequest: 1,
    connectTimeout: 5000,
    lazyConnect: true,
    enableOfflineQueue: true,
  });
  redis.on('error', (err) => log.warn({ err: err.message }, 'Redis connection error'));
  let s3: Stores['s3'];
  try {
    await migrate(pool, schema).catch((err) => {
      throw new Error(`PostgreSQL: ${(err as Error).message}`, { cause: err });
    });
    await redis.connect().catch((err) => {
      throw new Error(`Redis: ${(err as Error).message}`, { cause: err });
    });
    if (config.serviceList.includes('saves')) {
      const client = s3Client(config);
      await ensureBucket(client, config['s3.bucket'], config['s3.region']).catch((err) => {
        throw new Error(`S3 bucket ${config['s3.bucket']}: ${(err as Error).message}`, { cause: err });
      });
      s3 = { client, bucket: config['s3.bucket'] };
    }
  } catch (err) {
    await pool.end().catch(() => undefined);
    redis.disconnect();
    throw err;
  }
  return {
    pg: pool,
    redis,
    s3,
    redisPrefix: config['redis.key_prefix'],
    async ping() {
      await pool.query('SELECT 1').catch((err) => {
        throw new Error(`PostgreSQL: ${(err as Error).message}`);
      });
      await redis.ping().catch((err) => {
        throw new Error(`Redis: ${(err as Error).message}`);
      });
      if (s3) {
        const ok = await s3.client.bucketExists(s3.bucket).catch((err) => {
          throw new Error(`S3: ${(err as Error).message}`);
        });
        if (!ok) throw new Error(`S3: bucket ${s3.bucket} is missing`);
      }
    },
    async close() {
      await pool.end().catch(() => undefined);
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
