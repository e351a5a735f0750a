import { randomBytes } from 'node:crypto';
import { existsSync, type FSWatcher, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, watch, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { Env, Logger } from '@aethex/runtime';
import type { GameWorld, GameWorldStatus } from '../api/gameworld.js';
import type { Metrics } from '../metrics.js';
import { type DesiredPod, hashOf, LINKS_SECRET_ENV } from '../reconcile/desired.js';
import { type CommandMap, commandFor } from './command.js';
import { developmentKey, SHARD_MARKER, shardProcessEnv } from './env.js';
import { localWorld, parseWorldFile } from './file.js';
import { allocateSlots, slotPorts } from './ports.js';
import { ShardProcess, tail } from './process.js';
import { localShardMap, localStatus, observeProcess, planWorld, restartDelayMs } from './world.js';

export interface LocalRuntimeOptions {
  /** The GameWorld file (absolute). */
  file: string;
  /** `local.directory` (absolute). */
  directory: string;
  basePort: number;
  commands: CommandMap;
  extraEnv: Record<string, string>;
  /** The operator's environment (shards inherit it, see shardProcessEnv). */
  parentEnv: Env;
  log: Logger;
  metrics?: Metrics;
  /** Where shard commands run; default the repository root. */
  cwd?: string;
  /** A pass runs at least this often; default 1000 ms. */
  resyncMs?: number;
}

interface Crash {
  restarts: number;
  consecutive: number;
  notBefore: number;
  last: string;
}

interface WorldState {
  name: string;
  /** The last good spec as a GameWorld (undefined: the file never held a valid one). */
  world: GameWorld | undefined;
  specHash: string | undefined;
  generation: number;
  inFile: boolean;
  errors: string[];
  procs: Map<string, ShardProcess>;
  crashes: Map<string, Crash>;
  written: { shardMap?: string; status?: string };
}

/** A file change is applied once the file reads the same twice this far apart (no half-written files). */
const SETTLE_MS = 200;

const slotKey = (world: string, shard: string) => `${world}/${shard}`;

/**
 * The operator's local runtime: the same reconcile core as on Kubernetes (selectInstances,
 * desiredPods, planPods, computeStatus), with shard processes on this machine instead of pods.
 * A pass runs on every change of the file (watched, debounced), on every process exit or
 * readiness change, and at least every second. See docs/operator.md, "Local runtime".
 */
export class LocalRuntime {
  private readonly worlds = new Map<string, WorldState>();
  private order: string[] = [];
  private slots = new Map<string, number>();
  private appliedText: string | undefined;
  private pendingText: string | undefined;
  /** Why the file as it reads now is not applied: it cannot be read, or its text was rejected. */
  private readProblem: string | undefined;
  private parseProblem: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = 0;
  private resync: NodeJS.Timeout | undefined;
  private watcher: FSWatcher | undefined;
  private stopped = false;
  private devKey: { publicKeyPem: string; privateKeyFile: string } | undefined;
  private readonly warned = new Set<string>();
  private readonly cwd: string;

  constructor(private readonly opts: LocalRuntimeOptions) {
    this.cwd = opts.cwd ?? resolve(import.meta.dirname, '../../..');
  }

  /** Stops shards an earlier run left behind, reads the file and starts reconciling. */
  async start(): Promise<void> {
    mkdirSync(this.opts.directory, { recursive: true });
    await this.stopLeftovers();
    const dir = dirname(this.opts.file);
    const name = basename(this.opts.file);
    try {
      // The directory, not the file: editors save by renaming, which a watch on the file loses.
      this.watcher = watch(dir, (_event, changed) => {
        if (changed === null || changed === name) this.schedule(SETTLE_MS / 2);
      });
      this.watcher.on('error', (err) =>
        this.opts.log.warn({ err: err.message }, 'watching the GameWorld file failed; still reading it every second'),
      );
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message, dir }, 'cannot watch the GameWorld file; reading it every second');
    }
    this.resync = setInterval(() => this.schedule(0), this.opts.resyncMs ?? 1000);
    this.opts.log.info({ file: this.opts.file, directory: this.opts.directory, basePort: this.opts.basePort }, 'local runtime started');
    this.schedule(0);
  }

  /** Stops every shard (SIGTERM, SIGKILL after the grace period) and reconciles no more. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.resync);
    this.watcher?.close();
    const all = [...this.worlds.values()].flatMap((w) => [...w.procs.values()]);
    this.opts.log.info({ shards: all.filter((p) => p.alive).length }, 'stopping every shard');
    await Promise.all(all.map((p) => p.stop(p.launch.graceMs)));
    this.opts.log.info('every shard stopped');
  }

  /** SIGKILLs every shard process group at once (a second Ctrl-C). */
  kill(): void {
    for (const w of this.worlds.values()) for (const p of w.procs.values()) p.signal('SIGKILL');
  }

  /** What /status serves: every world with its status, errors and shard processes. */
  statusJson(): unknown {
    return {
      file: this.opts.file,
      directory: this.opts.directory,
      ...(this.readProblem || this.parseProblem ? { fileError: this.readProblem ?? this.parseProblem } : {}),
      worlds: [...this.worlds.values()].map((w) => ({
        name: w.name,
        generation: w.generation,
        inFile: w.inFile,
        errors: w.errors,
        status: w.world?.status,
        shardMap: join(this.opts.directory, w.name, 'shard-map.json'),
        processes: [...w.procs.values()].map((p) => ({
          name: p.launch.name,
          instance: p.launch.instance,
          shard: p.launch.shard,
          pid: p.pid,
          state: p.exit ? 'exited' : p.stopping ? 'stopping' : p.ready ? 'ready' : 'starting',
          hash: p.launch.hash,
          gateway: `ws://127.0.0.1:${p.launch.gatewayPort}`,
          ops: `http://127.0.0.1:${p.launch.opsPort}`,
          restarts: w.crashes.get(p.launch.name)?.restarts ?? 0,
        })),
      })),
    };
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    const at = Date.now() + ms;
    if (this.timer && this.timerAt <= at) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.runPass();
    }, ms);
  }

  private runPass(): void {
    if (this.stopped) return;
    const end = this.opts.metrics?.reconcileDuration.startTimer();
    try {
      this.pass();
    } catch (err) {
      this.opts.metrics?.errors.inc({ reason: 'local' });
      this.opts.log.error({ err: (err as Error).stack ?? String(err) }, 'local reconcile pass failed');
    } finally {
      end?.();
    }
  }

  // --- the file ----------------------------------------------------------------------------------

  private readFile(): void {
    let text: string;
    try {
      text = readFileSync(this.opts.file, 'utf8');
    } catch (err) {
      const problem = `cannot read ${this.opts.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
      if (problem !== this.readProblem) this.reportFileProblem(problem);
      this.readProblem = problem;
      return;
    }
    this.readProblem = undefined;
    if (text === this.appliedText) {
      this.pendingText = undefined;
      return;
    }
    if (text !== this.pendingText) {
      this.pendingText = text;
      this.schedule(SETTLE_MS);
      return;
    }
    this.pendingText = undefined;
    this.appliedText = text;
    const contents = parseWorldFile(text);
    if (!contents.ok) {
      this.reportFileProblem(contents.error);
      this.parseProblem = contents.error;
      return;
    }
    this.parseProblem = undefined;
    for (const note of contents.ignored) this.opts.log.warn({ file: this.opts.file }, note);
    const names = new Set<string>();
    for (const fw of contents.worlds) {
      names.add(fw.name);
      let w = this.worlds.get(fw.name);
      if (!w) {
        w = {
          name: fw.name,
          world: undefined,
          specHash: undefined,
          generation: 0,
          inFile: true,
          errors: [],
          procs: new Map(),
          crashes: new Map(),
          written: {},
        };
        this.worlds.set(fw.name, w);
      }
      w.inFile = true;
      if (fw.spec) {
        w.errors = [];
        const h = hashOf(fw.spec);
        if (h !== w.specHash) {
          const status = w.world?.status;
          w.generation++;
          w.specHash = h;
          w.world = { ...localWorld(fw.name, fw.spec, w.generation), ...(status ? { status } : {}) };
          this.opts.log.info({ world: fw.name, generation: w.generation }, w.generation === 1 ? 'world added' : 'world changed');
        }
      } else {
        w.errors = fw.errors;
        this.opts.log.error(
          { world: fw.name, errors: fw.errors },
          w.world ? 'invalid GameWorld; the last good spec keeps running' : 'invalid GameWorld; not started',
        );
      }
    }
    for (const w of this.worlds.values()) {
      if (!names.has(w.name) && w.inFile) {
        w.inFile = false;
        this.opts.log.info({ world: w.name }, 'world no longer in the file; stopping its shards');
      }
    }
    this.order = [...names, ...[...this.worlds.keys()].filter((n) => !names.has(n))];
  }

  private reportFileProblem(problem: string): void {
    this.opts.log.error({ file: this.opts.file, error: problem }, 'GameWorld file not applied; every world stays as it was');
  }

  // --- one pass ----------------------------------------------------------------------------------

  private pass(): void {
    this.readFile();
    const now = Date.now();
    const plans = [];
    for (const name of this.order) {
      const w = this.worlds.get(name);
      if (!w) continue;
      if (!w.world) {
        if (!w.inFile) this.forget(w);
        continue;
      }
      const observed = [...w.procs.values()].map((p) =>
        observeProcess({ ...p.launch, ready: p.ready, alive: p.alive, stopping: p.stopping }),
      );
      plans.push({ w, world: w.world, observed, ...planWorld(w.world, observed, w.inFile) });
    }

    this.slots = allocateSlots(
      this.slots,
      plans.flatMap((p) => p.desired.map((d) => slotKey(p.w.name, d.name))),
      [...this.worlds.values()].flatMap((w) => [...w.procs.keys()].map((n) => slotKey(w.name, n))),
    );

    for (const p of plans) {
      const { w, world, plan } = p;
      for (const d of plan.delete) {
        const proc = w.procs.get(d.name);
        if (!proc) continue;
        if (d.reason === 'Dead') {
          w.procs.delete(d.name);
          this.recordCrash(w, proc, now);
          this.schedule(0);
        } else {
          this.opts.log.info({ world: w.name, shard: d.name, pid: proc.pid, reason: d.reason }, 'stopping shard');
          void proc.stop(proc.launch.graceMs);
        }
      }
      let problem: { reason: string; message: string } | undefined;
      const address = (name: string) => {
        const ports = this.ports(w.name, name);
        return ports ? `127.0.0.1:${ports.gateway}` : '';
      };
      // Before any shard starts: a shard reads its region and neighbours from it at start.
      if (w.inFile) this.writeFile(w, 'shardMap', JSON.stringify(localShardMap(world, p.instances, address), null, 2));
      for (const c of plan.create) {
        const crash = w.crashes.get(c.name);
        if (crash && crash.notBefore > now) {
          if (crash.consecutive >= 2) {
            // Stable while it waits (the status changes only when something happens).
            const delayS = restartDelayMs(crash.consecutive) / 1000;
            problem ??= {
              reason: 'CrashLoopBackOff',
              message:
                `shard ${c.name} exited ${crash.consecutive} times in a row (${crash.last}); starting it again ${delayS}s after the last exit`.slice(
                  0,
                  512,
                ),
            };
          }
          this.schedule(crash.notBefore - now);
          continue;
        }
        const ports = this.ports(w.name, c.name);
        if (!ports) {
          problem ??= { reason: 'NoFreePorts', message: `no ports left above local.base_port ${this.opts.basePort} for ${c.name}` };
          continue;
        }
        try {
          this.startShard(w, world, c, ports);
        } catch (err) {
          problem ??= { reason: 'StartFailed', message: `shard ${c.name}: ${(err as Error).message}`.slice(0, 512) };
          this.opts.log.error({ world: w.name, shard: c.name, err: (err as Error).message }, 'cannot start shard');
        }
      }
      const wanted = new Set(p.desired.map((d) => d.name));
      for (const name of w.crashes.keys()) if (!wanted.has(name)) w.crashes.delete(name);

      const status = JSON.parse(JSON.stringify(localStatus(world, p, p.observed, address, new Date(now).toISOString(), problem)));
      this.logTransitions(w.name, world.status, status);
      world.status = status;
      this.writeFile(w, 'status', JSON.stringify({ name: w.name, generation: w.generation, status }, null, 2));
      if (!w.inFile && w.procs.size === 0) this.forget(w);
    }
  }

  private ports(world: string, shard: string): { gateway: number; ops: number } | undefined {
    const slot = this.slots.get(slotKey(world, shard));
    return slot === undefined ? undefined : slotPorts(this.opts.basePort, slot);
  }

  /** A world gone from the file with no process left: its shard map and status go (snapshots and logs stay). */
  private forget(w: WorldState): void {
    this.worlds.delete(w.name);
    this.order = this.order.filter((n) => n !== w.name);
    for (const f of ['shard-map.json', 'status.json']) rmSync(join(this.opts.directory, w.name, f), { force: true });
    this.opts.log.info({ world: w.name }, 'world removed');
  }

  private writeFile(w: WorldState, which: 'shardMap' | 'status', text: string): void {
    if (w.written[which] === text) return;
    const dir = join(this.opts.directory, w.name);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, which === 'shardMap' ? 'shard-map.json' : 'status.json');
    writeFileSync(`${file}.tmp`, `${text}\n`);
    renameSync(`${file}.tmp`, file);
    w.written[which] = text;
  }

  private logTransitions(world: string, before: GameWorldStatus | undefined, after: GameWorldStatus): void {
    const log = this.opts.log;
    const was = new Map((before?.shards ?? []).map((s) => [s.name, s.state]));
    for (const s of after.shards ?? []) {
      if (was.get(s.name) !== s.state) log.debug({ world, shard: s.name, state: s.state, was: was.get(s.name) }, 'shard state');
    }
    const cond = (st: GameWorldStatus | undefined, type: string) => st?.conditions?.find((c) => c.type === type);
    const ready = cond(after, 'Ready');
    if (ready && ready.status !== cond(before, 'Ready')?.status) {
      const fields = { world, reason: ready.reason, message: ready.message, shards: after.shardSummary };
      if (ready.status === 'True') log.info(fields, 'world ready');
      else log.warn(fields, 'world not ready');
    }
    const progressing = cond(after, 'Progressing');
    if (progressing && progressing.status !== cond(before, 'Progressing')?.status) {
      log.info({ world, reason: progressing.reason, message: progressing.message }, 'world progressing');
    }
    const degraded = cond(after, 'Degraded');
    if (
      degraded?.status === 'True' &&
      (cond(before, 'Degraded')?.status !== 'True' || cond(before, 'Degraded')?.reason !== degraded.reason)
    ) {
      log.warn({ world, reason: degraded.reason, message: degraded.message }, 'world degraded');
    }
  }

  // --- processes ---------------------------------------------------------------------------------

  private startShard(w: WorldState, world: GameWorld, d: DesiredPod, ports: { gateway: number; ops: number }): void {
    const spec = d.manifest.spec as {
      terminationGracePeriodSeconds?: number;
      containers: { image: string; env?: { name: string; value?: string; valueFrom?: unknown }[] }[];
    };
    const container = spec.containers[0];
    if (!container) throw new Error('the pod has no container');
    const { argv, known } = commandFor(this.opts.commands, container.image, process.execPath);
    if (!known)
      this.warnOnce(
        `image:${container.image}`,
        { image: container.image, command: argv.join(' ') },
        'no command for this image in local.command; running the default',
      );
    const shardDir = join(this.opts.directory, w.name, d.name);
    const snapshots = join(shardDir, 'snapshots');
    mkdirSync(snapshots, { recursive: true });
    const sharded = (container.env ?? []).some((e) => e.name === LINKS_SECRET_ENV);
    const { env, skipped, devKey } = shardProcessEnv({
      parentEnv: this.opts.parentEnv,
      // The link secret comes from a Secret on Kubernetes; here from the world's directory.
      podEnv: (container.env ?? []).filter((e) => e.name !== LINKS_SECRET_ENV),
      extraEnv: this.opts.extraEnv,
      gatewayPort: ports.gateway,
      opsPort: ports.ops,
      persistenceDirectory: snapshots,
      shardDirectory: shardDir,
      devPublicKey: () => this.developmentKey().publicKeyPem,
    });
    if (sharded) {
      env[LINKS_SECRET_ENV] = this.linksSecret(w.name);
      env.AETHEX_GAMESERVER_SHARD_MAP_FILE = join(this.opts.directory, w.name, 'shard-map.json');
    }
    if (skipped.length > 0)
      this.warnOnce(`skipped:${w.name}`, { world: w.name, variables: skipped }, 'template.env valueFrom needs Kubernetes; skipped locally');
    if (devKey) {
      this.warnOnce(
        'devkey',
        { privateKeyFile: this.developmentKey().privateKeyFile },
        'no join-token key given (AETHEX_GAMESERVER_AUTH_* or local.env): shards trust the development key',
      );
    }
    const proc = new ShardProcess(
      {
        world: w.name,
        name: d.name,
        instance: d.instance,
        shard: d.shard,
        hash: d.hash,
        argv,
        cwd: this.cwd,
        env,
        gatewayPort: ports.gateway,
        opsPort: ports.ops,
        logFile: join(shardDir, 'shard.log'),
        graceMs: (spec.terminationGracePeriodSeconds ?? 30) * 1000,
      },
      (p) => this.onProcessChange(w, p),
    );
    w.procs.set(d.name, proc);
    if (proc.pid !== undefined) writeFileSync(join(shardDir, 'pid'), `${proc.pid}\n`);
    this.opts.log.info(
      {
        world: world.metadata.name,
        shard: d.name,
        pid: proc.pid,
        gateway: `ws://127.0.0.1:${ports.gateway}`,
        ops: `http://127.0.0.1:${ports.ops}`,
        log: proc.launch.logFile,
      },
      'shard started',
    );
  }

  private onProcessChange(w: WorldState, p: ShardProcess): void {
    const fields = { world: w.name, shard: p.launch.name, pid: p.pid };
    if (p.exit) {
      rmSync(join(dirname(p.launch.logFile), 'pid'), { force: true });
      if (p.stopping) {
        if (w.procs.get(p.launch.name) === p) w.procs.delete(p.launch.name);
        this.opts.log.info({ ...fields, code: p.exit.code, signal: p.exit.signal }, 'shard stopped');
      }
    } else if (p.ready) {
      this.opts.log.info({ ...fields, viewer: `http://127.0.0.1:${p.launch.opsPort}/viewer` }, 'shard ready');
    } else if (!p.stopping) {
      this.opts.log.warn(fields, 'shard not ready');
    }
    this.schedule(0);
  }

  private recordCrash(w: WorldState, p: ShardProcess, now: number): void {
    const exit = p.exit;
    const ranMs = (exit?.at ?? now) - p.startedAt;
    const c = w.crashes.get(p.launch.name) ?? { restarts: 0, consecutive: 0, notBefore: 0, last: '' };
    c.restarts++;
    c.consecutive = ranMs >= 30_000 ? 1 : c.consecutive + 1;
    const delay = restartDelayMs(c.consecutive);
    c.notBefore = now + delay;
    c.last = exit?.error
      ? `could not start: ${exit.error}`
      : p.failedLiveness
        ? `failed its liveness check (/healthz) and was killed`
        : exit?.signal
          ? `killed by ${exit.signal}`
          : `exit code ${exit?.code}`;
    w.crashes.set(p.launch.name, c);
    const output = tail(p.launch.logFile, 1500).split('\n').slice(-8).join('\n');
    this.opts.log.warn(
      { world: w.name, shard: p.launch.name, pid: p.pid, exit: c.last, restarts: c.restarts, restartInMs: delay, output },
      'shard exited unexpectedly; restarting',
    );
  }

  /** The world's link secret, made once in its directory (readable only by its owner) and kept. */
  private linksSecret(world: string): string {
    const file = join(this.opts.directory, world, 'links-secret');
    if (!existsSync(file)) {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, randomBytes(32).toString('base64url'), { mode: 0o600, flag: 'wx' });
    }
    return readFileSync(file, 'utf8').trim();
  }

  private developmentKey(): { publicKeyPem: string; privateKeyFile: string } {
    this.devKey ??= developmentKey(this.opts.directory);
    return this.devKey;
  }

  private warnOnce(key: string, fields: object, msg: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.opts.log.warn(fields, msg);
  }

  /**
   * Shards of an earlier run of this directory that are still running (the operator was killed
   * before it could stop them) hold their ports; they are stopped first. A process counts only if
   * its pid file is in this directory and its environment names that same shard directory.
   */
  private async stopLeftovers(): Promise<void> {
    const dir = this.opts.directory;
    const found: { pid: number; shardDir: string }[] = [];
    for (const world of safeList(dir)) {
      for (const shard of safeList(join(dir, world))) {
        const shardDir = join(dir, world, shard);
        const pidFile = join(shardDir, 'pid');
        if (!existsSync(pidFile)) continue;
        const pid = Number(readFileSync(pidFile, 'utf8').trim());
        rmSync(pidFile, { force: true });
        if (!Number.isInteger(pid) || pid <= 1) continue;
        let environ = '';
        try {
          environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
        } catch {
          continue;
        }
        if (environ.split('\0').includes(`${SHARD_MARKER}=${shardDir}`)) found.push({ pid, shardDir });
      }
    }
    for (const { pid, shardDir } of found) {
      this.opts.log.warn({ pid, shard: shardDir }, 'stopping a shard left running by an earlier run');
      signalGroup(pid, 'SIGTERM');
    }
    const deadline = Date.now() + 15_000;
    while (found.some((f) => running(f.pid)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    for (const f of found) if (running(f.pid)) signalGroup(f.pid, 'SIGKILL');
  }
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // Gone.
    }
  }
}
