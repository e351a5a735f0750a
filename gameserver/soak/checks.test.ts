import { describe, expect, test } from 'vitest';
import { evaluate, type FaultRecord, type SoakRecord } from './checks.js';
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

  test('custody copies left when idle fail', () => {
    const r = healthy();
    r.custody.final[A] = 2;
    expect(failing(r)).toEqual(['custody copies held when idle (aether_handoff_custody, all shards)']);
  });
});
