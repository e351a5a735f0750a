/**
 * A token bucket: `ratePerS` tokens a second up to `burst`. `take(nowMs)` spends one token and says
 * whether there was one. Time is passed in, so tests drive it.
 */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
    nowMs: number,
  ) {
    this.tokens = burst;
    this.at = nowMs;
  }

  take(nowMs: number): boolean {
    this.refill(nowMs);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Whether the bucket has refilled to `burst`: one made afresh now would be the same. */
  full(nowMs: number): boolean {
    this.refill(nowMs);
    return this.tokens >= this.burst;
  }

  private refill(nowMs: number): void {
    const elapsed = nowMs - this.at;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerS) / 1000);
      this.at = nowMs;
    }
  }
}

/** The budget of lines about what strangers or a broken neighbour send (`LogBudget`): 10, then one a second. */
export const REFUSED_LINES = { perSecond: 1, burst: 10 } as const;

/**
 * What lines of one kind a process may write: a burst, then so many a second (a TokenBucket). The
 * lines left out are counted, and the next one written says how many (`unlogged`), so a flood of
 * strangers costs a few lines a second, not one each, and nothing goes unmentioned.
 */
export class LogBudget {
  private readonly bucket: TokenBucket;
  private skipped = 0;

  constructor(perSecond: number, burst: number, nowMs: number) {
    this.bucket = new TokenBucket(perSecond, burst, nowMs);
  }

  /** `fields` to write (with `unlogged` when lines were left out since the last), or undefined: leave this one out. */
  take<T extends object>(nowMs: number, fields: T): (T & { unlogged?: number }) | undefined {
    if (!this.bucket.take(nowMs)) {
      this.skipped++;
      return undefined;
    }
    const unlogged = this.skipped;
    this.skipped = 0;
    return unlogged > 0 ? { ...fields, unlogged } : fields;
  }
}

/**
 * A {@link TokenBucket} per key (a remote address), made full on the key's first `take`. `prune`
 * forgets the buckets that have refilled (they would be made the same again), so memory follows
 * the keys seen in the last `burst / ratePerS` seconds, not every key ever seen.
 */
export class KeyedTokenBuckets {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
  ) {}

  take(key: string, nowMs: number): boolean {
    let bucket = this.buckets.get(key);
    if (!bucket) {
      bucket = new TokenBucket(this.ratePerS, this.burst, nowMs);
      this.buckets.set(key, bucket);
    }
    return bucket.take(nowMs);
  }

  prune(nowMs: number): void {
    for (const [key, bucket] of this.buckets) if (bucket.full(nowMs)) this.buckets.delete(key);
  }
}

/**
 * The key a remote address is limited by: an IPv4 address as it is (an IPv4-mapped IPv6 address,
 * `::ffff:a.b.c.d`, as its IPv4 address: a dual-stack listener sees IPv4 clients so), and an IPv6
 * address by its first `ipv6PrefixLength` bits, as `prefix/length` (`2001:db8:1:2::/64`): one
 * subscriber or host usually holds a whole /64 and can pick any address in it, so a limit on whole
 * IPv6 addresses limits nothing. A zone (`%eth0`) is dropped. Anything that does not parse is its
 * own key.
 */
export function addressKey(address: string, ipv6PrefixLength: number): string {
  if (!address.includes(':')) return address;
  const groups = ipv6Groups(address.replace(/%.*$/, ''));
  if (!groups) return address;
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (mapped) {
    const [hi, lo] = [groups[6] as number, groups[7] as number];
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  if (ipv6PrefixLength >= 128) return groups.map((g) => g.toString(16)).join(':');
  const kept = groups.map((g, i) => {
    const bits = Math.max(0, Math.min(16, ipv6PrefixLength - 16 * i));
    return bits === 0 ? 0 : g & ((0xffff << (16 - bits)) & 0xffff);
  });
  return `${kept.map((g) => g.toString(16)).join(':')}/${ipv6PrefixLength}`;
}

/** The eight 16-bit groups of an IPv6 address (with `::` and a dotted IPv4 tail), or undefined. */
function ipv6Groups(address: string): number[] | undefined {
  const halves = address.split('::');
  if (halves.length > 2) return undefined;
  const parse = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const pieces = part.split(':');
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i] as string;
      if (i === pieces.length - 1 && p.includes('.')) {
        const v4 = p.split('.').map(Number);
        if (v4.length !== 4 || v4.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) return undefined;
        const [a, b, c, d] = v4 as [number, number, number, number];
        out.push((a << 8) | b, (c << 8) | d);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
        out.push(Number.parseInt(p, 16));
      }
    }
    return out;
  };
  const head = parse(halves[0] as string);
  const tail = halves.length === 2 ? parse(halves[1] as string) : [];
  if (!head || !tail) return undefined;
  if (halves.length === 1) return head.length === 8 ? head : undefined;
  const fill = 8 - head.length - tail.length;
  if (fill < 1) return undefined;
  return [...head, ...new Array<number>(fill).fill(0), ...tail];
}
