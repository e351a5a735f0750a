import { isIP } from 'node:net';
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { PROXY_V1_MAX_BYTES, readProxyHeader, TrustedProxies } from './proxies.js';

test('trusts the listed addresses and blocks, IPv4-mapped IPv6 peers as their IPv4 address; nobody when the list is empty', () => {
  const p = TrustedProxies.parse('127.0.0.1, 10.0.0.0/8, fd00::/8');
  expect(p.size).toBe(3);
  for (const a of ['127.0.0.1', '::ffff:127.0.0.1', '10.200.3.4', '::ffff:10.0.0.9', 'fd12::1']) expect(p.trusts(a), a).toBe(true);
  for (const a of ['127.0.0.2', '11.0.0.1', 'fe80::1', '::1', 'unknown', undefined]) expect(p.trusts(a), String(a)).toBe(false);
  expect(TrustedProxies.parse('').trusts('127.0.0.1')).toBe(false);
  expect(TrustedProxies.parse(' ').size).toBe(0);
});

test('the client behind a trusted proxy is the right-most forwarded address that is no trusted proxy', () => {
  const p = TrustedProxies.parse('10.0.0.0/8');
  expect(p.forwardedClient('203.0.113.7')).toBe('203.0.113.7');
  // What is left of the client's address is the client's to write: not read.
  expect(p.forwardedClient('1.1.1.1, 203.0.113.7')).toBe('203.0.113.7');
  expect(p.forwardedClient('1.1.1.1, 203.0.113.7, 10.1.1.1,10.2.2.2')).toBe('203.0.113.7');
  // Node joins a header sent twice with ", ".
  expect(p.forwardedClient(['1.1.1.1', '203.0.113.7'])).toBe('203.0.113.7');
  // Ports and brackets, as some proxies write them.
  expect(p.forwardedClient('203.0.113.7:51234')).toBe('203.0.113.7');
  expect(p.forwardedClient('[2001:db8::7]:443')).toBe('2001:db8::7');
  expect(p.forwardedClient('[2001:db8::7]')).toBe('2001:db8::7');
  expect(p.forwardedClient('2001:db8::7')).toBe('2001:db8::7');
  // Every hop a trusted proxy: the furthest one.
  expect(p.forwardedClient('10.9.9.9, 10.1.1.1')).toBe('10.9.9.9');
  // Absent or malformed on the way from the right: none (the proxy's own address counts).
  for (const bad of [undefined, '', ' ', 'unknown', '203.0.113.7, _hidden', '203.0.113.7,', '300.1.1.1', '[10.0.0.1]', '1.2.3.4:99999'])
    expect(p.forwardedClient(bad), String(bad)).toBeUndefined();
  // A malformed entry left of the client's is not read.
  expect(p.forwardedClient('garbage, 203.0.113.7')).toBe('203.0.113.7');
});

test("read from Forwarded (RFC 7239) instead: each element's for=, quoted or not, by the same rule", () => {
  const p = TrustedProxies.parse('10.0.0.0/8');
  const client = (value: string | string[] | undefined) => p.forwardedClient(value, 'forwarded');
  expect(client('for=203.0.113.7')).toBe('203.0.113.7');
  expect(client('For=203.0.113.7;proto=https;by=10.0.0.1')).toBe('203.0.113.7');
  expect(client('for="[2001:db8:cafe::17]:4711"')).toBe('2001:db8:cafe::17');
  expect(client('for="203.0.113.7:51234"')).toBe('203.0.113.7');
  // Right to left past the trusted proxies; what is left of the client's is not read, however
  // malformed (an unknown client, an obfuscated one, a quoted comma, not the syntax at all).
  expect(client('for=1.1.1.1, for=203.0.113.7, for=10.1.1.1;proto=http,for=10.2.2.2')).toBe('203.0.113.7');
  expect(client('for=unknown, for="a, b", garbage;;, for=203.0.113.7')).toBe('203.0.113.7');
  // A quote the client leaves open, an escaped one, or a quoted comma: the proxy's element on the right is read.
  expect(client('for="x, for=203.0.113.7')).toBe('203.0.113.7');
  expect(client('for="a\\"b", for=203.0.113.7')).toBe('203.0.113.7');
  expect(client('for="a\\\\", for="[2001:db8::7]:443"')).toBe('2001:db8::7');
  expect(client(['for=1.1.1.1', 'for=203.0.113.7'])).toBe('203.0.113.7');
  expect(client('for=10.9.9.9, for=10.1.1.1')).toBe('10.9.9.9');
  // None on the way from the right: the proxy's own address counts.
  for (const bad of [
    undefined,
    '',
    'for=unknown',
    'for=_hidden',
    'proto=https',
    'for=203.0.113.7, by=10.0.0.1',
    'for=203.0.113.7, for',
    'for="203.0.113.7',
    'for=[2001:db8::7]:443',
    'for=1.2.3.4:99999',
  ])
    expect(client(bad), String(bad)).toBeUndefined();
  // Each header is read only where it is the one named.
  expect(p.forwardedClient('for=203.0.113.7')).toBeUndefined();
  expect(client('203.0.113.7')).toBeUndefined();
});

test('any header, either kind: never a throw; an address or none', () => {
  const p = TrustedProxies.parse('10.0.0.0/8');
  const header = fc.oneof(
    fc.string(),
    fc.array(fc.constantFrom('for=', '"', ',', ';', '\\', '[', ']', ':', '1.2.3.4', '::1', ' ', '_x', 'by=')).map((a) => a.join('')),
  );
  fc.assert(
    fc.property(header, fc.constantFrom('x-forwarded-for' as const, 'forwarded' as const), (value, kind) => {
      const client = p.forwardedClient(value, kind);
      expect(client === undefined || isIP(client) !== 0).toBe(true);
    }),
  );
});

const ascii = (text: string) => new TextEncoder().encode(text);
const concat = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => [...p]));
const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

/** A v2 header as the spec lays it out: command, family (1 INET, 2 INET6, 0 UNSPEC), the address block, then `tlvs`. */
function v2(command: number, family: number, source: number[], destination: number[], tlvs: number[] = []): Uint8Array {
  const block = [...source, ...destination, ...(family === 0 ? [] : [0xc3, 0x50, 0x1f, 0x90]), ...tlvs];
  return Uint8Array.from([...V2_SIGNATURE, 0x20 | command, (family << 4) | 1, block.length >> 8, block.length & 0xff, ...block]);
}

test('PROXY v1 headers: the client address and where the header ends, whatever follows it', () => {
  const request = ascii('GET / HTTP/1.1\r\n');
  const cases: [string, string | undefined][] = [
    ['PROXY TCP4 203.0.113.7 10.0.0.5 51234 7700\r\n', '203.0.113.7'],
    ['PROXY TCP6 2001:db8::7 fd00::5 51234 7700\r\n', '2001:db8::7'],
    ['PROXY UNKNOWN\r\n', undefined],
    ['PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n', undefined],
  ];
  for (const [header, source] of cases) {
    const h = ascii(header);
    expect(readProxyHeader(concat(h, request)), header).toEqual({ state: 'done', length: h.length, source });
    // Every cut short of the CRLF waits for more.
    for (let n = 0; n < h.length; n++) expect(readProxyHeader(h.subarray(0, n)).state, `${header} cut at ${n}`).toBe('more');
  }
  const bad = [
    'PROXY TCP4 203.0.113.7 10.0.0.5 51234\r\n',
    'PROXY TCP4 2001:db8::7 10.0.0.5 51234 7700\r\n',
    'PROXY TCP6 203.0.113.7 fd00::5 51234 7700\r\n',
    'PROXY TCP4 203.0.113.7 10.0.0.5 65536 7700\r\n',
    'PROXY TCP4 203.0.113.7 10.0.0.5 0080 7700\r\n',
    'PROXY UDP4 203.0.113.7 10.0.0.5 51234 7700\r\n',
    'PROXY  TCP4 203.0.113.7 10.0.0.5 51234 7700\r\n',
    'PROXY TCP4 203.0.113.7\t10.0.0.5 51234 7700\r\n',
    'GET / HTTP/1.1\r\n',
    'proxy TCP4 203.0.113.7 10.0.0.5 51234 7700\r\n',
  ];
  for (const header of bad) expect(readProxyHeader(ascii(header)).state, header).toBe('error');
  // The protocol bounds a v1 header at 107 bytes, CRLF included.
  const longest = `PROXY UNKNOWN ${'x'.repeat(PROXY_V1_MAX_BYTES - 16)}\r\n`;
  expect(readProxyHeader(ascii(longest))).toEqual({ state: 'done', length: PROXY_V1_MAX_BYTES, source: undefined });
  expect(readProxyHeader(ascii(`PROXY UNKNOWN ${'x'.repeat(PROXY_V1_MAX_BYTES)}`))).toEqual({
    state: 'error',
    error: `PROXY v1 header has no CRLF within ${PROXY_V1_MAX_BYTES} bytes`,
  });
});

test('PROXY v2 headers: the client address as Node writes it, TLVs skipped, the client bytes after it left alone', () => {
  const after = ascii('GET / HTTP/1.1\r\n');
  const cases: [Uint8Array, string | undefined][] = [
    [v2(1, 1, [203, 0, 113, 7], [10, 0, 0, 5]), '203.0.113.7'],
    // An AWS NLB-style TLV (type 0xEA, length 5) after the addresses.
    [v2(1, 1, [203, 0, 113, 7], [10, 0, 0, 5], [0xea, 0, 5, 1, 2, 3, 4, 5]), '203.0.113.7'],
    [v2(1, 2, [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 7], Array(16).fill(1)), '2001:db8::7'],
    [v2(1, 2, [...Array(10).fill(0), 0xff, 0xff, 203, 0, 113, 7], Array(16).fill(1)), '::ffff:203.0.113.7'],
    [v2(1, 2, [0x20, 0x01, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], Array(16).fill(1)), '2001:0:1::1'],
    [v2(1, 2, [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Array(16).fill(1)), '2001:db8:0:1:1:1:1:1'],
    // A load balancer's health check (LOCAL), or no address given: the proxy's own connection.
    [v2(0, 1, [203, 0, 113, 7], [10, 0, 0, 5]), undefined],
    [v2(1, 0, [], []), undefined],
  ];
  for (const [header, source] of cases) {
    expect(readProxyHeader(concat(header, after))).toEqual({ state: 'done', length: header.length, source });
    for (let n = 0; n < header.length; n++) expect(readProxyHeader(header.subarray(0, n)).state, `cut at ${n}`).toBe('more');
    if (source?.includes(':')) expect(isIP(source)).toBe(6);
  }
  const ok = v2(1, 1, [203, 0, 113, 7], [10, 0, 0, 5]);
  const broken = (at: number, value: number) => ok.map((b, i) => (i === at ? value : b));
  expect(readProxyHeader(broken(12, 0x11))).toEqual({ state: 'error', error: 'PROXY v2 header has version 1, not 2' });
  expect(readProxyHeader(broken(12, 0x22))).toEqual({ state: 'error', error: 'PROXY v2 header has command 2, not LOCAL (0) or PROXY (1)' });
  expect(readProxyHeader(broken(13, 0x41)).state).toBe('error');
  expect(readProxyHeader(broken(13, 0x12))).toEqual({ state: 'error', error: "PROXY v2 header's transport is 2, not STREAM (1)" });
  // An address block shorter than its family's addresses.
  expect(readProxyHeader(broken(15, 11))).toEqual({
    state: 'error',
    error: "PROXY v2 header's address block is 11 bytes, under the 12 its family needs",
  });
});

test('PROXY headers, any bytes: never a throw; a header found ends inside what was read; a prefix of a header waits', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (bytes, signed) => {
      // Half the inputs start like a header, so the parser gets past the signatures.
      const buf = signed
        ? concat(bytes[0] === undefined || bytes[0] < 128 ? Uint8Array.from(V2_SIGNATURE) : ascii('PROXY '), bytes)
        : bytes;
      const r = readProxyHeader(buf);
      if (r.state === 'done') {
        expect(r.length).toBeLessThanOrEqual(buf.length);
        if (r.source !== undefined) expect(isIP(r.source)).not.toBe(0);
        // The same header with anything after it reads the same.
        expect(readProxyHeader(concat(buf.subarray(0, r.length), bytes))).toEqual(r);
      }
      if (r.state === 'more') expect(buf.length).toBeLessThan(16 + 65_535);
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(
      fc.oneof(
        fc.tuple(fc.ipV4(), fc.ipV4()).map(([s, d]) => ({ header: ascii(`PROXY TCP4 ${s} ${d} 1 2\r\n`), source: s })),
        fc.tuple(fc.ipV6(), fc.ipV6()).map(([s, d]) => ({ header: ascii(`PROXY TCP6 ${s} ${d} 1 2\r\n`), source: s })),
        fc
          // Groups often zero (runs to compress) or ffff (mapped addresses).
          .tuple(
            fc.array(fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 }),
            fc.uint8Array({ maxLength: 40 }),
          )
          .map(([groups, tlv]) => {
            const a = groups.flatMap((g) => [g >> 8, g & 0xff]);
            return { header: v2(1, 2, a, Array(16).fill(0), [...tlv]), source: a };
          }),
      ),
      fc.uint8Array({ maxLength: 64 }),
      ({ header, source }, after) => {
        for (let n = 0; n < header.length; n++) expect(readProxyHeader(header.subarray(0, n)).state).toBe('more');
        const r = readProxyHeader(concat(header, after));
        expect(r.state === 'done' && r.length).toBe(header.length);
        const got = r.state === 'done' ? r.source : undefined;
        // v1 gives the text as written; v2's 16 bytes as Node writes a peer's address (RFC 5952,
        // as the URL parser canonicalizes it; an IPv4-mapped one dotted).
        if (typeof source === 'string') expect(got).toBe(source);
        else {
          const groups = Array.from({ length: 8 }, (_, i) =>
            (((source[2 * i] as number) << 8) | (source[2 * i + 1] as number)).toString(16),
          );
          const mapped = groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff';
          expect(got).toBe(mapped ? `::ffff:${source.slice(12).join('.')}` : new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1));
        }
      },
    ),
    { numRuns: 1000 },
  );
});
