import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { dropNamespace, installCrd, kubeConfig, kubectl, namespace, testEnv } from './harness.js';

const env = testEnv();
const kc = kubeConfig(env);
let ns: string;
beforeAll(async () => {
  await installCrd(env);
  ns = await namespace(kc, 'op-crd');
});
afterAll(async () => {
  await dropNamespace(kc, ns);
});

/** `kubectl apply` of one GameWorld; resolves with kubectl's exit code and what it printed. */
function apply(spec: Record<string, unknown>, name = `w${Math.floor(Math.random() * 1e9)}`): Promise<{ code: number; out: string }> {
  const file = join(mkdtempSync(join(tmpdir(), 'aethex-crd-')), 'gw.yaml');
  writeFileSync(
    file,
    stringify({
      apiVersion: 'aethex.dev/v1alpha1',
      kind: 'GameWorld',
      metadata: { name, namespace: ns },
      spec,
    }),
  );
  return new Promise((resolve) =>
    execFile(env.kubectl, ['--kubeconfig', env.kubeconfig, 'apply', '-f', file], (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
    ),
  );
}

const good = { image: 'shard:1', world: { bounds: { minX: 0, minY: 0, maxX: 100, maxY: 100 } } };

it.each([
  [
    'inverted bounds',
    { ...good, world: { bounds: { minX: 10, minY: 0, maxX: -10, maxY: 100 } } },
    /spec\.world\.bounds\.minX.*bounds\.minX must be less than bounds\.maxX/,
  ],
  ['zero columns', { ...good, sharding: { columns: 0, rows: 1 } }, /spec\.sharding\.columns.*should be greater than or equal to 1/],
  [
    'too many shards',
    { ...good, sharding: { columns: 16, rows: 8 } },
    /spec\.sharding.*sharding\.columns × sharding\.rows must be at most 64/,
  ],
  ['an unknown field', { ...good, replicas: 3 }, /unknown field "spec\.replicas"/],
  ['a missing image', { world: good.world }, /spec\.image: Required value/],
  ['a negative aoiRadius', { ...good, world: { ...good.world, aoiRadius: -1 } }, /spec\.world\.aoiRadius/],
  // The shard's own ranges (engine.aoi_radius, engine.max_speed): outside them every shard would exit 2.
  [
    'an aoiRadius below the shard’s 1',
    { ...good, world: { ...good.world, aoiRadius: 0.5 } },
    /spec\.world\.aoiRadius: Invalid value: 0\.5: spec\.world\.aoiRadius in body should be greater than or equal to 1/,
  ],
  [
    'a maxSpeed above the shard’s 10000',
    { ...good, world: { ...good.world, maxSpeed: 20_000 } },
    /spec\.world\.maxSpeed: Invalid value: 20000: spec\.world\.maxSpeed in body should be less than or equal to 10000/,
  ],
])('the API server refuses %s, naming the field', async (_what, spec, message) => {
  const r = await apply(spec);
  expect(r.code).not.toBe(0);
  expect(r.out).toMatch(message);
});

it('accepts the examples', async () => {
  expect((await apply(good)).code).toBe(0);
  // The files themselves, applied as their comments and the docs tell a user to.
  const dir = join(import.meta.dirname, '../../examples');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  expect(files).toEqual(expect.arrayContaining(['gameworld.yaml', 'gameworld-arena.yaml']));
  for (const f of files) {
    const r = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(env.kubectl, ['--kubeconfig', env.kubeconfig, 'apply', '-n', ns, '-f', join(dir, f)], (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
      ),
    );
    expect(r.code, `${f}: ${r.out}`).toBe(0);
    expect(r.out, f).toMatch(/^gameworld\.aethex\.dev\/\S+ created$/m);
  }
});

it.each([
  ['too long for its pods and Service', `w${'x'.repeat(56)}`],
  ['with a dot (no Service name can hold it)', 'my.world'],
  ['starting with a digit (no Service name can)', '1world'],
])('the API server refuses a world name %s, saying why', async (_what, name) => {
  const r = await apply(good, name);
  expect(r.code).not.toBe(0);
  expect(r.out).toMatch(/metadata\.name must be at most 56 characters of lower-case letters, digits and '-', starting with a letter/);
});

it('the API server takes a world name of 56 characters', async () => {
  const r = await apply(good, `w${'x'.repeat(55)}`);
  expect(r.out).toMatch(/created|configured/);
  expect(r.code).toBe(0);
});

it('a world stored before the name rule can still be updated, lose its finalizer and be deleted', async () => {
  // The same CRD under a group of its own (the real one serves the other tests meanwhile): first
  // without the name rule, a world named my.world in it, then with the rule.
  const group = `t${Math.floor(Math.random() * 1e9)}.aethex.test`;
  const crd = parse(readFileSync(join(import.meta.dirname, '../../crds/gameworld.yaml'), 'utf8'));
  crd.metadata.name = `gameworlds.${group}`;
  crd.spec.group = group;
  delete crd.spec.names.shortNames;
  delete crd.spec.names.categories;
  const schema = crd.spec.versions[0].schema.openAPIV3Schema;
  const rules = schema['x-kubernetes-validations'];
  const dir = mkdtempSync(join(tmpdir(), 'aethex-crd-'));
  const file = (name: string, doc: unknown) => {
    const f = join(dir, name);
    writeFileSync(f, stringify(doc));
    return f;
  };
  const world = (name: string) => ({ apiVersion: `${group}/v1alpha1`, kind: 'GameWorld', metadata: { name, namespace: ns }, spec: good });
  const gw = `gameworlds.${group}`;
  try {
    delete schema['x-kubernetes-validations'];
    await kubectl(env, 'apply', '-f', file('old.yaml', crd));
    await kubectl(env, 'wait', '--for=condition=Established', '--timeout=60s', `crd/${gw}`);
    await kubectl(
      env,
      'apply',
      '-f',
      file('w.yaml', { ...world('my.world'), metadata: { ...world('my.world').metadata, finalizers: ['aethex.dev/cleanup'] } }),
    );
    schema['x-kubernetes-validations'] = rules;
    await kubectl(env, 'apply', '-f', file('new.yaml', crd));
    // A new world by such a name is refused; the stored one takes every write.
    const refused = await new Promise<string>((resolve) =>
      execFile(env.kubectl, ['--kubeconfig', env.kubeconfig, 'apply', '-f', file('bad.yaml', world('bad.name'))], (err, stdout, stderr) =>
        resolve(err ? `${stdout}${stderr}` : 'accepted'),
      ),
    );
    expect(refused).toMatch(/metadata\.name must be at most 56 characters/);
    await kubectl(env, 'label', '-n', ns, gw, 'my.world', 'touched=yes');
    await kubectl(env, 'patch', '-n', ns, gw, 'my.world', '--type=merge', '-p', '{"spec":{"instances":2}}');
    await kubectl(env, 'delete', '-n', ns, gw, 'my.world', '--wait=false');
    await kubectl(env, 'patch', '-n', ns, gw, 'my.world', '--type=merge', '-p', '{"metadata":{"finalizers":null}}');
    await kubectl(env, 'wait', '-n', ns, '--for=delete', '--timeout=30s', `${gw}/my.world`);
  } finally {
    await kubectl(env, 'delete', 'crd', gw, '--wait=false').catch(() => undefined);
  }
});
