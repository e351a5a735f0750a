import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

const LOWEST = 10_000;

/** The first port the kernel hands out to outgoing connections (Linux), or 32768. */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > LOWEST ? low : 32_768;
  } catch {
    return 32_768;
  }
}

function canListen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

/**
 * A base port with `count` consecutive ports free on `host`, for servers that are told their port
 * before they start (local shards, test servers). The block lies below the kernel's ephemeral
 * range, so the outgoing connections of a busy machine cannot take a port between this check and
 * the server's bind (ports from `listen(0)` can); the base is random so parallel callers rarely meet.
 */
export async function freePortBlock(count: number, host = '127.0.0.1'): Promise<number> {
  if (!Number.isInteger(count) || count < 1 || count > 1000) throw new RangeError(`count must be 1–1000, got ${count}`);
  const high = ephemeralLow() - count;
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = LOWEST + Math.floor(Math.random() * (high - LOWEST));
    const free = await Promise.all(Array.from({ length: count }, (_, i) => canListen(base + i, host)));
    if (free.every(Boolean)) return base;
  }
  throw new Error(`no ${count} consecutive free ports on ${host} between ${LOWEST} and ${high + count}`);
}

/**
 * Gateway settings of shards run as processes on one machine (the operator's local runtime,
 * `npm run world`): every player, bot and neighbour's link there comes from 127.0.0.1, where the
 * per-address limits meant for the internet would only throttle the world itself (a bot crowd's
 * joins, handoffs, which are new connections). Defaults: a value set explicitly wins.
 */
export const LOOPBACK_SHARD_ENV: Readonly<Record<string, string>> = {
  AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '200000',
  AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '100000',
};
