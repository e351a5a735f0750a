// Leader election against the real kube-apiserver. The elector's clock is the test's, so a pause
// of the process is a jump of that clock: the real timers go on, the elector sees the time passed.
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LeaderElector } from '../src/runtime/leader.js';
import { dropNamespace, kubeConfig, namespace, until } from './harness.js';

const kc = kubeConfig();
const leases = kc.makeApiClient(k8s.CoordinationV1Api);
let ns: string;
const electors: LeaderElector[] = [];

beforeAll(async () => {
  ns = await namespace(kc, 'leader');
});
afterAll(async () => {
  for (const e of electors) e.stop();
  await dropNamespace(kc, ns);
});

/** A candidate for the Lease `name` (each test its own), renewing every 100 ms. */
function elector(name: string, identity: string, leaseDurationS: number, now: () => Date): LeaderElector {
  const e = new LeaderElector({ kc, namespace: ns, name, identity, leaseDurationS, retryMs: 100, now });
  electors.push(e);
  return e;
}

const lease = (name: string) => leases.readNamespacedLease({ name, namespace: ns });

it('a leader whose lease ran out while it was paused steps down when it resumes, without renewing, though nobody took the lease', async () => {
  let skew = 0;
  // A 5 s lease: it still holds when the test looks, however slow the apiserver's writes were or
  // however long this process was held up before it looked, short of 4.9 s.
  const a = elector('paused', 'replica-a', 5, () => new Date(Date.now() + skew));
  let lost = 0;
  await a.run(() => lost++);
  expect(a.holds()).toBe(true);
  await until('a renewal', async () => ((await lease('paused')).spec?.holderIdentity === 'replica-a' ? true : undefined));
  // Paused for 10 s, past its 5 s lease: another replica may have led and stopped meanwhile, and
  // what this one holds from before the pause is stale.
  skew = 10_000;
  expect(a.holds()).toBe(false);
  await until('a to step down', async () => (lost > 0 ? true : undefined), 5000, 20);
  const after = await lease('paused');
  // It wrote nothing after the pause: its last renewal is from before it.
  const renewed = new Date(after.spec?.renewTime as unknown as string).getTime();
  expect(renewed).toBeLessThan(Date.now() + 1000);
  await new Promise((r) => setTimeout(r, 300));
  expect((await lease('paused')).metadata?.resourceVersion).toBe(after.metadata?.resourceVersion);
  expect(lost).toBe(1);
});

it('a replica takes over a lease whose holder stopped renewing, only once it has run out', async () => {
  const b = elector('takeover', 'replica-b', 2, () => new Date());
  const c = elector('takeover', 'replica-c', 2, () => new Date());
  await b.run(() => undefined);
  b.stop();
  const last = await lease('takeover');
  expect(last.spec?.holderIdentity).toBe('replica-b');
  let leading = false;
  void c
    .run(() => undefined)
    .then(() => {
      leading = true;
    });
  await until('c to lead', async () => (leading ? true : undefined), 10_000, 20);
  const held = await lease('takeover');
  expect(held.spec?.holderIdentity).toBe('replica-c');
  expect(held.spec?.leaseTransitions).toBe((last.spec?.leaseTransitions ?? 0) + 1);
  // Not before b's 2 s lease ran out from its last renewal.
  const time = (t: unknown) => new Date(t as string).getTime();
  expect(time(held.spec?.acquireTime) - time(last.spec?.renewTime)).toBeGreaterThan(2000);
});
