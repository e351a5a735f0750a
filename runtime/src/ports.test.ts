import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { freePortBlock } from './ports.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

const listen = (port: number) =>
  new Promise<void>((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => {
      servers.push(s);
      resolve();
    });
  });

it('returns a block of consecutive ports that can all be listened on, below the ephemeral range', async () => {
  const base = await freePortBlock(8);
  for (let i = 0; i < 8; i++) await listen(base + i);
  const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]);
  expect(base).toBeGreaterThanOrEqual(10_000);
  expect(base + 8).toBeLessThanOrEqual(low);
  // With that block taken, the next one does not overlap it.
  const next = await freePortBlock(8);
  expect(next + 8 <= base || next >= base + 8).toBe(true);
});

it('refuses a count outside 1–1000', async () => {
  await expect(freePortBlock(0)).rejects.toThrow(/count must be 1–1000, got 0/);
  await expect(freePortBlock(1.5)).rejects.toThrow(/count/);
});
