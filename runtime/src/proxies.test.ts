import { expect, test } from 'vitest';
import { TrustedProxies } from './proxies.js';

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
