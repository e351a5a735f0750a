import { withDefaults } from '../api/gameworld.js';
import { specProblem } from '../reconcile/spec-problem.js';

/**
 * The GameWorld spec's validation as the API server does it, for the local runtime (which reads
 * files, so nothing else checks them), and then as the operator does it. SPEC_SCHEMA is
 * crds/gameworld.yaml's `spec` schema without descriptions — a unit test keeps the two equal — and
 * each CEL rule in it has its implementation in CEL_RULES (the test checks that too).
 */

export type Schema = {
  type?: 'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean';
  required?: readonly string[];
  properties?: Readonly<Record<string, Schema>>;
  additionalProperties?: Schema;
  items?: Schema;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean;
  minLength?: number;
  maxLength?: number;
  maxItems?: number;
  default?: unknown;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-validations'?: readonly { rule: string; message: string; fieldPath?: string }[];
};

const num = { type: 'number' } as const;

export const SPEC_SCHEMA: Schema = {
  type: 'object',
  required: ['image', 'world'],
  properties: {
    image: { type: 'string', minLength: 1, maxLength: 512 },
    world: {
      type: 'object',
      required: ['bounds'],
      properties: {
        bounds: {
          type: 'object',
          required: ['minX', 'minY', 'maxX', 'maxY'],
          properties: { minX: num, minY: num, maxX: num, maxY: num },
          'x-kubernetes-validations': [
            { rule: 'self.minX < self.maxX', message: 'bounds.minX must be less than bounds.maxX', fieldPath: '.minX' },
            { rule: 'self.minY < self.maxY', message: 'bounds.minY must be less than bounds.maxY', fieldPath: '.minY' },
          ],
        },
        tickRate: { type: 'integer', minimum: 1, maximum: 120, default: 40 },
        aoiRadius: { type: 'number', minimum: 1, maximum: 100_000, default: 200 },
        maxSpeed: { type: 'number', minimum: 0.001, maximum: 10_000, default: 5 },
      },
    },
    sharding: {
      type: 'object',
      default: {},
      properties: {
        columns: { type: 'integer', minimum: 1, maximum: 64, default: 1 },
        rows: { type: 'integer', minimum: 1, maximum: 64, default: 1 },
      },
      'x-kubernetes-validations': [
        {
          rule: '(has(self.columns) ? self.columns : 1) * (has(self.rows) ? self.rows : 1) <= 64',
          message: 'sharding.columns × sharding.rows must be at most 64',
        },
      ],
    },
    instances: { type: 'integer', minimum: 0, maximum: 1000, default: 1 },
    capacity: {
      type: 'object',
      default: {},
      properties: {
        playersPerShard: { type: 'integer', minimum: 1, maximum: 100_000, default: 500 },
        entitiesPerShard: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 10_000 },
      },
    },
    template: {
      type: 'object',
      properties: {
        resources: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
        env: {
          type: 'array',
          maxItems: 64,
          items: {
            type: 'object',
            required: ['name'],
            'x-kubernetes-preserve-unknown-fields': true,
            properties: { name: { type: 'string', minLength: 1 } },
          },
        },
        nodeSelector: { type: 'object', additionalProperties: { type: 'string' } },
        tolerations: { type: 'array', maxItems: 32, items: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
      },
    },
    persistence: {
      type: 'object',
      default: {},
      properties: { snapshotIntervalSeconds: { type: 'integer', minimum: 1, maximum: 3600, default: 5 } },
    },
    updateStrategy: {
      type: 'object',
      default: {},
      properties: { maxUnavailable: { type: 'integer', minimum: 1, default: 1 } },
    },
  },
};

type Obj = Record<string, unknown>;
const has = (o: Obj, k: string) => o[k] !== undefined && o[k] !== null;

/** The CEL rules of SPEC_SCHEMA, by their exact text. `self` has already passed its schema. */
export const CEL_RULES: Readonly<Record<string, (self: Obj) => boolean>> = {
  'self.minX < self.maxX': (s) => (s.minX as number) < (s.maxX as number),
  'self.minY < self.maxY': (s) => (s.minY as number) < (s.maxY as number),
  '(has(self.columns) ? self.columns : 1) * (has(self.rows) ? self.rows : 1) <= 64': (s) =>
    (has(s, 'columns') ? (s.columns as number) : 1) * (has(s, 'rows') ? (s.rows as number) : 1) <= 64,
};

const typeName = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

/** Checks `value` against `schema`; appends `path: problem` messages to `errors`. */
export function validateSchema(schema: Schema, value: unknown, path: string, errors: string[]): void {
  const before = errors.length;
  const fail = (p: string, m: string) => errors.push(`${p}: ${m}`);
  switch (schema.type) {
    case 'object': {
      if (typeName(value) !== 'object') return void fail(path, `must be an object, got ${typeName(value)}`);
      const o = value as Obj;
      for (const r of schema.required ?? []) if (!has(o, r)) fail(`${path}.${r}`, 'required');
      for (const [k, v] of Object.entries(o)) {
        const sub = schema.properties?.[k] ?? schema.additionalProperties;
        if (sub) {
          if (v !== null && v !== undefined) validateSchema(sub, v, `${path}.${k}`, errors);
        } else if (!schema['x-kubernetes-preserve-unknown-fields']) {
          fail(`${path}.${k}`, 'unknown field');
        }
      }
      break;
    }
    case 'array': {
      if (!Array.isArray(value)) return void fail(path, `must be an array, got ${typeName(value)}`);
      if (schema.maxItems !== undefined && value.length > schema.maxItems)
        fail(path, `must have at most ${schema.maxItems} items, got ${value.length}`);
      if (schema.items) for (const [i, v] of value.entries()) validateSchema(schema.items, v, `${path}[${i}]`, errors);
      break;
    }
    case 'string': {
      if (typeof value !== 'string') return void fail(path, `must be a string, got ${typeName(value)}`);
      if (schema.minLength !== undefined && value.length < schema.minLength) fail(path, `must be at least ${schema.minLength} characters`);
      if (schema.maxLength !== undefined && value.length > schema.maxLength) fail(path, `must be at most ${schema.maxLength} characters`);
      break;
    }
    case 'integer':
    case 'number': {
      const kind = schema.type === 'integer' ? 'an integer' : 'a number';
      if (typeof value !== 'number' || !Number.isFinite(value)) return void fail(path, `must be ${kind}, got ${typeName(value)}`);
      if (schema.type === 'integer' && !Number.isInteger(value)) return void fail(path, `must be an integer, got ${value}`);
      if (schema.minimum !== undefined) {
        if (schema.exclusiveMinimum && value <= schema.minimum) fail(path, `must be greater than ${schema.minimum}, got ${value}`);
        else if (value < schema.minimum) fail(path, `must be at least ${schema.minimum}, got ${value}`);
      }
      if (schema.maximum !== undefined && value > schema.maximum) fail(path, `must be at most ${schema.maximum}, got ${value}`);
      break;
    }
    case 'boolean':
      if (typeof value !== 'boolean') return void fail(path, `must be a boolean, got ${typeName(value)}`);
      break;
  }
  // CEL rules run on a value that passed its schema (as the API server's do).
  if (errors.length === before) {
    for (const v of schema['x-kubernetes-validations'] ?? []) {
      const rule = CEL_RULES[v.rule];
      if (!rule) throw new Error(`no implementation of the CEL rule ${JSON.stringify(v.rule)}`);
      if (!rule(value as Obj)) fail(`${path}${v.fieldPath ?? ''}`, v.message);
    }
  }
}

/**
 * Every problem with a GameWorld spec as written (before defaults), each naming its field, e.g.
 * `spec.world.bounds.minX: bounds.minX must be less than bounds.maxX`. Besides the CRD's rules, a
 * template.env entry's `value` must be a string, as the Pod API requires; and a spec that passes
 * them is refused if its shards would refuse their settings at start (specProblem, the check the
 * operator makes on Kubernetes).
 */
export function validateSpec(spec: unknown): string[] {
  const errors: string[] = [];
  if (spec === undefined || spec === null) return ['spec: required'];
  validateSchema(SPEC_SCHEMA, spec, 'spec', errors);
  const env = (spec as { template?: { env?: unknown } }).template?.env;
  if (Array.isArray(env)) {
    env.forEach((e, i) => {
      const value = (e as Obj | null)?.value;
      if (value !== undefined && value !== null && typeof value !== 'string') {
        errors.push(`spec.template.env[${i}].value: must be a string, got ${typeName(value)} (quote it)`);
      }
    });
  }
  if (errors.length === 0) {
    const problem = specProblem(withDefaults(spec as Obj));
    if (problem) errors.push(`${problem.field}: ${problem.message}`);
  }
  return errors;
}
