import { hash, verify } from '@node-rs/argon2';

// @node-rs/argon2's Algorithm is an ambient const enum; Argon2id is 2.
const ARGON2ID = 2;

import { AppError } from '../errors.js';

export interface Argon2Params {
  memoryKiB: number;
  iterations: number;
}

/** Parameters of a stored argon2 hash, read from its PHC string; undefined if it is not argon2id. */
export function hashParams(phc: string): Argon2Params | undefined {
  const m = /^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$/.exec(phc);
  return m ? { memoryKiB: Number(m[1]), iterations: Number(m[2]) } : undefined;
}

/** True when a stored hash is weaker than the configured parameters and should be recomputed. */
export function needsRehash(phc: string, wanted: Argon2Params): boolean {
  const p = hashParams(phc);
  return !p || p.memoryKiB < wanted.memoryKiB || p.iterations < wanted.iterations;
}

/**
 * argon2id hashing behind a concurrency cap: at most `concurrency` hashes run at once, at most
 * `queue` wait, and the rest are refused with AUTH_BUSY (503, Retry-After 1) instead of piling up
 * memory. `computed` counts every hash or verification that ran — what reached the hasher.
 */
export class Hasher {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  computed = 0;
  /** A hash of a random password, verified against when the account does not exist. */
  private dummy: Promise<string>;

  constructor(
    readonly params: Argon2Params,
    private readonly concurrency: number,
    private readonly queue: number,
    private readonly onCompute: (op: 'hash' | 'verify') => void = () => undefined,
  ) {
    this.dummy = this.raw(`dummy-${Math.random()}`);
  }

  private raw(password: string): Promise<string> {
    return hash(password, { algorithm: ARGON2ID, memoryCost: this.params.memoryKiB, timeCost: this.params.iterations, parallelism: 1 });
  }

  private async slot<T>(op: 'hash' | 'verify', fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.queue) throw new AppError('AUTH_BUSY', 'too many sign-ins in progress; retry shortly', undefined, 1);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    try {
      this.computed++;
      this.onCompute(op);
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }

  hash(password: string): Promise<string> {
    return this.slot('hash', () => this.raw(password));
  }

  /** Verifies `password` against `phc`, or against a dummy hash when `phc` is undefined (same cost). */
  async verify(phc: string | undefined, password: string): Promise<boolean> {
    const target = phc ?? (await this.dummy);
    return this.slot('verify', async () => {
      try {
        return (await verify(target, password)) && phc !== undefined;
      } catch {
        return false;
      }
    });
  }
}
