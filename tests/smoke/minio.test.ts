import { Client } from 'minio';
import { afterAll, expect, test } from 'vitest';
import { testEnv, uniqueName } from '../env.js';

const env = testEnv();
const endpoint = new URL(env.s3.endpoint);
const s3 = new Client({
  endPoint: endpoint.hostname,
  port: Number(endpoint.port),
  useSSL: endpoint.protocol === 'https:',
  accessKey: env.s3.accessKey,
  secretKey: env.s3.secretKey,
});
const bucket = uniqueName('smoke').toLowerCase();

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

afterAll(async () => {
  const versions: { name: string; versionId?: string | null }[] = [];
  for await (const v of s3.listObjects(bucket, '', true, { IncludeVersion: true })) versions.push(v as never);
  for (const v of versions) await s3.removeObject(bucket, v.name, { versionId: v.versionId ?? undefined });
  await s3.removeBucket(bucket);
});

test('MinIO keeps two versions of one object in a versioned bucket', async () => {
  await s3.makeBucket(bucket);
  await s3.setBucketVersioning(bucket, { Status: 'Enabled' });
  expect(await s3.getBucketVersioning(bucket)).toMatchObject({ Status: 'Enabled' });

  const first = await s3.putObject(bucket, 'save.bin', Buffer.from('version one'));
  const second = await s3.putObject(bucket, 'save.bin', Buffer.from('version two'));
  expect(first.versionId).toBeTruthy();
  expect(second.versionId).not.toBe(first.versionId);

  const listed: { name: string; versionId?: string }[] = [];
  for await (const v of s3.listObjects(bucket, 'save.bin', true, { IncludeVersion: true })) listed.push(v as never);
  expect(listed.map((v) => v.versionId).sort()).toEqual([first.versionId, second.versionId].sort());

  expect(await readAll(await s3.getObject(bucket, 'save.bin'))).toBe('version two');
  expect(await readAll(await s3.getObject(bucket, 'save.bin', { versionId: first.versionId as string }))).toBe('version one');
});
