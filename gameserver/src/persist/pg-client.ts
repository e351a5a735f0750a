import type pg from 'pg';

/**
 * Checks a client out of `pool` for `work`, and always releases it. A checked-out client has no
 * error listener (the pool's is for idle ones), so a connection that fails while no query runs on
 * it — between two queries of a transaction, the relay awaiting Redis with its transaction open —
 * would be an uncaught 'error' that ends the process. Here it is caught, and the client released
 * broken (the pool ends it); `work` marks it broken too with `broke` (its state unknown).
 */
export async function withClient<T>(pool: pg.Pool, work: (client: pg.PoolClient, broke: (err: Error) => void) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const broke = (err: Error) => {
    broken ??= err;
  };
  client.on('error', broke);
  try {
    return await work(client, broke);
  } finally {
    client.release(broken);
    // A client released broken is being ended; whatever its socket still reports goes nowhere.
    if (broken === undefined) client.removeListener('error', broke);
  }
}
