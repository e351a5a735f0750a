import { describe, expect, test } from 'vitest';
import { clientFaultOutcomes, evaluate, type FaultRecord, type ShardRun, type SoakRecord } from './checks.js';
import type { ClientEvent, ClientState } from './client-protocol.js';
import type { StreamEvent } from './stores.js';

const A = 'w-0-0';
const B = 'w-0-1';

const live = (p: string, shard: string, entity: number): ClientState => ({
  p,
  shard,
  entity,
  live: true,
  rejoining: false,
  ended: false,
  unacknowledged: 0,
  sinceSnapshotMs: 20,
  longestGapMs: 50,
  x: 0,
  y: 0,
});

let nextId = 1;
const ev = (type: StreamEvent['type'], player: string, at: number, cause = 'player'): StreamEvent => ({
  id: nextId++,
  type,
  player,
  at,
  cause,
});

/** p1 joins A at 1000 with entity 1 and walks to B at 5000: the streams say so; p1 is on B at the end. */
function healthy(): SoakRecord {
  return {
    events: [
      { e: 'joined', p: 'p1', shard: A, entity: 1, at: 1000 },
      { e: 'handoff', p: 'p1', from: A, to: B, entity: 1, gapMs: 30, viaRejoin: false, at: 5000 },
    ],
    finals: [live('p1', B, 1)],
    ownership: { duplicates: [], finalOwners: new Map([[1, [B]]]), rounds: 10 },
    custody: { max: 1, final: { [A]: 0, [B]: 0 } },
    streams: new Map([
      [A, [ev('player_joined', 'p1', 990), ev('player_left', 'p1', 4970, 'handoff')]],
      [B, [ev('player_joined', 'p1', 4980, 'handoff')]],
    ]),
    faults: [],
    runs: [],
    faultsEndedAt: 9000,
    endAt: 10_000,
    snapshotIntervalMs: 5000,
  };
}

const status = (r: SoakRecord) =>
  Object.fromEntries(
    evaluate(r)
      .rows.filter((row) => row.status !== 'info')
      .map((row) => [row.check, row.count]),
  );
const failing = (r: SoakRecord) =>
  evaluate(r)
    .rows.filter((row) => row.status === 'FAIL')
    .map((row) => row.check);

const kill = (shard: string, at: number): FaultRecord => ({ kind: 'kill', shard, at, endAt: at + 2000, killedAt: at });

/**
 * p1 joins A and is handed A → B at 7,800; B is SIGKILLed at 8,000 (its next run ready at 10,000,
 * waiting for its neighbours' copies until 13,000), with `faults` besides; p1 rejoins B at 12,050
 * with a new entity.
 */
function handedIntoKilled(...faults: FaultRecord[]): SoakRecord {
  const r = healthy();
  r.events = [
    { e: 'joined', p: 'p1', shard: A, entity: 1, at: 1000 },
    { e: 'handoff', p: 'p1', from: A, to: B, entity: 1, gapMs: 30, viaRejoin: false, at: 7800 },
    { e: 'dropped', p: 'p1', shard: B, code: 1006, reason: '', acked: 3, at: 8050 },
    { e: 'rejoined', p: 'p1', shard: B, entity: 9, seq: 0, acked: 3, downMs: 1000, attempts: 2, at: 12_050 },
  ];
  r.finals = [live('p1', B, 9)];
  r.ownership.finalOwners = new Map([[9, [B]]]);
  r.faults = [kill(B, 8000), ...faults];
  r.runs = [{ shard: B, cause: 'kill', spawnAt: 9000, startedAt: 9500, readyAt: 10_000 }];
  return r;
}

describe('soak checks', () => {
  test('a healthy record passes every check', () => {
    expect(failing(healthy())).toEqual([]);
    expect(Object.values(status(healthy())).every((n) => n === 0)).toBe(true);
  });

  test('a handoff without its joined event fails, unless the shard was SIGKILLed before appending it', () => {
    const r = healthy();
    r.streams.set(B, []);
    r.finals = [];
    r.events.push({ e: 'quit', p: 'p1', shard: B, entity: 1, at: 6000 });
    const f = evaluate(r);
    expect(f.missingHandoffEvents.map((m) => [m.shard, m.event, m.killedAt])).toEqual([[B, 'player_joined handoff', undefined]]);
    expect(failing(r)).toEqual([
      'handoffs seen by clients without `player_joined handoff` on the shard reached (not explained by a SIGKILL)',
    ]);
    r.faults = [kill(B, 5200)];
    expect(evaluate(r).missingHandoffEvents[0]?.killedAt).toBe(5200);
    expect(failing(r)).toEqual([]);
  });

  test("a handoff on from a shard the client saw late is found from the client's last snapshot before it", () => {
    // p1's client stalls from 4,200 to 5,800: it got A's redirect at 4,200, B resumed it at 4,250
    // and handed it back to A at 4,700; the client applied B's first snapshot at 5,800 and A's at 5,850.
    const r = healthy();
    r.events = [
      { e: 'joined', p: 'p1', shard: A, entity: 1, at: 1000 },
      { e: 'handoff', p: 'p1', from: A, to: B, entity: 1, gapMs: 1600, viaRejoin: false, at: 5800 },
      { e: 'handoff', p: 'p1', from: B, to: A, entity: 1, gapMs: 50, viaRejoin: false, at: 5850 },
    ];
    r.finals = [live('p1', A, 1)];
    r.ownership.finalOwners = new Map([[1, [A]]]);
    r.streams = new Map([
      [A, [ev('player_joined', 'p1', 990), ev('player_left', 'p1', 4200, 'handoff'), ev('player_joined', 'p1', 4720, 'handoff')]],
      [B, [ev('player_joined', 'p1', 4250, 'handoff'), ev('player_left', 'p1', 4700, 'handoff')]],
    ]);
    expect(evaluate(r).missingHandoffEvents).toEqual([]);
    // B's departure before the client could have got A's redirect is not this handoff's.
    r.streams.set(B, [ev('player_joined', 'p1', 4250, 'handoff'), ev('player_left', 'p1', 3000, 'handoff')]);
    expect(evaluate(r).missingHandoffEvents.map((m) => [m.shard, m.event])).toEqual([[B, 'player_left handoff']]);
  });

  test('a departure of a player who did not quit is false; after the quit it is not', () => {
    const r = healthy();
    r.streams.get(B)?.push(ev('player_left', 'p1', 7000));
    r.finals = [];
    expect(evaluate(r).falseDepartures).toHaveLength(1);
    r.events.push({ e: 'quit', p: 'p1', shard: B, entity: 1, at: 6990 });
    expect(evaluate(r).falseDepartures).toEqual([]);
    expect(failing(r)).toEqual([]);
  });

  test('a rejoin set back is explained only by a SIGKILL of the shard rejoined', () => {
    const r = healthy();
    r.events.push(
      { e: 'dropped', p: 'p1', shard: B, code: 1006, reason: '', acked: 90, at: 6000 },
      { e: 'rejoined', p: 'p1', shard: B, entity: 1, seq: 70, acked: 90, downMs: 2000, attempts: 3, at: 8000 },
    );
    expect(evaluate(r).setBacks).toHaveLength(1);
    expect(failing(r)).toEqual(['rejoins set back (state older than acknowledged) not explained by a SIGKILL of that shard']);
    r.faults = [kill(A, 5990)];
    expect(failing(r)).toHaveLength(1);
    r.faults = [kill(B, 5990)];
    expect(failing(r)).toEqual([]);
  });

  test('a rejoin with a new entity, or an entity owned nowhere at the end, is a lost player', () => {
    const r = healthy();
    r.events.push({ e: 'rejoined', p: 'p1', shard: B, entity: 7, seq: 0, acked: 0, downMs: 100, attempts: 1, at: 8000 });
    r.finals = [live('p1', B, 7)];
    r.ownership.finalOwners = new Map([[7, [B]]]);
    expect(evaluate(r).lost.map((l) => l.player)).toEqual(['p1']);
    const s = healthy();
    s.ownership.finalOwners = new Map();
    expect(evaluate(s).lost).toHaveLength(1);
  });

  test('a new entity after a SIGKILL is explained only for a player who joined that shard after its last snapshot', () => {
    const lostAfter = (joinedAt: number) => {
      const r = healthy();
      r.events = [
        { e: 'joined', p: 'p1', shard: B, entity: 1, at: joinedAt },
        { e: 'dropped', p: 'p1', shard: B, code: 1006, reason: '', acked: 3, at: 8050 },
        { e: 'rejoined', p: 'p1', shard: B, entity: 9, seq: 0, acked: 3, downMs: 1000, attempts: 2, at: 9050 },
      ];
      r.finals = [live('p1', B, 9)];
      r.ownership.finalOwners = new Map([[9, [B]]]);
      r.streams = new Map([[B, [ev('player_joined', 'p1', 9040)]]]);
      r.faults = [kill(B, 8000)];
      return evaluate(r).lost;
    };
    expect(lostAfter(7900).map((l) => l.explained !== undefined)).toEqual([true]);
    expect(lostAfter(1000).map((l) => l.explained !== undefined)).toEqual([false]);
  });

  test('a new entity after a SIGKILL right after a handoff in is explained only when the shard holding the copy lost it', () => {
    const C = 'w-0-2';
    // p1 handed A → B at 7800, B killed at 8000 and ready again at 10,000 (it waits for its
    // neighbours' copies until 13,000); p1 rejoins B at 12,050 with a new entity.
    const lostWith = (...faults: FaultRecord[]) => evaluate(handedIntoKilled(...faults)).lost.map((l) => l.explained);
    const pause = (shard: string, at: number, ms: number): FaultRecord => ({ kind: 'pause', shard, at, endAt: at + ms, ms });
    const cut = (a: string, b: string, at: number): FaultRecord => ({ kind: 'link-cut', shard: a, peer: b, at, endAt: at });
    // A (the copy's holder) killed after the handoff and before B stopped waiting; stopped, or cut
    // off from B, while B waited.
    expect(lostWith(kill(A, 9000))).toEqual([
      expect.stringMatching(/^handed over to w-0-1 200 ms before its SIGKILL by w-0-0, which held the copy and was down too \(kill\)/),
    ]);
    expect(lostWith(pause(A, 7900, 5000))).toEqual([expect.stringContaining('down too (pause)')]);
    // A killed after its commit and before the client resumed on B (within the 30 ms gap).
    expect(lostWith(kill(A, 7790))).toEqual([expect.stringContaining('down too (kill)')]);
    expect(lostWith(cut(B, A, 10_500))).toEqual([expect.stringContaining('cut off from it (link-cut)')]);
    // Not: nothing happened to A; or to another shard; a pause of A over before B was back; a cut
    // while B was down (the links were back before B was); anything after B stopped waiting.
    expect(lostWith()).toEqual([undefined]);
    expect(lostWith(kill(C, 9000), cut(A, C, 10_500))).toEqual([undefined]);
    expect(lostWith(pause(A, 7900, 1000))).toEqual([undefined]);
    expect(lostWith(cut(B, A, 8500))).toEqual([undefined]);
    expect(lostWith(pause(A, 13_100, 5000), kill(A, 13_200))).toEqual([undefined]);
    // Nor A killed once its link could have reached B's new run (started at 9,500; the dialler's
    // backoff is at most 2 s): the copy was B's by then, and B takes a late one before its player.
    expect(lostWith(kill(A, 12_001))).toEqual([undefined]);
  });

  test('a rejoin answered with a redirect that brings a new entity is judged as a rejoin: explained when the copy was lost with its holder', () => {
    // As handedIntoKilled, but p1's rejoin of B is redirected to B (the SDK reports a handoff
    // `viaRejoin`, then `rejoined`): A, which held the copy, killed before B's new run took it.
    const redirected = (...faults: FaultRecord[]) => {
      const r = handedIntoKilled(...faults);
      r.events.splice(3, 0, { e: 'handoff', p: 'p1', from: A, to: B, entity: 9, gapMs: 4000, viaRejoin: true, at: 12_050 });
      return evaluate(r).lost.map((l) => [l.why, l.explained !== undefined]);
    };
    expect(redirected(kill(A, 9000))).toEqual([['rejoined w-0-1 with entity 9, had 1', true]]);
    expect(redirected()).toEqual([['rejoined w-0-1 with entity 9, had 1', false]]);
  });

  test("a restored entity's departure at the end of its rejoin window is explained only for a player lost as documented, at a shard restarted after a SIGKILL", () => {
    // p1 handed A → B at 7,800; B killed at 8,000, A (holding the copy) at 9,000: lost as documented.
    // A restarts from a snapshot holding p1 (ready at 11,000); p1 plays on from B with a new entity,
    // and A's restored entity waits for p1 until its rejoin window ends (41,000).
    const departures = (aRun: ShardRun['cause'], killA = true) => {
      const r = handedIntoKilled(...(killA ? [kill(A, 9000)] : []));
      r.runs.push({ shard: A, cause: aRun, spawnAt: 9500, startedAt: 10_000, readyAt: 11_000 });
      r.streams.get(A)?.push(ev('player_left', 'p1', 41_000, 'player'));
      return evaluate(r).falseDepartures.map((d) => d.shard);
    };
    expect(departures('kill')).toEqual([]);
    // Not after a drain (no snapshot older than the handoff is restored), nor for a player who was
    // not lost as documented (A kept its copy: nothing explains the loss).
    expect(departures('drain')).toEqual([A]);
    expect(departures('kill', false)).toEqual([A]);
  });

  test('a handoff into a shard killed before the client resumed there is read from the ownership polls', () => {
    const C = 'w-0-2';
    // p1 on A; A commits p1 to B at ~7,800 (the polls last saw A own it at 7,700); B killed at 8,000
    // before p1's client resumed there; p1 rejoins B at 12,050 with a new entity.
    const lostWith = (history: { shards: string; from: number; to: number }[], ...faults: FaultRecord[]) => {
      const r = healthy();
      r.events = [
        { e: 'joined', p: 'p1', shard: A, entity: 1, at: 1000 },
        { e: 'rejoined', p: 'p1', shard: B, entity: 9, seq: 0, acked: 3, downMs: 4050, attempts: 5, at: 12_050 },
      ];
      r.finals = [live('p1', B, 9)];
      r.ownership.finalOwners = new Map([[9, [B]]]);
      r.faults = [kill(B, 8000), ...faults];
      r.runs = [{ shard: B, cause: 'kill', spawnAt: 9000, startedAt: 9500, readyAt: 10_000 }];
      r.ownerHistory = new Map([[1, history]]);
      return evaluate(r).lost.map((l) => l.explained);
    };
    const onA = { shards: A, from: 1000, to: 7700 };
    expect(lostWith([onA], kill(A, 9000))).toEqual([expect.stringMatching(/^handed over to w-0-1 300 ms before its SIGKILL by w-0-0/)]);
    // One poll saw it on B already.
    expect(lostWith([onA, { shards: B, from: 7900, to: 7900 }], kill(A, 9000))).toEqual([expect.stringContaining('by w-0-0')]);
    // Not: A kept the copy; A last owned it long before; it was on C; A killed after B took the copy.
    expect(lostWith([onA])).toEqual([undefined]);
    expect(
      lostWith(
        [
          { shards: A, from: 1000, to: 4000 },
          { shards: B, from: 4300, to: 7900 },
        ],
        kill(A, 9000),
      ),
    ).toEqual([undefined]);
    expect(lostWith([{ shards: C, from: 1000, to: 7700 }], kill(A, 9000))).toEqual([undefined]);
    expect(lostWith([onA], kill(A, 12_500))).toEqual([undefined]);
  });

  test('an entity handed on to a shard SIGKILLed before the one holding its copy was killed too is explained: both went down', () => {
    const C = 'w-0-2';
    // p1 handed A → B at 5,000 (its client on B); the polls see B hand it on to C at ~7,600; C is
    // killed at 7,900 (its new run starts at 9,500), then B at 8,000; p1 rejoins B with a new entity.
    const lostWith = (cKilledAt: number | undefined) => {
      const r = healthy();
      r.events = [
        { e: 'joined', p: 'p1', shard: A, entity: 1, at: 1000 },
        { e: 'handoff', p: 'p1', from: A, to: B, entity: 1, gapMs: 30, viaRejoin: false, at: 5000 },
        { e: 'dropped', p: 'p1', shard: B, code: 1006, reason: '', acked: 3, at: 8050 },
        { e: 'rejoined', p: 'p1', shard: B, entity: 9, seq: 0, acked: 3, downMs: 3000, attempts: 4, at: 12_050 },
      ];
      r.finals = [live('p1', B, 9)];
      r.ownership.finalOwners = new Map([[9, [B]]]);
      r.faults = [kill(B, 8000), ...(cKilledAt === undefined ? [] : [kill(C, cKilledAt)])];
      r.runs = [
        { shard: B, cause: 'kill', spawnAt: 9000, startedAt: 10_000, readyAt: 11_000 },
        ...(cKilledAt === undefined
          ? []
          : [{ shard: C, cause: 'kill' as const, spawnAt: cKilledAt + 500, startedAt: 9500, readyAt: 10_000 }]),
      ];
      r.ownerHistory = new Map([
        [
          1,
          [
            { shards: B, from: 5000, to: 7500 },
            { shards: C, from: 7700, to: 7800 },
          ],
        ],
      ]);
      return evaluate(r).lost.map((l) => l.explained);
    };
    expect(lostWith(7900)).toEqual([expect.stringMatching(/^handed on by w-0-1, which held the copy, to w-0-2, SIGKILLed 100 ms before/)]);
    // Not: C was not killed; C killed after B (B's copy is not needed: C stores the adoption).
    expect(lostWith(undefined)).toEqual([undefined]);
    expect(lostWith(8100)).toEqual([undefined]);
  });

  test('a shard process that exited outside a fault fails its own check, and its SIGKILL explains the events it had queued', () => {
    const r = healthy();
    // B never appended p1's arrival: it was SIGKILLed (by no fault of the soak's) right after, and
    // its restart restored p1 (a join of the restore's, not the handoff's).
    r.streams.set(B, [ev('player_joined', 'p1', 7000)]);
    r.faults = [{ kind: 'died', shard: B, at: 5100, endAt: 8000, killedAt: 5100, note: 'exited (SIGKILL) outside a fault' }];
    expect(failing(r)).toEqual(['shard processes that exited outside a fault (started again)']);
    expect(evaluate(r).missingHandoffEvents.map((m) => [m.event, m.killedAt])).toEqual([['player_joined handoff', 5100]]);
    expect(evaluate(r).rows.find((row) => row.check === 'faults injected')?.count).toBe(0);
  });

  test('a handoff event lost with a SIGKILL after a pause of its shard is explained: the stopped shard appended nothing', () => {
    const missing = (...faults: FaultRecord[]) => {
      const r = healthy();
      r.streams.set(B, [ev('player_joined', 'p1', 7000)]);
      r.faults = faults;
      return evaluate(r).missingHandoffEvents.map((m) => m.killedAt);
    };
    const pause = (at: number, ms: number): FaultRecord => ({ kind: 'pause', shard: B, at, endAt: at + ms, ms });
    // Killed 5.5 s after the handoff: beyond the 3 s an event waits queued, unless B was stopped 4 s of it.
    expect(missing(kill(B, 10_500))).toEqual([undefined]);
    expect(missing(pause(5010, 4000), kill(B, 10_500))).toEqual([10_500]);
  });

  test('one id held by two players at once fails; one after the other is a reuse', () => {
    const r = healthy();
    const p2: ClientEvent[] = [{ e: 'joined', p: 'p2', shard: A, entity: 1, at: 7000 }];
    r.events.push(...p2);
    r.finals.push(live('p2', A, 1));
    r.streams.get(A)?.push(ev('player_joined', 'p2', 6990));
    expect(evaluate(r).sharedIds).toEqual([{ id: 1, players: expect.arrayContaining(['p1', 'p2']) }]);
    const s = healthy();
    s.events.push({ e: 'quit', p: 'p1', shard: B, entity: 1, at: 6000 }, ...p2);
    s.finals = [live('p2', A, 1)];
    s.ownership.finalOwners = new Map([[1, [A]]]);
    s.streams.get(B)?.push(ev('player_left', 'p1', 6010));
    s.streams.get(A)?.push(ev('player_joined', 'p2', 6990));
    expect(evaluate(s).sharedIds).toEqual([]);
    expect(failing(s)).toEqual([]);
  });

  test("a stream whose last event for a player disagrees with the client's shard at the end fails", () => {
    const r = healthy();
    r.streams.get(A)?.push(ev('player_joined', 'p1', 9000, 'player'));
    expect(evaluate(r).placeMismatches).toEqual([
      { shard: A, player: 'p1', last: 'player_joined player', expected: 'player_left', client: `joined ${A}, handoff ${A}→${B}` },
    ]);
  });

  test('a client that sees anything after it quit fails: its session went on', () => {
    const r = healthy();
    r.events.push(
      { e: 'quit', p: 'p1', shard: B, entity: 1, at: 6000 },
      { e: 'handoff', p: 'p1', from: B, to: A, entity: 1, gapMs: 20, viaRejoin: false, at: 6040 },
    );
    r.finals = [];
    expect(evaluate(r).afterQuit.map((a) => a.player)).toEqual(['p1']);
  });

  test('an event emitted just before the quit, in the same millisecond, is not after it', () => {
    const r = healthy();
    r.events.push(
      { e: 'handoff', p: 'p1', from: B, to: A, entity: 1, gapMs: 20, viaRejoin: false, at: 6000 },
      { e: 'quit', p: 'p1', shard: A, entity: 1, at: 6000 },
    );
    r.finals = [];
    expect(evaluate(r).afterQuit).toEqual([]);
  });

  const clientFault = (kind: FaultRecord['kind'], at: number, endAt: number, players: string[]): FaultRecord => ({
    kind,
    shard: B,
    at,
    endAt,
    players,
    connections: players.length,
  });
  const NOT_BACK = 'players hit by a client-network fault not back within the rejoin window';
  const UNNOTICED = 'players whose connection stalled and whose client never gave it up';

  test('a player whose connection was cut must be back within the rejoin window', () => {
    const r = healthy();
    r.faults = [clientFault('client-cut', 6000, 6001, ['p1'])];
    r.events.push(
      { e: 'dropped', p: 'p1', shard: B, code: 1006, reason: '', acked: 90, at: 6005 },
      { e: 'rejoined', p: 'p1', shard: B, entity: 1, seq: 95, acked: 90, downMs: 300, attempts: 1, at: 6305 },
    );
    expect(evaluate(r).clientFaults).toEqual([
      { player: 'p1', kind: 'client-cut', shard: B, at: 6000, outcome: 'back', droppedAt: 6005, backAt: 6305 },
    ]);
    expect(failing(r)).toEqual([]);
    // Never back: the session is still rejoining at the end (stuck, too).
    const never = healthy();
    never.faults = r.faults;
    never.events.push({ e: 'dropped', p: 'p1', shard: B, code: 1006, reason: '', acked: 90, at: 6005 });
    never.finals = [{ ...live('p1', B, 1), live: false, rejoining: true }];
    expect(evaluate(never).clientFaults.map((c) => c.outcome)).toEqual(['not back']);
    expect(failing(never)).toContain(NOT_BACK);
    // Back after the rejoin window: the shard had let the entity go.
    const late = healthy();
    late.faults = r.faults;
    late.events.push(
      { e: 'dropped', p: 'p1', shard: B, code: 1006, reason: '', acked: 90, at: 6005 },
      { e: 'rejoined', p: 'p1', shard: B, entity: 1, seq: 95, acked: 90, downMs: 31_000, attempts: 40, at: 37_005 },
    );
    expect(evaluate(late).clientFaults.map((c) => c.outcome)).toEqual(['late']);
    expect(failing(late)).toEqual([NOT_BACK]);
  });

  test('a pause the client rides out, a drop that a handoff ends, and a quit are not failures', () => {
    const r = healthy();
    r.events = [
      { e: 'joined', p: 'p1', shard: A, entity: 1, at: 1000 },
      // Held in a pause across the redirect: the rejoin to A finds it handed over, and follows it.
      { e: 'dropped', p: 'p1', shard: A, code: 4000, reason: 'silent', acked: 40, at: 4500 },
      { e: 'handoff', p: 'p1', from: A, to: B, entity: 1, gapMs: 6000, viaRejoin: false, at: 5000 },
    ];
    r.faults = [clientFault('client-pause', 1200, 6200, ['p1', 'p2', 'p3'])];
    r.events.push(
      { e: 'joined', p: 'p2', shard: B, entity: 2, at: 1000 },
      { e: 'joined', p: 'p3', shard: B, entity: 3, at: 1000 },
      { e: 'quit', p: 'p3', shard: B, entity: 3, at: 1500 },
    );
    r.finals.push(live('p2', B, 2));
    r.ownership.finalOwners.set(2, [B]);
    r.streams.get(B)?.push(ev('player_joined', 'p2', 990), ev('player_joined', 'p3', 990), ev('player_left', 'p3', 1510));
    expect(evaluate(r).clientFaults.map((c) => [c.player, c.outcome])).toEqual([
      ['p1', 'back'],
      ['p2', 'rode it out'],
      ['p3', 'quit'],
    ]);
    expect(failing(r)).toEqual([]);
  });

  test('a stalled connection the client never gives up fails; a drop or a session elsewhere since passes', () => {
    const stalled = (events: ClientEvent[]) => {
      const r = healthy();
      r.faults = [clientFault('client-stall', 6000, 26_000, ['p1'])];
      r.events.push(...events);
      return r;
    };
    const silent = stalled([]);
    expect(evaluate(silent).clientFaults.map((c) => c.outcome)).toEqual(['unnoticed']);
    expect(failing(silent)).toEqual([UNNOTICED]);
    const gaveUp = stalled([
      { e: 'dropped', p: 'p1', shard: B, code: 4000, reason: 'no message from the shard for 5200 ms', acked: 90, at: 11_200 },
      { e: 'rejoined', p: 'p1', shard: B, entity: 1, seq: 190, acked: 90, downMs: 200, attempts: 1, at: 11_400 },
    ]);
    expect(evaluate(gaveUp).clientFaults.map((c) => c.outcome)).toEqual(['back']);
    expect(failing(gaveUp)).toEqual([]);
    // A handoff completed on a connection opened before the stall reached it.
    const movedOn = stalled([{ e: 'handoff', p: 'p1', from: B, to: A, entity: 1, gapMs: 40, viaRejoin: false, at: 6100 }]);
    movedOn.finals = [live('p1', A, 1)];
    movedOn.ownership.finalOwners = new Map([[1, [A]]]);
    movedOn.streams.get(B)?.push(ev('player_left', 'p1', 6090, 'handoff'));
    movedOn.streams.get(A)?.push(ev('player_joined', 'p1', 6095, 'handoff'));
    expect(evaluate(movedOn).clientFaults.map((c) => c.outcome)).toEqual(['rode it out']);
    expect(failing(movedOn)).toEqual([]);
  });

  test('a client-network fault never explains a rejoin set back: no state is lost with a connection', () => {
    const r = healthy();
    r.faults = [clientFault('client-pause', 5900, 12_000, ['p1'])];
    r.events.push(
      { e: 'dropped', p: 'p1', shard: B, code: 4000, reason: '', acked: 90, at: 11_000 },
      { e: 'rejoined', p: 'p1', shard: B, entity: 1, seq: 70, acked: 90, downMs: 1000, attempts: 1, at: 12_000 },
    );
    const f = evaluate(r);
    expect(f.setBacks).toEqual([expect.objectContaining({ player: 'p1', clientFault: 'client-pause at 5900' })]);
    expect(f.setBacks[0]?.killedAt).toBeUndefined();
    expect(failing(r)).toEqual(['rejoins set back (state older than acknowledged) not explained by a SIGKILL of that shard']);
  });

  test('outcomes are per player per fault, and faults of other kinds are not client faults', () => {
    const events: ClientEvent[] = [{ e: 'dropped', p: 'p1', shard: B, code: 1006, reason: '', acked: 1, at: 5000 }];
    const faults: FaultRecord[] = [kill(B, 4990), clientFault('client-cut', 9000, 9000, ['p1', 'p2'])];
    expect(clientFaultOutcomes(events, faults, 30_000).map((c) => [c.player, c.outcome])).toEqual([
      ['p1', 'rode it out'],
      ['p2', 'rode it out'],
    ]);
  });

  test('custody copies left when idle fail', () => {
    const r = healthy();
    r.custody.final[A] = 2;
    expect(failing(r)).toEqual(['custody copies held when idle (aether_handoff_custody, all shards)']);
  });
});
