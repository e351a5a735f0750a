import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * A process of ours started by a test (`spawnSource`, `spawnNode`), its stdout and stderr
 * collected. `killProcesses()` (in the test's afterEach/afterAll) SIGKILLs whatever is still running.
 */
export interface TestProcess {
  child: ChildProcess;
  pid: number;
  /** stdout and stderr as they arrived (the last 256 KiB once it passes 512 KiB). */
  output(): string;
  /**
   * The first line of stdout or stderr, written so far or to come, for which `match` holds.
   * Rejects, naming `what` and with the output, after `timeoutMs` or when the process ends first.
   */
  line(match: (line: string) => boolean, what: string, timeoutMs?: number): Promise<string>;
  /** The first JSON log line (pino's) whose message is `msg`, parsed; rejects as `line` does. */
  logged(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Its exit: once it exited and its output was read (or 1 s after it exited, if a child of its holds the pipes). */
  exited: Promise<Exit>;
  /** `exited`, or a rejection with the output when it has not exited within `timeoutMs`. */
  exit(timeoutMs?: number): Promise<Exit>;
  /** Signals the process (a `group` process: its whole process group). */
  kill(signal?: NodeJS.Signals): void;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Set over this process's environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** Starts it as the leader of a process group of its own: `kill` signals the group, as a terminal's Ctrl-C does. */
  group?: boolean;
}

/** How the repository runs its TypeScript: workspaces resolved to their sources, compiled by tsx. */
const SOURCE = ['--conditions=aethex-source', '--import', 'tsx'];

const running = new Set<TestProcess>();

/** `node <nodeFlags> --conditions=aethex-source --import tsx <script> <args>`. */
export function spawnSource(script: string, args: string[] = [], options: SpawnOptions & { nodeFlags?: string[] } = {}): TestProcess {
  const { nodeFlags = [], ...rest } = options;
  return spawnNode([...nodeFlags, ...SOURCE, script, ...args], rest);
}

/** `node <args>` (this process's node), stdin closed, stdout and stderr collected. */
export function spawnNode(args: string[], options: SpawnOptions = {}): TestProcess {
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...options.env },
    cwd: options.cwd,
    detached: options.group === true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  // Whole lines, each stream's apart (the last 512 KiB at most); `undefined` to the listeners: the end.
  const lines: string[] = [];
  let lineChars = 0;
  const listeners = new Set<(line: string | undefined) => void>();
  const addLine = (l: string) => {
    lines.push(l);
    lineChars += l.length;
    while (lineChars > 512 * 1024) lineChars -= (lines.shift() as string).length;
    for (const f of listeners) f(l);
  };
  const collect = (stream: NodeJS.ReadableStream) => {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      out += d;
      if (out.length > 512 * 1024) out = out.slice(-256 * 1024);
      const parts = (partial + d).split('\n');
      partial = parts.pop() as string;
      for (const l of parts) addLine(l);
    });
    stream.on('end', () => {
      if (partial) addLine(partial);
      partial = '';
    });
  };
  collect(child.stdout as NodeJS.ReadableStream);
  collect(child.stderr as NodeJS.ReadableStream);

  let exit: Exit | undefined;
  let ended = false;
  const exited = new Promise<Exit>((resolve) => {
    const done = () => {
      if (ended) return;
      ended = true;
      resolve(exit as Exit);
      for (const f of listeners) f(undefined);
    };
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      setTimeout(done, 1000).unref();
    });
    child.on('close', done);
  });
  const name = `${args.filter((a) => !SOURCE.includes(a)).join(' ')} (pid ${child.pid})`;
  const tail = () => (out.length > 20_000 ? `…${out.slice(-20_000)}` : out);

  const line = (match: (line: string) => boolean, what: string, timeoutMs = 30_000) =>
    new Promise<string>((resolve, reject) => {
      const found = lines.find(match);
      if (found !== undefined) return resolve(found);
      const exitedFirst = () => new Error(`${name} exited (${exitText(exit)}) before ${what}:\n${tail()}`);
      if (ended) return reject(exitedFirst());
      const listener = (l: string | undefined) => {
        if (l === undefined) finish(() => reject(exitedFirst()));
        else if (match(l)) finish(() => resolve(l));
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} from ${name}:\n${tail()}`))),
        timeoutMs,
      );
      const finish = (then: () => void) => {
        clearTimeout(timer);
        listeners.delete(listener);
        then();
      };
      listeners.add(listener);
    });
  const logged = async (msg: string, timeoutMs?: number) => {
    const found = await line((l) => parseLog(l)?.msg === msg, `'${msg}' to be logged`, timeoutMs);
    return parseLog(found) as Record<string, unknown>;
  };

  const p: TestProcess = {
    child,
    pid: child.pid as number,
    output: () => out,
    line,
    logged,
    exited,
    exit: (timeoutMs = 30_000) =>
      new Promise<Exit>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name} did not exit within ${timeoutMs} ms:\n${tail()}`)), timeoutMs);
        void exited.then((e) => {
          clearTimeout(timer);
          resolve(e);
        });
      }),
    kill(signal = 'SIGTERM') {
      if (options.group !== true) child.kill(signal);
      else if (child.pid !== undefined) {
        // Its group may outlive it, but once the group is gone too the id can be another's: a
        // process that took the pid since leads a group of that id. The kernel hands out no pid
        // still in use as a group's id, so with no process of that pid the group is still ours.
        const leaderGone = child.exitCode !== null || child.signalCode !== null;
        if (leaderGone && existsSync(`/proc/${child.pid}`)) return;
        try {
          process.kill(-child.pid, signal);
        } catch {
          // The group is gone.
        }
      }
    },
  };
  running.add(p);
  void exited.then(() => running.delete(p));
  return p;
}

/** SIGKILLs every process started here that is still running, and waits for their exits. */
export async function killProcesses(): Promise<void> {
  const left = [...running];
  for (const p of left) p.kill('SIGKILL');
  await Promise.all(left.map((p) => p.exited));
}

function parseLog(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function exitText(exit: Exit | undefined): string {
  return exit?.signal ? exit.signal : `code ${exit?.code}`;
}
