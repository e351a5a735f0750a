import { describe, expect, test } from 'vitest';
import { ConfigError, enumSetting, intSetting, listenSetting } from './config.js';

describe('intSetting', () => {
  test.each([
    [undefined, 7],
    ['', 7],
    ['  12 ', 12],
    ['1', 1],
    ['100', 100],
  ])('%j gives %d', (raw, want) => {
    expect(intSetting({ K: raw }, 'K', 7, 1, 100)).toBe(want);
  });

  test.each([['0'], ['101'], ['1.5'], ['ten'], ['1e3']])('%j is refused with the key and the range', (raw) => {
    expect(() => intSetting({ AETHEX_X: raw }, 'AETHEX_X', 7, 1, 100)).toThrow(ConfigError);
    expect(() => intSetting({ AETHEX_X: raw }, 'AETHEX_X', 7, 1, 100)).toThrow(/^AETHEX_X: expected an integer from 1 to 100/);
  });
});

describe('enumSetting', () => {
  test('accepts an allowed value and defaults when absent', () => {
    expect(enumSetting({ L: 'debug' }, 'L', 'info', ['info', 'debug'])).toBe('debug');
    expect(enumSetting({}, 'L', 'info', ['info', 'debug'])).toBe('info');
  });
  test('refuses anything else, listing what is allowed', () => {
    expect(() => enumSetting({ L: 'loud' }, 'L', 'info', ['info', 'debug'])).toThrow("L: expected one of info, debug, got 'loud'");
  });
});

describe('listenSetting', () => {
  test.each([
    ['127.0.0.1:7350', { host: '127.0.0.1', port: 7350 }],
    ['localhost:0', { host: 'localhost', port: 0 }],
    ['[::1]:80', { host: '::1', port: 80 }],
  ])('%s', (raw, want) => {
    expect(listenSetting({ A: raw }, 'A', 'x:1')).toEqual(want);
  });
  test('uses the fallback when unset', () => {
    expect(listenSetting({}, 'A', '0.0.0.0:9')).toEqual({ host: '0.0.0.0', port: 9 });
  });
  test.each([['7350'], ['host:'], ['host:70000'], ['a b:1']])('%j is refused', (raw) => {
    expect(() => listenSetting({ A: raw }, 'A', 'x:1')).toThrow(/^A: expected host:port/);
  });
});
