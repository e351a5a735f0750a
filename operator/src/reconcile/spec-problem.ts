import {
  ConfigError,
  DEFAULT_POSITION_SCALE,
  type Env,
  GRID_CELL_FACTOR,
  loadSettings,
  MAX_GRID_CELLS,
  type Settings,
  type SettingsSchema,
  WORLD_SETTING_RANGES,
  worldBoundsProblem,
} from '@aethex/runtime';
import { type GameWorldSpec, MAX_WORLD_NAME, WORLD_NAME, WORLD_NAME_RULE } from '../api/gameworld.js';
import { engineEnv } from './desired.js';

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
 * start — bounds too far from 0 for the max speed or the position quantum, or a grid of too many
 * cells for the area-of-interest radius (`worldBoundsProblem`, the shard's own rule) — and which
 * field to change. The settings are the ones each shard gets: the operator's (shardEnv), then
 * `template.env`, whose last entry for a variable wins as in the pod; such an entry is the field
 * named. When one of them is not known here (`valueFrom`, an empty value, a value that does not
 * parse), the shard is left to judge. Pure.
 */
export function specProblem(spec: GameWorldSpec): SpecProblem | undefined {
  const set = new Map<string, { value: unknown; from?: number }>();
  for (const [k, value] of Object.entries(engineEnv(spec))) set.set(`${GS}${k}`, { value });
  for (const [i, e] of (spec.template.env ?? []).entries())
    set.set(e.name, { value: e.valueFrom === undefined ? (e.value ?? '') : undefined, from: i });

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
