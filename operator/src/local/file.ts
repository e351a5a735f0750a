import { createHash } from 'node:crypto';
import { parseAllDocuments } from 'yaml';
import { GAMEWORLD_API_VERSION, GAMEWORLD_KIND, type GameWorld, type GameWorldSpec, withDefaults } from '../api/gameworld.js';
import { validateSpec } from './validate.js';

/** The namespace every local world is in. */
export const LOCAL_NAMESPACE = 'local';

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** One GameWorld document of the file: its spec with defaults when valid, otherwise the problems. */
export type FileWorld = { name: string; spec: GameWorldSpec; errors: [] } | { name: string; spec: undefined; errors: string[] };

export type FileContents =
  /** Every GameWorld document in file order; `ignored` says which documents were not GameWorlds. */
  | { ok: true; worlds: FileWorld[]; ignored: string[] }
  /** The file as a whole cannot be used (YAML syntax, a world without a usable name, a name twice). */
  | { ok: false; error: string };

/**
 * Reads a GameWorld file (one or more YAML documents). A document with a name but a bad spec is
 * returned with its errors, so the caller can keep that world's last good spec; a problem that
 * hides which worlds the file means (bad YAML, a missing or bad name, a duplicate) rejects the
 * whole file, so the caller keeps every world as it was rather than removing any.
 */
export function parseWorldFile(text: string): FileContents {
  const docs = parseAllDocuments(text, { prettyErrors: false });
  const list = Array.isArray(docs) ? docs : [docs];
  const worlds: FileWorld[] = [];
  const ignored: string[] = [];
  const seen = new Set<string>();
  for (const [i, doc] of list.entries()) {
    const where = `document ${i + 1}`;
    const err = doc.errors[0];
    if (err) return { ok: false, error: `${where}: not valid YAML: ${err.message.split('\n')[0]}` };
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) return { ok: false, error: `${where}: expected a mapping (a GameWorld)` };
    const o = value as Record<string, unknown>;
    if (o.kind !== GAMEWORLD_KIND) {
      ignored.push(`${where}: kind ${JSON.stringify(o.kind ?? null)} is not ${GAMEWORLD_KIND}; ignored`);
      continue;
    }
    const meta = o.metadata as Record<string, unknown> | undefined;
    const name = meta && typeof meta === 'object' ? meta.name : undefined;
    if (typeof name !== 'string' || name === '') return { ok: false, error: `${where}: metadata.name: required` };
    // A DNS-1123 subdomain, as Kubernetes requires of any name (it names directories here). The
    // CRD asks more of a new world's name (WORLD_NAME: its Service and pods are named after it);
    // files that ran here before that rule keep running.
    if (name.length > 253 || !NAME.test(name)) {
      return {
        ok: false,
        error: `${where}: metadata.name: ${JSON.stringify(name)} must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit`,
      };
    }
    if (seen.has(name)) return { ok: false, error: `${where}: metadata.name: ${name} is already defined by an earlier document` };
    seen.add(name);
    const errors: string[] = [];
    if (o.apiVersion !== GAMEWORLD_API_VERSION)
      errors.push(`apiVersion: must be ${GAMEWORLD_API_VERSION}, got ${JSON.stringify(o.apiVersion ?? null)}`);
    for (const k of Object.keys(o))
      if (!['apiVersion', 'kind', 'metadata', 'spec', 'status'].includes(k)) errors.push(`${k}: unknown field`);
    errors.push(...validateSpec(o.spec));
    worlds.push(
      errors.length > 0 ? { name, spec: undefined, errors } : { name, spec: withDefaults(o.spec as Record<string, unknown>), errors: [] },
    );
  }
  return { ok: true, worlds, ignored };
}

/** A local GameWorld object: namespace `local`, a uid derived from the name, the given generation. */
export function localWorld(name: string, spec: GameWorldSpec, generation: number): GameWorld {
  const h = createHash('sha256').update(`local/${name}`).digest('hex');
  const uid = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  return {
    apiVersion: GAMEWORLD_API_VERSION,
    kind: GAMEWORLD_KIND,
    metadata: { name, namespace: LOCAL_NAMESPACE, uid, generation },
    spec,
  };
}
