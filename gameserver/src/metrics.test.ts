import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { createMetrics, registerJoinKeysAge, registerOpenSockets } from './metrics.js';

test("the docs name every aether_ metric the shard exports (alerts are written from them): gameserver.md, or sharding.md for a world's", async () => {
  const docs = ['gameserver.md', 'sharding.md'].map((f) => readFileSync(join(import.meta.dirname, '../../docs', f), 'utf8')).join('\n');
  const { registry } = createMetrics();
  registerJoinKeysAge(registry, () => 0);
  registerOpenSockets(registry, { gateway: async () => 0, ops: async () => 0 });
  const names = (await registry.getMetricsAsJSON()).map((m) => m.name).filter((name) => name.startsWith('aether_'));
  expect(names.length).toBeGreaterThan(40);
  // As `name` or, labelled, as `name{label="value"}`.
  const documented = (name: string) => docs.includes(`\`${name}\``) || docs.includes(`\`${name}{`);
  expect(names.filter((name) => !documented(name))).toEqual([]);
});
