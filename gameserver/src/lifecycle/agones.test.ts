import { expect, test } from 'vitest';
import { agonesPort } from './agones.js';

test('AGONES_SDK_GRPC_PORT: absent or empty means no Agones; a port is read; anything else is refused by name', () => {
  expect(agonesPort({})).toBeUndefined();
  expect(agonesPort({ AGONES_SDK_GRPC_PORT: '' })).toBeUndefined();
  expect(agonesPort({ AGONES_SDK_GRPC_PORT: '9357' })).toBe(9357);
  expect(agonesPort({ AGONES_SDK_GRPC_PORT: '65535' })).toBe(65_535);
  for (const bad of ['0', '65536', '-1', '93.5', ' 9357', '0x10', '123456']) {
    expect(() => agonesPort({ AGONES_SDK_GRPC_PORT: bad })).toThrow(`AGONES_SDK_GRPC_PORT: expected a port from 1 to 65535, got "${bad}"`);
  }
});
