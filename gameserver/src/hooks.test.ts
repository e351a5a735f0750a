import { expect, test } from 'vitest';
import { RESERVED_RPC_CODES, RpcError, rpcCodeProblem } from './hooks.js';

test('RpcError takes only a code a client may get, and says what is wrong with any other', () => {
  expect(new RpcError('NOT_ENOUGH_GOLD')).toMatchObject({ name: 'RpcError', code: 'NOT_ENOUGH_GOLD', message: 'NOT_ENOUGH_GOLD' });
  expect(new RpcError(`A${'B'.repeat(63)}`).code).toHaveLength(64);
  expect(() => new RpcError('ECONNREFUSED 10.0.0.5:5432 password=hunter2')).toThrow(
    new RangeError('an RpcError code is 1–64 of A–Z 0–9 _ starting with a letter, got "ECONNREFUSED 10.0.0.5:5432 password=hunter2"'),
  );
  expect(() => new RpcError('A'.repeat(65))).toThrow(RangeError);
  expect(() => new RpcError('A'.repeat(200_000))).toThrow(/got "A{80}"…$/);
  // Cut only when longer than shown: 80 characters are shown whole, without an ellipsis.
  expect(() => new RpcError('a'.repeat(80))).toThrow(/got "a{80}"$/);
  expect(() => new RpcError('')).toThrow(/got ""/);
  expect(() => new RpcError('1ABC')).toThrow(RangeError);
  expect(() => new RpcError(7 as unknown as string)).toThrow('an RpcError code is a string, got number');
  for (const code of ['UNKNOWN_METHOD', 'INTERNAL', 'HANDED_OVER', 'NOT_JOINED', 'TIMEOUT', 'BUSY', 'RATE_LIMITED']) {
    expect(RESERVED_RPC_CODES.has(code)).toBe(true);
    expect(() => new RpcError(code)).toThrow(`the RpcError code ${code} is reserved for the shard's own answers`);
  }
  expect(rpcCodeProblem('OUT_OF_STOCK')).toBeUndefined();
});
