/**
 * What a HybridIndex stores with a document besides its vectors: its text and its metadata (a
 * JSON object, which search filters test: filter.ts). The native index holds vectors only; these
 * live in TypeScript, by slot (hybrid_index.ts), and are saved as two sections of the segment
 * (index_store.ts).
 *
 * Metadata is checked on add (a plain JSON object of at most MAX_METADATA_BYTES as JSON) and kept
 * as a deep-frozen copy: what the caller passed may change later without changing the index, and
 * what search, get and documents() hand out cannot be changed behind the index's back (a filter
 * tests the stored copy).
 */
import { M3Error, inputError } from '../base/errors';

/** A document's metadata: a JSON object. */
export type DocumentMetadata = Record<string, unknown>;

/** The optional third argument of HybridIndex.add: one entry per id in each array given. */
export interface DocumentFields {
  /** The documents' texts, returned with search hits (undefined or null: none). */
  texts?: readonly (string | undefined | null)[];
  /** The documents' metadata, JSON objects that search filters test (undefined or null: none). */
  metadata?: readonly (DocumentMetadata | undefined | null)[];
}

/** The fields of one add, checked: one entry per document, undefined for none. */
export interface CheckedFields {
  texts: Array<string | undefined>;
  metadata: Array<DocumentMetadata | undefined>;
}

/** Largest metadata of one document, as UTF-8 JSON: metadata is for filtering, not for payloads. */
export const MAX_METADATA_BYTES = 64 * 1024;

/** Deepest nesting of a metadata value (the filter language itself nests at most 32 levels). */
export const MAX_METADATA_DEPTH = 64;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Throws unless `value` is a JSON value that JSON.stringify writes as it is: strings, finite
 * numbers, booleans, null, arrays and plain objects, no cycles. An object's undefined values
 * are allowed (JSON leaves the key out, as if it were absent); anything JSON would change
 * silently (NaN to null, a Date to a string, a Map to {}) is refused, so a filter never tests
 * something other than what the caller stored.
 */
function checkJsonValue(value: unknown, where: string, depth: number, open: Set<object>): void {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw inputError('a finite number (JSON has no NaN or Infinity)', where, value);
    return;
  }
  if (typeof value !== 'object') {
    throw inputError('a JSON value: a string, a finite number, a boolean, null, an array or a plain object', where, value);
  }
  if (depth > MAX_METADATA_DEPTH) {
    throw new M3Error('ERR_INPUT', `${where}: metadata nests more than ${MAX_METADATA_DEPTH} levels deep; flatten it (filters reach nested fields with dotted paths)`);
  }
  if (open.has(value)) throw new M3Error('ERR_INPUT', `${where}: metadata refers to itself (a cycle); JSON cannot hold it`);
  if (!Array.isArray(value) && !isPlainObject(value)) {
    throw inputError('a JSON value: a string, a finite number, a boolean, null, an array or a plain object ' +
      '(convert a Date with toISOString(), a Map with Object.fromEntries())', where, value);
  }
  open.add(value);
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      if (item === undefined) throw inputError('a JSON value (JSON writes undefined in an array as null)', `${where}[${i}]`, item);
      checkJsonValue(item, `${where}[${i}]`, depth + 1, open);
    });
  } else {
    for (const key of Object.keys(value)) {
      const item = value[key];
      if (item !== undefined) checkJsonValue(item, `${where}.${key}`, depth + 1, open);
    }
  }
  open.delete(value);
}

/**
 * Freezes a parsed JSON value and everything in it; false (leaving it partly frozen) when it
 * nests more than MAX_METADATA_DEPTH levels, which a loaded file is refused for: deeper values
 * could overflow the stack of the recursive walks that follow (this one, JSON.stringify's).
 */
export function freezeJson(value: unknown, depth = 1): boolean {
  if (typeof value !== 'object' || value === null) return true;
  if (depth > MAX_METADATA_DEPTH) return false;
  for (const item of Object.values(value)) if (!freezeJson(item, depth + 1)) return false;
  Object.freeze(value);
  return true;
}

/** One document's metadata, checked, as a frozen copy (undefined for none). */
export function checkMetadata(value: unknown, where: string): DocumentMetadata | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isPlainObject(value)) throw inputError('a plain JSON object (or undefined for none)', where, value);
  checkJsonValue(value, where, 1, new Set());
  const json = JSON.stringify(value);
  const bytes = Buffer.byteLength(json, 'utf8');
  if (bytes > MAX_METADATA_BYTES) {
    throw new M3Error('ERR_INPUT', `${where} is ${bytes} bytes as JSON, more than the ${MAX_METADATA_BYTES} a document's metadata may hold; ` +
      'keep metadata to the fields that filters test, and put the text in fields.texts');
  }
  const copy = JSON.parse(json) as DocumentMetadata;
  freezeJson(copy);  // checkJsonValue bounded the depth
  return copy;
}

/** One array of `fields`: absent, or one entry per document. */
function entries(fields: Record<string, unknown>, name: 'texts' | 'metadata', count: number): readonly unknown[] | undefined {
  const list = fields[name];
  if (list === undefined) return undefined;
  if (!Array.isArray(list)) throw inputError(`an array of ${count} entries (one per id)`, `fields.${name}`, list);
  if (list.length !== count) throw new M3Error('ERR_INPUT', `add: fields.${name} has ${list.length} entries for ${count} ids; give one per id (undefined for none)`);
  return list;
}

/** The third argument of HybridIndex.add, checked (ERR_INPUT naming the entry, such as fields.metadata[3]). */
export function checkFields(fields: unknown, count: number): CheckedFields {
  const none = () => new Array<undefined>(count).fill(undefined);
  if (fields === undefined) return { texts: none(), metadata: none() };
  if (!isPlainObject(fields)) throw inputError('an object { texts?, metadata? }', 'fields', fields);
  const unknown = Object.keys(fields).filter((key) => key !== 'texts' && key !== 'metadata');
  if (unknown.length > 0) throw new M3Error('ERR_INPUT', `add: fields has an unknown key ${JSON.stringify(unknown[0])}; it takes { texts?, metadata? }`);
  const texts = entries(fields, 'texts', count);
  const metadata = entries(fields, 'metadata', count);
  return {
    texts: texts ? texts.map((text, i) => {
      if (text === undefined || text === null) return undefined;
      if (typeof text !== 'string') throw inputError('a string (or undefined for none)', `fields.texts[${i}]`, text);
      return text;
    }) : none(),
    metadata: metadata ? metadata.map((m, i) => checkMetadata(m, `fields.metadata[${i}]`)) : none(),
  };
}
