import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { freePortBlock } from '@aethex/runtime';
import { Client as MinioClient } from 'minio';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, dropSchema, planeVars, register, spawnPlane, testEnv, writeKeysFile } from './harness.js';

// The issue's fault test: many writers race on a few slots while the API process and MinIO are
// killed with SIGKILL at random. Afterwards every acknowledged write must be readable with its
// checksum, each version must have exactly one winner, the losers must have got 409, and a
// corrupted stored object must be reported, never served.

const USERS = 20;
const WRITERS_PER_USER = 2;
const ATTEMPTS_PER_WRITER = 500;
const SLOT = 'main';
/** Versions kept per slot: the most the service allows, so every version written stays readable. */
const HISTORY_LIMIT = 1000;
/** Payload sizes (bytes, incompressible): a few hundred bytes to a few KB. */
const PAYLOAD_MIN = 300;
const PAYLOAD_MAX = 4000;
/** Chaos: a kill every CHAOS_GAP_MS, the victim down for CHAOS_DOWN_MS, at least CHAOS_MIN_KILLS of each kind. */
const CHAOS_GAP_MS: [number, number] = [1000, 4000];
const CHAOS_DOWN_MS: [number, number] = [200, 1500];
const CHAOS_MIN_KILLS = 3;
/** A client request that takes longer than this counts as an unknown outcome. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Parallel reads while verifying. */
const VERIFY_CONCURRENCY = 8;
/**
 * Every attempt costs at least one MinIO PUT. Measured on 2 shared cores (load 7): 20 × 2 × 500
 * took 361 s (319 s of writes, 67 kills). The bound below leaves room for a slower machine.
 */
const TEST_TIMEOUT_MS = 120_000 + USERS * WRITERS_PER_USER * ATTEMPTS_PER_WRITER * 100;

const env = testEnv();
const MINIO_USER = 'faults-test';
const MINIO_PASSWORD = 'faults-test-secret';

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const between = ([lo, hi]: [number, number]) => randomInt(lo, hi + 1);

/** Sends SIGKILL to a child we started and waits until it is gone. */
async function killHard(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

/** A MinIO server of this test alone (4 drives for versioning), so killing it disturbs no other test. */
class PrivateMinio {
  proc?: ChildProcess;
  private log = '';
  readonly dirs: string[];

  constructor(
    readonly root: string,
    readonly port: number,
    readonly consolePort: number,
  ) {
    this.dirs = [1, 2, 3, 4].map((i) => join(root, `d${i}`));
    for (const d of this.dirs) mkdirSync(d, { recursive: true });
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  client(): MinioClient {
    return new MinioClient({ endPoint: '127.0.0.1', port: this.port, useSSL: false, accessKey: MINIO_USER, secretKey: MINIO_PASSWORD });
  }

  /** Starts MinIO on the same port and drives as before; resolves once the cluster has write quorum. */
  async start(): Promise<void> {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const proc = spawn(
        env.minioBin,
        [
          'server',
          '--quiet',
          '--address',
          `127.0.0.1:${this.port}`,
          '--console-address',
          `127.0.0.1:${this.consolePort}`,
          join(this.root, 'd{1...4}'),
        ],
        {
          env: {
            ...process.env,
            MINIO_ROOT_USER: MINIO_USER,
            MINIO_ROOT_PASSWORD: MINIO_PASSWORD,
            MINIO_CI_CD: '1',
            MINIO_BROWSER: 'off',
            MINIO_UPDATE: 'off',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      const keep = (d: Buffer) => {
        this.log = (this.log + d.toString()).slice(-20_000);
      };
      proc.stdout?.on('data', keep);
      proc.stderr?.on('data', keep);
      this.proc = proc;
      while (Date.now() < deadline && proc.exitCode === null && proc.signalCode === null) {
        const ok = await fetch(`${this.endpoint}/minio/health/cluster`, { signal: AbortSignal.timeout(1000) })
          .then((r) => r.status === 200)
          .catch(() => false);
        if (ok) return;
        await sleep(100);
      }
      await killHard(proc);
      await sleep(200);
    }
    throw new Error(`private MinIO did not start:\n${this.log}`);
  }

  async kill(): Promise<void> {
    await killHard(this.proc);
  }
}

/** The control plane as a child process on a fixed port, so clients find it again after a restart. */
class ApiProcess {
  child?: ChildProcess;
  output: () => string = () => '';
  starts = 0;

  constructor(
    readonly vars: Record<string, string>,
    readonly url: string,
  ) {}

  /** Starts the process, retrying while it refuses to (it needs MinIO up to ensure the bucket). */
  async start(): Promise<void> {
    const deadline = Date.now() + 90_000;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const p = await spawnPlane(this.vars);
        this.child = p.child;
        this.output = p.output;
        this.starts++;
        return;
      } catch (err) {
        last = err;
        await sleep(250);
      }
    }
    throw new Error(`control plane did not come back: ${(last as Error)?.message}`);
  }

  async kill(): Promise<void> {
    await killHard(this.child);
  }
}

interface User {
  index: number;
  id: string;
  token: string;
}

interface Ack {
  user: number;
  writer: string;
  version: number;
  checksum: string;
}

interface Conflict {
  user: number;
  writer: string;
  expected: number | null;
  current: { version: number; checksum: string };
}

/** A response as `call` gives it (its body typed loosely there), or status 0 with what went wrong. */
type Reply = Omit<Awaited<ReturnType<typeof call>>, 'headers'> & { error?: string };

let minio: PrivateMinio;
let api: ApiProcess;
let vars: Record<string, string>;
let users: User[] = [];
const temps: string[] = [];

// What the writers saw, for the checks that follow the chaos.
const acks: Ack[] = [];
const conflicts: Conflict[] = [];
const attempted = new Set<string>(); // checksums of every payload any writer sent
const unknown = new Map<string, number>(); // unknown outcomes of writes, by what the client saw
const violations: string[] = [];
const kills = { api: 0, minio: 0 };
const restartMs: { api: number[]; minio: number[] } = { api: [], minio: [] };
let unknownReads = 0;
/** Set when the writers must give up: the chaos failed to bring a server back, or the test is over. */
let halt: Error | undefined;

/** A call that never throws: a network error or a timeout is status 0. */
async function request(method: string, path: string, o: { token?: string; body?: unknown } = {}): Promise<Reply> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Reply>((resolve) => {
    timer = setTimeout(() => resolve({ status: 0, body: null, error: 'timeout' }), REQUEST_TIMEOUT_MS);
  });
  try {
    return await Promise.race([
      call(api.url, method, path, o).catch(
        (err: NodeJS.ErrnoException): Reply => ({ status: 0, body: null, error: err.code ?? err.message }),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const backoff = (tries: number) => sleep(Math.min(50 * 2 ** tries, 800) + randomInt(50));
const savePath = (u: User, query = '') => `/api/v1/saves/${u.id}/${SLOT}${query}`;

/** The slot's current version (null: no save yet), waiting out outages. Checks what it is served. */
async function readCurrent(u: User): Promise<number | null> {
  for (let tries = 0; ; tries++) {
    if (halt) throw halt;
    const r = await request('GET', savePath(u), { token: u.token });
    if (r.status === 200) {
      const got = sha256(Buffer.from(r.body.data, 'base64'));
      if (got !== r.body.meta.checksum) violations.push(`user ${u.index}: current v${r.body.meta.version} served with ${got}`);
      return r.body.meta.version;
    }
    if (r.status === 404 && r.body?.error?.code === 'SAVES_NOT_FOUND') return null;
    if (r.status !== 0 && r.status !== 503) throw new Error(`user ${u.index}: GET current: ${r.status} ${JSON.stringify(r.body)}`);
    unknownReads++;
    await backoff(tries);
  }
}

/** One writer: ATTEMPTS_PER_WRITER unique payloads, each written against the version it believes current. */
async function writer(u: User, w: number): Promise<void> {
  const name = `u${u.index}w${w}`;
  let belief: number | null | undefined; // undefined: not known, read it first
  let lastAck = 0;
  for (let a = 0; a < ATTEMPTS_PER_WRITER; a++) {
    const payload = Buffer.concat([Buffer.from(`${name} attempt ${a} `), randomBytes(randomInt(PAYLOAD_MIN, PAYLOAD_MAX + 1))]);
    const checksum = sha256(payload);
    attempted.add(checksum);
    const data = payload.toString('base64');
    for (let tries = 0; ; tries++) {
      if (halt) throw halt;
      if (belief === undefined) belief = await readCurrent(u);
      const expected = belief;
      const r = await request('PUT', savePath(u), {
        token: u.token,
        body: { data, expected_version: expected, checksum, device_id: name },
      });
      if (r.status === 200) {
        const m = r.body;
        if (m.checksum !== checksum || m.size !== payload.length)
          violations.push(`${name}: ack of v${m.version} has ${m.checksum}/${m.size}`);
        if (m.version !== (expected ?? 0) + 1) violations.push(`${name}: wrote over v${expected} and got v${m.version}`);
        if (m.version <= lastAck) violations.push(`${name}: ack v${m.version} after v${lastAck}`);
        lastAck = m.version;
        acks.push({ user: u.index, writer: name, version: m.version, checksum: m.checksum });
        belief = m.version;
        break;
      }
      if (r.status === 409) {
        const cur = r.body?.error?.data?.current;
        if (r.body?.error?.code !== 'SAVES_VERSION_CONFLICT' || typeof cur?.version !== 'number' || typeof cur?.checksum !== 'string') {
          violations.push(`${name}: 409 without data.current: ${JSON.stringify(r.body)}`);
          belief = undefined;
        } else {
          if (cur.version === expected) violations.push(`${name}: 409 for expected v${expected}, yet current is v${cur.version}`);
          conflicts.push({ user: u.index, writer: name, expected, current: { version: cur.version, checksum: cur.checksum } });
          belief = cur.version;
        }
        break;
      }
      if (r.status === 0 || r.status >= 500) {
        // Not acknowledged, maybe committed: find out where the slot is and try again.
        const kind = r.status === 0 ? `network ${r.error}` : `${r.status} ${r.body?.error?.code}`;
        unknown.set(kind, (unknown.get(kind) ?? 0) + 1);
        belief = undefined;
        await backoff(tries);
        continue;
      }
      throw new Error(`${name}: PUT: ${r.status} ${JSON.stringify(r.body)}`);
    }
  }
}

/** Kills the API or MinIO at random intervals, each time bringing it back, until `done()`. */
async function chaos(done: () => boolean): Promise<void> {
  const pause = async (ms: number) => {
    const until = Date.now() + ms;
    while (!done() && Date.now() < until) await sleep(Math.min(100, until - Date.now()));
  };
  while (!done()) {
    await pause(between(CHAOS_GAP_MS));
    if (done()) break;
    // Random, but never let one kind fall two kills behind the other.
    const target = kills.api - kills.minio >= 2 ? 'minio' : kills.minio - kills.api >= 2 ? 'api' : Math.random() < 0.5 ? 'api' : 'minio';
    if (target === 'api') {
      await api.kill();
      kills.api++;
      await sleep(between(CHAOS_DOWN_MS));
      const t = performance.now();
      await api.start();
      restartMs.api.push(performance.now() - t);
    } else {
      await minio.kill();
      kills.minio++;
      await sleep(between(CHAOS_DOWN_MS));
      const t = performance.now();
      await minio.start();
      restartMs.minio.push(performance.now() - t);
    }
  }
}

/** Runs `fn` over `items`, `n` at a time. */
async function eachLimited<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

/** A read after the chaos: both servers are up, so only a brief 503 (a stale socket to the old MinIO) is forgiven. */
async function settled(method: string, path: string, token: string): Promise<Reply> {
  for (let tries = 0; ; tries++) {
    const r = await request(method, path, { token });
    if ((r.status !== 0 && r.status !== 503) || tries >= 5) return r;
    await backoff(tries);
  }
}

/** Every kept version of a user's slot, newest first. */
async function history(u: User): Promise<{ version: number; checksum: string }[]> {
  const out: { version: number; checksum: string }[] = [];
  let before: number | null | undefined;
  do {
    const r = await settled('GET', savePath(u, `/history?limit=100${before ? `&before=${before}` : ''}`), u.token);
    expect(r.status).toBe(200);
    out.push(...r.body.versions);
    before = r.body.next_before;
  } while (before);
  return out;
}

async function metric(name: string): Promise<number> {
  const text = (await call(api.url, 'GET', '/metrics')).body as string;
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
}

beforeAll(async () => {
  const root = mkdtempSync(join(tmpdir(), 'aethex-saves-faults-'));
  temps.push(root);
  const ports = await freePortBlock(3);
  minio = new PrivateMinio(root, ports, ports + 1);
  await minio.start();
  const keysFile = await writeKeysFile();
  temps.push(dirname(keysFile));
  const port = ports + 2;
  vars = planeVars(env, keysFile, {
    AETHEX_S3_ENDPOINT: minio.endpoint,
    AETHEX_S3_ACCESS_KEY: MINIO_USER,
    AETHEX_S3_SECRET_KEY: MINIO_PASSWORD,
    AETHEX_HTTP_LISTEN: `127.0.0.1:${port}`,
    AETHEX_SAVES_HISTORY_LIMIT: String(HISTORY_LIMIT),
    AETHEX_AUTH_ACCESS_TTL_S: '3600', // the tokens of beforeAll last the whole test
    AETHEX_AUTH_SIGNUP_ADDRESS_BUDGET: '10000',
    AETHEX_AUTH_REFRESH_ADDRESS_BUDGET: '100000',
  });
  api = new ApiProcess(vars, `http://127.0.0.1:${port}`);
  await api.start();
  users = await Promise.all(
    Array.from({ length: USERS }, async (_, index) => {
      const r = await register(api.url, `faults-${index}@example.com`);
      return { index, id: r.id, token: r.access };
    }),
  );
});

afterAll(async () => {
  halt ??= new Error('the test is over');
  await api?.kill();
  await minio?.kill();
  for (const d of temps) rmSync(d, { recursive: true, force: true });
  if (vars) await dropSchema(env, vars.AETHEX_POSTGRES_SCHEMA as string);
});

describe('saves under faults', () => {
  it(
    `keeps every acknowledged write of ${USERS} users × ${WRITERS_PER_USER} writers × ${ATTEMPTS_PER_WRITER} attempts while the API and MinIO are killed`,
    async () => {
      const t0 = performance.now();
      let finished = false;
      // One writer failing stops them all (halt), rather than letting the rest run on for minutes.
      const writers = Promise.allSettled(
        users.flatMap((u) =>
          Array.from({ length: WRITERS_PER_USER }, (_, w) =>
            writer(u, w).catch((err: Error) => {
              halt ??= err;
              throw err;
            }),
          ),
        ),
      );
      const chaosDone = chaos(() => finished).catch((err: Error) => {
        halt = err;
      });
      const results = await writers.finally(() => {
        finished = true;
      });
      await chaosDone;
      if (halt) throw halt;
      const writeMs = performance.now() - t0;
      for (const r of results) if (r.status === 'rejected') throw r.reason;

      // Both are up again (chaos restarts what it kills); wait until the API sees every store.
      for (let tries = 0; (await request('GET', '/readyz')).status !== 200; tries++) {
        if (tries > 50) throw new Error(`control plane not ready after the chaos:\n${api.output().slice(-5000)}`);
        await sleep(200);
      }

      const t1 = performance.now();
      const checked = { versions: 0, committedUnacked: 0 };
      const byUser = new Map<number, Map<number, Ack>>();
      for (const a of acks) {
        const m = byUser.get(a.user) ?? new Map<number, Ack>();
        const prior = m.get(a.version);
        // (b) exactly one winner per version
        if (prior) violations.push(`user ${a.user} v${a.version} acknowledged to ${prior.writer} and ${a.writer}`);
        m.set(a.version, a);
        byUser.set(a.user, m);
      }
      for (const u of users) {
        const won = byUser.get(u.index) ?? new Map<number, Ack>();
        const kept = await history(u);
        const current = kept[0]?.version ?? 0;
        expect(current, 'more versions than the history keeps: raise HISTORY_LIMIT or write less').toBeLessThanOrEqual(HISTORY_LIMIT);
        // (b) versions 1..current, each exactly once
        expect(kept.map((v) => v.version)).toEqual(Array.from({ length: current }, (_, i) => current - i));
        // (d) nothing acknowledged is newer than the current version
        expect(current).toBeGreaterThanOrEqual(Math.max(0, ...won.keys()));
        const checksumOf = new Map(kept.map((v) => [v.version, v.checksum]));
        for (const c of conflicts.filter((x) => x.user === u.index)) {
          // (c) a 409's data.current was a committed version, as it is stored
          if (checksumOf.get(c.current.version) !== c.current.checksum)
            violations.push(
              `${c.writer}: 409 named v${c.current.version} ${c.current.checksum}, stored ${checksumOf.get(c.current.version)}`,
            );
        }
        await eachLimited(kept, VERIFY_CONCURRENCY, async (v) => {
          const r = await settled('GET', savePath(u, `?version=${v.version}`), u.token);
          if (r.status !== 200) {
            violations.push(`user ${u.index} v${v.version}: GET ${r.status} ${JSON.stringify(r.body)}`);
            return;
          }
          const served = sha256(Buffer.from(r.body.data, 'base64'));
          const ack = won.get(v.version);
          // (a) readable, with the checksum of the ack and of the bytes sent
          if (served !== r.body.meta.checksum || served !== v.checksum)
            violations.push(`user ${u.index} v${v.version}: served ${served}, meta ${r.body.meta.checksum}, history ${v.checksum}`);
          if (ack && served !== ack.checksum) violations.push(`user ${u.index} v${v.version}: acked ${ack.checksum}, served ${served}`);
          // (d) an unacknowledged version that committed holds a payload some writer sent
          if (!ack) {
            checked.committedUnacked++;
            if (!attempted.has(served)) violations.push(`user ${u.index} v${v.version}: ${served} was never sent`);
          }
          checked.versions++;
        });
        for (const a of won.values()) if (!checksumOf.has(a.version)) violations.push(`user ${u.index}: acked v${a.version} is gone`);
      }
      const verifyMs = performance.now() - t1;

      const unknownTotal = [...unknown.values()].reduce((s, n) => s + n, 0);
      console.log(
        JSON.stringify({
          writeSeconds: Math.round(writeMs / 100) / 10,
          verifySeconds: Math.round(verifyMs / 100) / 10,
          kills,
          meanRestartMs: {
            api: Math.round(restartMs.api.reduce((x, y) => x + y, 0) / (restartMs.api.length || 1)),
            minio: Math.round(restartMs.minio.reduce((x, y) => x + y, 0) / (restartMs.minio.length || 1)),
          },
          apiStarts: api.starts,
          attempts: USERS * WRITERS_PER_USER * ATTEMPTS_PER_WRITER,
          acked: acks.length,
          conflicts: conflicts.length,
          unknownWrites: unknownTotal,
          unknownByKind: Object.fromEntries(unknown),
          unknownReads,
          versionsRead: checked.versions,
          committedUnacked: checked.committedUnacked,
        }),
      );
      expect(violations).toEqual([]);
      // Every attempt ended in an ack or a 409.
      expect(acks.length + conflicts.length).toBe(USERS * WRITERS_PER_USER * ATTEMPTS_PER_WRITER);
      expect(conflicts.length).toBeGreaterThan(0);
      expect(checked.versions).toBe(acks.length + checked.committedUnacked);
      expect(kills.api).toBeGreaterThanOrEqual(CHAOS_MIN_KILLS);
      expect(kills.minio).toBeGreaterThanOrEqual(CHAOS_MIN_KILLS);
      expect(unknownTotal).toBeGreaterThan(0);
    },
    TEST_TIMEOUT_MS,
  );

  it('reports a corrupted stored object as SAVES_CORRUPTED and never serves it', async () => {
    const s3 = minio.client();
    const bucket = vars.AETHEX_S3_BUCKET as string;
    const db = new pg.Client({ connectionString: env.pgUrl });
    await db.connect();
    try {
      // An acknowledged version of a user's slot that is not the newest, so the current one can be checked still to load.
      const pick = (u: User, nth: number): number => {
        const versions = acks.filter((x) => x.user === u.index).map((x) => x.version);
        const older = versions.filter((v) => v < Math.max(...versions)).sort((x, y) => x - y);
        expect(older.length).toBeGreaterThan(nth);
        return older[nth] as number;
      };
      const [a, b] = [users[0], users[1]] as [User, User];
      const before = await metric('aethex_saves_checksum_failures_total');
      const cases = [
        // valid gzip of other bytes: decompresses, the checksum does not match
        { user: a, version: pick(a, 0), stored: gzipSync(Buffer.from('not the save that was written')) },
        // not gzip at all
        { user: b, version: pick(b, 1), stored: randomBytes(512) },
      ];
      for (const c of cases) {
        const good = await settled('GET', savePath(c.user, `?version=${c.version}`), c.user.token);
        expect(good.status).toBe(200);
        const row = await db.query(
          `SELECT object_key FROM ${vars.AETHEX_POSTGRES_SCHEMA}.save_versions WHERE user_id = $1 AND slot = $2 AND version = $3`,
          [c.user.id, SLOT, c.version],
        );
        // A new object version under the same key, and the row pointed at it: stored bytes that differ from what was checksummed.
        const put = await s3.putObject(bucket, row.rows[0].object_key, c.stored, c.stored.length);
        expect(put.versionId).toBeTruthy();
        const updated = await db.query(
          `UPDATE ${vars.AETHEX_POSTGRES_SCHEMA}.save_versions SET object_version = $1 WHERE user_id = $2 AND slot = $3 AND version = $4`,
          [put.versionId, c.user.id, SLOT, c.version],
        );
        expect(updated.rowCount).toBe(1);

        const r = await settled('GET', savePath(c.user, `?version=${c.version}`), c.user.token);
        expect(r.status).toBe(500);
        expect(r.body.error.code).toBe('SAVES_CORRUPTED');
        expect(r.body.data).toBeUndefined();
        const text = JSON.stringify(r.body);
        expect(text).not.toContain(good.body.data);
        expect(text).not.toContain(c.stored.toString('base64'));
        // The slot's current version is untouched.
        const current = await settled('GET', savePath(c.user), c.user.token);
        expect(current.status).toBe(200);
        expect(current.body.meta.version).toBeGreaterThan(c.version);
      }
      expect(await metric('aethex_saves_checksum_failures_total')).toBeGreaterThanOrEqual(before + 2);
      expect(await metric('aethex_saves_checksum_failures_total')).toBeGreaterThanOrEqual(2);
    } finally {
      await db.end();
    }
  });
});
