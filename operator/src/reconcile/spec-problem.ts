import { configProblem } from '@aethex/gameserver/config';
import {
  ConfigError,
  DEFAULT_POSITION_SCALE,
  type Env,
  envName,
  GRID_CELL_FACTOR,
  loadSettings,
  MAX_GRID_CELLS,
  regions,
  type Settings,
  type SettingsSchema,
  WORLD_SETTING_RANGES,
  worldBoundsProblem,
} from '@aethex/runtime';
import {
  GAMEWORLD_API_VERSION,
  GAMEWORLD_KIND,
  type GameWorld,
  type GameWorldSpec,
  MAX_WORLD_NAME,
  WORLD_NAME,
  WORLD_NAME_RULE,
} from '../api/gameworld.js';
import { engineEnv, podEnv, SHARD_ENV_FIELDS } from './desired.js';

/** Why a spec cannot be realised: the field to change (`spec.world.bounds`) and what is wrong, with the allowed range. */
export interface SpecProblem {
  field: string;
  message: string;
}

/**
 * Whether the world's children could not be named after it: a world stored before the CRD's name
 * rule (which holds only on create) whose Service or pods the API server would refuse.
 */
export function nameProblem(name: string): SpecProblem | undefined {
  if (name.length <= MAX_WORLD_NAME && WORLD_NAME.test(name)) return undefined;
  return { field: 'metadata.name', message: `${JSON.stringify(name)} must be ${WORLD_NAME_RULE}; recreate the world under such a name` };
}

/** Reason of the Ready, Progressing and Degraded conditions of a world whose spec cannot be realised. */
export const INVALID_SPEC = 'InvalidSpec';

const GS = 'AETHEX_GAMESERVER_';

/** The shard settings the rule reads: each one's variable and the spec field the operator sets it from. */
const INPUTS = {
  bounds: { key: 'engine.world_bounds', variable: `${GS}ENGINE_WORLD_BOUNDS`, field: 'spec.world.bounds' },
  maxSpeed: { key: 'engine.max_speed', variable: `${GS}ENGINE_MAX_SPEED`, field: 'spec.world.maxSpeed' },
  aoiRadius: { key: 'engine.aoi_radius', variable: `${GS}ENGINE_AOI_RADIUS`, field: 'spec.world.aoiRadius' },
  positionScale: { key: 'engine.position_scale', variable: `${GS}ENGINE_POSITION_SCALE`, field: undefined },
} as const;

// Parsed the way the shard parses them. Ranges are the shard's to state; the first three defaults
// are never used (each is checked to be set first).
const positive = { type: 'number', default: 1, min: Number.MIN_VALUE, max: Number.MAX_VALUE, doc: '' } as const;
const SCHEMA = {
  'engine.world_bounds': { type: 'rect', default: { minX: 0, minY: 0, maxX: 1, maxY: 1 }, doc: '' },
  'engine.max_speed': positive,
  'engine.aoi_radius': positive,
  'engine.position_scale': { ...positive, default: DEFAULT_POSITION_SCALE },
} satisfies SettingsSchema;

function read(env: Env): Settings<typeof SCHEMA> | undefined {
  try {
    return loadSettings(SCHEMA, { prefix: 'AETHEX_GAMESERVER', env, ownsPrefix: false });
  } catch (err) {
    if (err instanceof ConfigError) return undefined;
    throw err;
  }
}

/**
 * Whether the shards of a world with this spec (defaults applied) would refuse their settings at
 * start (exit 2, every pod crash-looping), and what to change: the bounds first (boundsProblem,
 * whose messages name the spec's fields and the values that would fit), then every setting of the
 * pod (settingsProblem, the shard's own check). `metadata`: the world's, for the settings the
 * operator makes from it (its namespace, name, pod names); without it a stand-in (the world's name
 * is nameProblem's to judge). Pure.
 */
export function specProblem(spec: GameWorldSpec, metadata?: WorldIdentity): SpecProblem | undefined {
  return boundsProblem(spec) ?? settingsProblem(spec, metadata);
}

/** What of a world's metadata its shards' settings are made from. */
export type WorldIdentity = Pick<GameWorld['metadata'], 'name' | 'namespace' | 'creationTimestamp'>;

/** The variable of a setting named in a ConfigError (`engine.npc_count`), or the variable itself (an unknown one). */
const variableOf = (key: string): string => (key.includes('.') ? envName('AETHEX_GAMESERVER', key) : key);

/**
 * The value a pod's env entry gives, as far as the operator can know it: undefined for one from
 * `valueFrom`, one that is not a string, and one the kubelet expands — it replaces `$(NAME)` with
 * an earlier entry's or a Service variable's value (`$$` is a literal `$`), which the operator does
 * not see. An entry without a value is the empty string.
 */
function knownValue(e: { value?: unknown; valueFrom?: unknown }): string | undefined {
  if (e.valueFrom !== undefined) return undefined;
  if (e.value === undefined) return '';
  if (typeof e.value !== 'string' || e.value.replaceAll('$$', '').includes('$(')) return undefined;
  return e.value.replaceAll('$$', '$');
}

/** At most `max` characters of `text`: a value in an error can be as long as the spec allows. */
const bounded = (text: string, max: number): string => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * Whether the shards would refuse the settings their pods get, by the shard's own check
 * (configProblem, gameserver/src/config.ts: unknown `AETHEX_GAMESERVER_*` variables, each value's
 * type and range, the checks of settings together) over a pod's env as the operator makes it
 * (podEnv: its own settings, then `template.env`, the last entry of a variable winning). The pod of
 * the last instance's last shard stands for them all: they differ only in their instance and name.
 * What the operator cannot know is left to the shard: a `valueFrom` entry's value (a check that
 * reads it is skipped, its name is still checked), a setting no entry gives when the shard cannot
 * run without it (a join-token key: the image or the local runtime may give it), a file only the
 * pod has (the shard map's bounds are boundsProblem's). Another setting no entry gives is the
 * shard's default. The field named is the entry or spec field that gave the value the error
 * names; the message bounded.
 */
export function settingsProblem(spec: GameWorldSpec, metadata?: WorldIdentity): SpecProblem | undefined {
  const world: GameWorld = {
    apiVersion: GAMEWORLD_API_VERSION,
    kind: GAMEWORLD_KIND,
    metadata: { uid: '', ...(metadata ?? { name: 'world', namespace: 'default' }) },
    spec,
  };
  const grid = regions(spec.world.bounds, spec.sharding.columns, spec.sharding.rows);
  const entries = podEnv(world, Math.max(0, spec.instances - 1), grid[grid.length - 1] as (typeof grid)[number]);
  const fromTemplate = entries.length - (spec.template.env?.length ?? 0);
  const env: Record<string, string> = {};
  const unread = new Set<string>();
  /** Each variable the pod sets, and whether its value is template.env's (true) or the operator's. */
  const byTemplate = new Map<string, boolean>();
  for (const [i, e] of entries.entries()) {
    byTemplate.set(e.name, i >= fromTemplate);
    // Kubernetes gives an entry without a value the empty string. A value that is not a string
    // (the Pod API takes none), or that the kubelet expands, is not judged here, as one from valueFrom.
    const value = knownValue(e);
    if (value !== undefined) {
      env[e.name] = value;
      unread.delete(e.name);
    } else {
      delete env[e.name];
      unread.add(e.name);
    }
  }
  const p = configProblem(env, unread);
  if (!p) return undefined;

  const given = (key: string) => {
    const variable = variableOf(key);
    if (!byTemplate.has(variable)) return { field: undefined, label: "the shard's default" };
    if (byTemplate.get(variable)) {
      // An empty value leaves the setting to the shard's default, as an unset one.
      const empty = !unread.has(variable) && env[variable]?.trim() === '';
      const entry = `${variable} in spec.template.env`;
      return { field: `spec.template.env[${variable}]`, label: empty ? `the shard's default (${entry} is empty)` : entry, env: true };
    }
    const field = SHARD_ENV_FIELDS[variable.slice('AETHEX_GAMESERVER_'.length)];
    return { field, label: field ?? "the operator's" };
  };
  const named = given(p.error.key);
  const others = p.reads.filter((k) => k !== p.error.key);
  const field =
    named.field ??
    others.map(given).find((g) => 'env' in g)?.field ??
    others.map(given).find((g) => g.field !== undefined)?.field ??
    'spec.template.env';
  const from = p.reads.map((k) => [k, given(k)] as const).filter(([, g]) => g.field !== field);
  const sources = from.length === 0 ? '' : ` (${from.map(([k, g]) => `${k}: ${g.label}`).join('; ')})`;
  return {
    field: bounded(field, 160),
    message: bounded(`the shard would refuse its settings at start (exit 2): ${p.error.message}${sources}`, 800),
  };
}

/**
 * Whether the shards of a world with this spec (defaults applied) would refuse their bounds at
 * start — too far from 0 for the max speed or the position quantum, or a grid of too many cells
 * for the area-of-interest radius (`worldBoundsProblem`, the shard's own rule) — and which field
 * to change. The settings are the ones each shard gets: the operator's (shardEnv), then
 * `template.env`, whose last entry for a variable wins as in the pod; such an entry is the field
 * named. When one of them is not known here (`valueFrom`, an empty value, a value that does not
 * parse), the rule is left to settingsProblem (which refuses a value that does not parse) and the
 * shard. Pure.
 */
export function boundsProblem(spec: GameWorldSpec): SpecProblem | undefined {
  const set = new Map<string, { value: unknown; from?: number }>();
  for (const [k, value] of Object.entries(engineEnv(spec))) set.set(`${GS}${k}`, { value });
  for (const [i, e] of (spec.template.env ?? []).entries()) set.set(e.name, { value: knownValue(e), from: i });

  const env: Record<string, string> = {};
  for (const input of Object.values(INPUTS)) {
    // A setting the operator does not give and template.env does not name: the shard's default.
    if (!set.has(input.variable) && input.field === undefined) continue;
    const value = set.get(input.variable)?.value;
    if (typeof value !== 'string' || value.trim() === '') return undefined;
    env[input.variable] = value;
  }
  const s = read(env);
  if (!s) return undefined;
  const field = (name: keyof typeof INPUTS) => {
    const from = set.get(INPUTS[name].variable)?.from;
    return from === undefined ? INPUTS[name].field : `spec.template.env[${from}].value`;
  };
  const label = (name: keyof typeof INPUTS) => {
    const from = set.get(INPUTS[name].variable)?.from;
    return from === undefined ? INPUTS[name].field : `${INPUTS[name].variable} in spec.template.env[${from}]`;
  };

  // In a sharded world the shard map's bounds (spec.world.bounds) replace the setting's after it is
  // checked (gameserver/src/shard.ts), and are checked as well: a template.env override is both.
  const sharded = spec.sharding.columns * spec.sharding.rows > 1;
  const overridden = set.get(INPUTS.bounds.variable)?.from !== undefined;
  const boundsFrom = sharded && overridden ? [undefined, spec.world.bounds] : [undefined];
  for (const mapBounds of boundsFrom) {
    const p = worldBoundsProblem({
      bounds: mapBounds ?? s['engine.world_bounds'],
      maxSpeed: s['engine.max_speed'],
      positionScale: s['engine.position_scale'],
      aoiRadius: s['engine.aoi_radius'],
    });
    if (!p) continue;
    const bounds = {
      field: mapBounds ? INPUTS.bounds.field : (field('bounds') as string),
      label: mapBounds ? `${INPUTS.bounds.field} (the shard map's)` : label('bounds'),
    };
    return describe(p, bounds, label, field);
  }
  return undefined;
}

function describe(
  p: NonNullable<ReturnType<typeof worldBoundsProblem>>,
  bounds: { field: string; label: string | undefined },
  label: (name: keyof typeof INPUTS) => string | undefined,
  field: (name: keyof typeof INPUTS) => string | undefined,
): SpecProblem {
  switch (p.rule) {
    case 'quanta': {
      const scale = label('positionScale');
      const source = scale === undefined ? `${p.positionScale}, the shard's default` : `${p.positionScale}, from ${scale}`;
      const most = WORLD_SETTING_RANGES.positionScale.max;
      const raise =
        p.minPositionScale > most
          ? ` (no position scale up to its maximum, ${most}, fits them)`
          : scale === undefined
            ? `, or set ${INPUTS.positionScale.variable} in spec.template.env to at least ${p.minPositionScale}`
            : `, or raise it to at least ${p.minPositionScale}`;
      return {
        field: bounds.field,
        message: `too far from 0 for the shard's position quantum (engine.position_scale ${source}): snapshots carry positions as int32 quanta, and ${p.farthest} is past 2^31 − 1 of them; keep the bounds inside ±${p.limit}${raise}`,
      };
    }
    case 'float32': {
      const speed = label('maxSpeed');
      return {
        field: bounds.field,
        message: `too far from 0 for ${speed} (${p.maxSpeed}): the shard keeps positions as float32, ${p.spacing} apart at ${p.farthest}, and they must be at most max speed / 100 (${p.maxSpeed / 100}) apart; keep the bounds inside ±${p.inside}${
          p.minMaxSpeed > WORLD_SETTING_RANGES.maxSpeed.max
            ? ` (a max speed of ${p.minMaxSpeed} would fit them, past its maximum, ${WORLD_SETTING_RANGES.maxSpeed.max})`
            : `, or raise ${speed} to at least ${p.minMaxSpeed}`
        }`,
      };
    }
    case 'grid':
      return {
        field: field('aoiRadius') as string,
        message: `too small for ${bounds.label} (${p.width} × ${p.height}): the shard's area-of-interest grid, cells of ${GRID_CELL_FACTOR} × the radius, would need ${p.cells} cells, at most ${MAX_GRID_CELLS}; ${
          p.minAoiRadius > WORLD_SETTING_RANGES.aoiRadius.max
            ? `it would take a radius of ${p.minAoiRadius}, past its maximum (${WORLD_SETTING_RANGES.aoiRadius.max}): make the bounds smaller`
            : `raise it to at least ${p.minAoiRadius}`
        }`,
      };
  }
}
