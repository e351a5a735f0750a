import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { request } from 'node:http';

/** Everything needed to start one shard process. */
export interface ShardLaunch {
  world: string;
  name: string;
  instance: number;
  shard: number;
  /** The DesiredPod's template hash when started: what the planner compares. */
  hash: string;
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  gatewayPort: number;
  opsPort: number;
  /** stdout and stderr are appended here. */
  logFile: string;
  /** How long a stop waits after SIGTERM before SIGKILL (the pod's terminationGracePeriodSeconds). */
  graceMs: number;
}

export interface Exit {
  code: number | null;
  signal: string | null;
  /** Set when the process could not be started at all (e.g. the command does not exist). */
  error?: string;
  at: number;
}

/** GET http://127.0.0.1:<port><path> → true on 200. */
function probe(port: number, path: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** The last `bytes` of a file, as text (for a crash message). */
export function tail(file: string, bytes = 2048): string {
  try {
    const size = statSync(file).size;
    const n = Math.min(size, bytes);
    const fd = openSync(file, 'r');
    try {
      const buf = Buffer.alloc(n);
      readSync(fd, buf, 0, n, size - n);
      return buf.toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

/**
 * One shard process of the local runtime — what a pod is to the Kubernetes runtime. It runs in a
 * process group of its own (signals go to the group, so anything the command starts stops with
 * it), its readiness is its ops /readyz (probed every 500 ms: ready after one success, not ready
 * after two failures), and its liveness its /healthz (every 10 s once it was ready; three
 * failures in a row kill it, which the planner then sees as dead). `onChange` is called on
 * readiness changes and on exit.
 */
export class ShardProcess {
  readonly startedAt = Date.now();
  readonly child: ChildProcess;
  ready = false;
  /** Set once it was asked to stop (the planner's "terminating"). */
  stopping = false;
  exit: Exit | undefined;
  /** Killed because /healthz failed three times in a row. */
  failedLiveness = false;
  readonly exited: Promise<Exit>;
  private readonly timers: NodeJS.Timeout[] = [];
  private readyFailures = 0;
  private liveFailures = 0;
  private wasReady = false;
  private probing = false;

  constructor(
    readonly launch: ShardLaunch,
    private readonly onChange: (p: ShardProcess) => void,
  ) {
    const [program, ...args] = launch.argv;
    const out = openSync(launch.logFile, 'a');
    writeSync(out, `--- ${new Date().toISOString()} starting ${launch.name}: ${launch.argv.join(' ')}\n`);
    let settle: (e: Exit) => void = () => {};
    this.exited = new Promise<Exit>((resolve) => {
      settle = resolve;
    });
    const finish = (e: Exit) => {
      if (this.exit) return;
      this.exit = e;
      this.ready = false;
      for (const t of this.timers) clearInterval(t);
      this.onChange(this);
      settle(e);
    };
    try {
      this.child = spawn(program as string, args, { cwd: launch.cwd, env: launch.env, stdio: ['ignore', out, out], detached: true });
    } finally {
      closeSync(out);
    }
    this.child.on('error', (err) => finish({ code: null, signal: null, error: err.message, at: Date.now() }));
    this.child.on('exit', (code, signal) => finish({ code, signal, at: Date.now() }));
    this.timers.push(setInterval(() => void this.checkReady(), 500));
    this.timers.push(setInterval(() => void this.checkLive(), 10_000));
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  private async checkReady(): Promise<void> {
    if (!this.alive || this.stopping || this.probing) return;
    this.probing = true;
    const ok = await probe(this.launch.opsPort, '/readyz', 1000).finally(() => {
      this.probing = false;
    });
    if (!this.alive || this.stopping) return;
    this.readyFailures = ok ? 0 : this.readyFailures + 1;
    const ready = ok || (this.ready && this.readyFailures < 2);
    if (ok) this.wasReady = true;
    if (ready !== this.ready) {
      this.ready = ready;
      this.onChange(this);
    }
  }

  private async checkLive(): Promise<void> {
    if (!this.alive || this.stopping || !this.wasReady) return;
    const ok = await probe(this.launch.opsPort, '/healthz', 2000);
    this.liveFailures = ok ? 0 : this.liveFailures + 1;
    if (this.liveFailures >= 3 && this.alive && !this.stopping) {
      this.failedLiveness = true;
      this.signal('SIGKILL');
    }
  }

  /** Sends `signal` to the process group (or the process, if the group is gone). */
  signal(signal: NodeJS.Signals): void {
    const pid = this.child.pid;
    if (pid === undefined || !this.alive) return;
    try {
      process.kill(-pid, signal);
    } catch {
      try {
        process.kill(pid, signal);
      } catch {
        // Already gone.
      }
    }
  }

  /** Drains it like a pod deletion: SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  stop(graceMs: number): Promise<Exit> {
    if (!this.stopping) {
      this.stopping = true;
      this.ready = false;
      this.signal('SIGTERM');
      const t = setTimeout(() => this.signal('SIGKILL'), graceMs);
      void this.exited.then(() => clearTimeout(t));
    }
    return this.exited;
  }
}
