import { type ParseArgsConfig, parseArgs } from 'node:util';

/**
 * A command-line flag that must be an integer in [min, max]; throws an Error whose message names
 * the flag, the range and what was given (scripts print it and exit 2).
 */
export function intFlag(flag: string, raw: string | undefined, min: number, max: number): number {
  // Decimal digits only: Number() alone also takes hex, octal, binary and exponents ('0x10', '1e1').
  const n = raw !== undefined && /^\s*[+-]?\d+\s*$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`--${flag} must be an integer from ${min} to ${max}, got '${raw ?? ''}'`);
  }
  return n;
}

/** A script's parsed flags, and the one way it reports a bad one. */
export interface Cli {
  /** Flag values by name, defaults applied. */
  values: Record<string, string | boolean | undefined>;
  /** The integer flag `name`, which must lie in [min, max]; anything else is `fail`ed, naming it. */
  int(name: string, min: number, max: number): number;
  /** Prints `<command>: <message>` and the usage line to stderr, and exits with status 2. */
  fail(message: string): never;
}

/**
 * Parses a script's flags with `node:util` parseArgs, strictly: an unknown flag, a missing value or
 * a positional argument is `fail`ed with parseArgs' own message; `--help` or `-h` prints the usage
 * and exits 0. The scripts (benchmarks, `npm run
 * world`) all report bad input this one way.
 */
export function parseCli(command: string, usage: string, options: NonNullable<ParseArgsConfig['options']>): Cli {
  const fail = (message: string): never => {
    console.error(`${command}: ${message}\n${usage}`);
    process.exit(2);
  };
  let values: Cli['values'] = {};
  try {
    values = parseArgs({ options: { help: { type: 'boolean', short: 'h' }, ...options }, strict: true, allowPositionals: false })
      .values as Cli['values'];
  } catch (err) {
    fail((err as Error).message);
  }
  if (values.help === true && !('help' in options)) {
    console.log(usage);
    process.exit(0);
  }
  delete values.help;
  return {
    values,
    fail,
    int(name, min, max) {
      try {
        return intFlag(name, values[name] as string | undefined, min, max);
      } catch (err) {
        return fail((err as Error).message);
      }
    },
  };
}
