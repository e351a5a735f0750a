import { ConfigError } from '@aethex/runtime';

/**
 * What a shard runs when `local.command` does not name its image: the shard server from source,
 * with young-generation GC on the main thread (docs/gameserver.md says why).
 */
export const DEFAULT_COMMAND = 'node --no-parallel-scavenge --conditions=aethex-source --import tsx gameserver/src/main.ts';

/** How images map to commands (argv, first element the program). */
export interface CommandMap {
  byImage: ReadonlyMap<string, string[]>;
  /** For any image not in `byImage`. */
  fallback: string[];
}

/** Splits a command line on whitespace (no shell, no quoting: use a JSON array for arguments with spaces). */
export function splitCommand(line: string): string[] {
  return line.trim().split(/\s+/).filter(Boolean);
}

function argv(key: string, what: string, value: unknown): string[] {
  const out =
    typeof value === 'string'
      ? splitCommand(value)
      : Array.isArray(value) && value.every((a) => typeof a === 'string')
        ? (value as string[])
        : undefined;
  if (!out || out.length === 0 || out[0] === '') {
    throw new ConfigError(key, `${what}: expected a command line or a non-empty array of strings, got ${JSON.stringify(value)}`);
  }
  return out;
}

/**
 * Reads the `local.command` setting: one command for every image (a command line, or a JSON array
 * of arguments), or a JSON object from image to command (a command line or an argument array),
 * where the key `*` is the command for any image not listed (without it, {@link DEFAULT_COMMAND}).
 */
export function parseCommandSetting(value: string, key = 'local.command'): CommandMap {
  const text = value.trim();
  if (text === '') return { byImage: new Map(), fallback: splitCommand(DEFAULT_COMMAND) };
  if (!text.startsWith('{') && !text.startsWith('[')) return { byImage: new Map(), fallback: argv(key, 'command', text) };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(key, `not valid JSON: ${(err as Error).message}`);
  }
  if (Array.isArray(parsed)) return { byImage: new Map(), fallback: argv(key, 'command', parsed) };
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(key, 'expected a JSON object from image to command');
  }
  const byImage = new Map<string, string[]>();
  let fallback = splitCommand(DEFAULT_COMMAND);
  for (const [image, command] of Object.entries(parsed)) {
    if (image === '*') fallback = argv(key, 'image "*"', command);
    else if (image.trim() === '') throw new ConfigError(key, 'an image name is empty');
    else byImage.set(image, argv(key, `image ${JSON.stringify(image)}`, command));
  }
  return { byImage, fallback };
}

/**
 * The command of a shard running `image`; `known` is false when the image is not in the map and
 * the fallback is used (the caller logs it). A leading `node` is this operator's own Node binary.
 */
export function commandFor(map: CommandMap, image: string, execPath: string): { argv: string[]; known: boolean } {
  const listed = map.byImage.get(image);
  const chosen = listed ?? map.fallback;
  return {
    argv: chosen[0] === 'node' ? [execPath, ...chosen.slice(1)] : [...chosen],
    known: listed !== undefined || map.byImage.size === 0,
  };
}
