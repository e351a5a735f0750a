import { ConfigError, type Logger } from '@aethex/runtime';
import type { AgonesSDK } from '@google-cloud/agones-sdk/src/agonesSDK.js';

/** The environment variable Agones sets in a game server's pod; the SDK reads it too. */
export const AGONES_PORT_ENV = 'AGONES_SDK_GRPC_PORT';

/**
 * The port of the Agones SDK server (the sidecar) from `AGONES_SDK_GRPC_PORT`, or undefined when it
 * is not set: the shard then runs without Agones. A value that is not a port is a ConfigError.
 */
export function agonesPort(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env[AGONES_PORT_ENV];
  if (raw === undefined || raw === '') return undefined;
  const port = /^\d{1,5}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(port >= 1 && port <= 65_535)) throw new ConfigError(AGONES_PORT_ENV, `expected a port from 1 to 65535, got "${raw}"`);
  return port;
}

export interface AgonesOptions {
  port: number;
  /** How long to wait for the SDK server before giving up on starting. */
  connectTimeoutMs: number;
  /** Period of health pings while `healthy()` holds. */
  healthIntervalMs: number;
  log: Logger;
}

/**
 * The shard's side of the Agones game server lifecycle, through the official SDK: Ready once the
 * shard serves, a health ping every `healthIntervalMs` while its tick loop runs (a stalled loop stops
 * pinging and Agones marks the game server Unhealthy), player tracking on join and leave, and
 * Shutdown after the drain. Calls other than connect and shutdown never block the shard: they are
 * sent in order off the tick, and a failure is logged.
 */
export class Agones {
  private healthTimer: NodeJS.Timeout | undefined;
  /** Player tracking calls, one after another, so a player's leave never overtakes their join. */
  private queue: Promise<void> = Promise.resolve();
  private trackingFailures = 0;

  private constructor(
    private readonly sdk: AgonesSDK,
    private readonly options: AgonesOptions,
  ) {}

  /** Connects to the SDK server on `options.port`; rejects with a message naming it after the timeout. */
  static async connect(options: AgonesOptions): Promise<Agones> {
    // Loaded only on Agones: gRPC is not needed otherwise.
    const { default: SDK } = (await import('@google-cloud/agones-sdk')) as unknown as { default: typeof AgonesSDK };
    // The SDK reads its port from the environment; this one is the port the caller validated.
    const port = String(options.port);
    const sdk = new (class extends SDK {
      override get port(): string {
        return port;
      }
    })();

    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(
              `no Agones SDK server answered on localhost:${options.port} (${AGONES_PORT_ENV}) within ${options.connectTimeoutMs} ms (agones.connect_timeout_ms)`,
            ),
          ),
        options.connectTimeoutMs,
      );
    });
    const connecting = sdk.connect();
    try {
      await Promise.race([connecting, timedOut]);
    } catch (err) {
      connecting.catch(() => {}); // settles when the channel closes
      sdk.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    options.log.info({ port: options.port }, 'connected to the Agones SDK server');
    return new Agones(sdk, options);
  }

  /** Marks the game server Ready and starts health pings, sent while `healthy()` is true. */
  async ready(healthy: () => boolean): Promise<void> {
    await this.sdk.ready();
    this.options.log.info('Agones: ready');
    const ping = () => {
      if (healthy()) this.sdk.health((err) => this.options.log.warn({ err }, 'Agones health ping failed'));
    };
    ping();
    this.healthTimer = setInterval(ping, this.options.healthIntervalMs);
    this.healthTimer.unref();
  }

  /** Player tracking (Agones' PlayerTracking feature): a player joined or left. Never blocks. */
  player(event: 'joined' | 'left', playerId: string): void {
    this.queue = this.queue.then(async () => {
      try {
        const changed = event === 'joined' ? await this.sdk.alpha.playerConnect(playerId) : await this.sdk.alpha.playerDisconnect(playerId);
        if (!changed) this.options.log.debug({ playerId, event }, 'Agones: player tracking unchanged');
      } catch (err) {
        // Once, then quietly: with PlayerTracking off every call fails, and a shard has thousands of joins.
        this.trackingFailures++;
        const level = this.trackingFailures === 1 ? 'warn' : 'debug';
        this.options.log[level]({ err, playerId, event, failures: this.trackingFailures }, 'Agones player tracking failed');
      }
    });
  }

  /** After the drain: stops health pings, sends the tracking still queued, asks Agones to shut down, closes. */
  async shutdown(): Promise<void> {
    clearInterval(this.healthTimer);
    await this.queue;
    try {
      await this.sdk.shutdown();
      this.options.log.info('Agones: shutdown requested');
    } finally {
      this.sdk.close();
    }
  }
}
