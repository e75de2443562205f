/**
 * A small typed filter language over document metadata (JSON objects), with one meaning in two
 * implementations: a predicate for the in-process index and parameterised SQL over a `jsonb`
 * column for a database store. Every value reaches SQL as a parameter; field paths too.
 *
 *   { "lang": "en" }                                 equality (scalars only; 1 is not "1")
 *   { "year": { "gte": 2020, "lt": 2024 } }          ranges: numbers, or strings by code point
 *   { "tag": { "in": ["a", "b"] } }                  in, nin
 *   { "lang": { "ne": "en" } }                       ne, nin and not match a missing field
 *   { "draft": { "exists": false } }                 presence (a null value is present)
 *   { "author.name": "Ada" }                         dotted paths into nested objects
 *   { "and": [f, g] }, { "or": [f, g] }, { "not": f }
 *
 * Several keys in one object must all hold. A range bound and the field must have the same type
 * (a number field is never "greater than" a string bound); a field of another type does not match.
 */
import { M3Error } from '../base/errors';

export type FilterScalar = string | number | boolean | null;

export interface FieldConditions {
  eq?: FilterScalar;
  ne?: FilterScalar;
  in?: FilterScalar[];
  nin?: FilterScalar[];
  gt?: number | string;
  gte?: number | string;
  lt?: number | string;
  lte?: number | string;
  exists?: boolean;
}

export type Filter =
  | { and: Filter[] }
  | { or: Filter[] }
  | { not: Filter }
  | { [field: string]: FilterScalar | FieldConditions };

type Range = 'gt' | 'gte' | 'lt' | 'lte';
const RANGES: readonly Range[] = ['gt', 'gte', 'lt', 'lte'];
const CONDITIONS = ['eq', 'ne', 'in', 'nin', ...RANGES, 'exists'] as const;
const FIELD = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const MAX_DEPTH = 32;
const MAX_LIST = 10_000;

/** A checked filter: the tree the two implementations walk. */
type Node =
  | { kind: 'and' | 'or'; items: Node[] }
  | { kind: 'not'; item: Node }
  | { kind: 'eq' | 'ne'; path: string[]; value: FilterScalar }
  | { kind: 'in' | 'nin'; path: string[]; values: FilterScalar[] }
  | { kind: Range; path: string[]; value: number | string }
  | { kind: 'exists'; path: string[]; value: boolean };

function bad(where: string, problem: string): M3Error {
  return new M3Error('ERR_INPUT', `filter${where}: ${problem}. A filter is {"field": value}, {"field": {"eq"|"ne"|"in"|"nin"|` +
    '"gt"|"gte"|"lt"|"lte"|"exists": ...}}, or {"and": [...]}, {"or": [...]}, {"not": {...}}');
}

function isScalar(v: unknown): v is FilterScalar {
  return v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function scalarList(value: unknown, where: string): FilterScalar[] {
  if (!Array.isArray(value) || value.length > MAX_LIST || !value.every(isScalar)) {
    throw bad(where, `expected an array of at most ${MAX_LIST} strings, finite numbers, booleans or nulls, got ${JSON.stringify(value)}`);
  }
  return value;
}

function fieldNode(field: string, spec: unknown, where: string): Node[] {
  if (!FIELD.test(field)) throw bad(where, `field name ${JSON.stringify(field)} must be letters, digits, '_' or '-', with '.' between nested names`);
  const path = field.split('.');
  if (isScalar(spec)) return [{ kind: 'eq', path, value: spec }];
  if (!isPlainObject(spec)) throw bad(where, `the value of ${field} must be a string, a finite number, a boolean, null or an object of conditions`);
  const keys = Object.keys(spec);
  if (keys.length === 0) throw bad(where, `${field} has no condition`);
  return keys.map((op): Node => {
    const value = spec[op];
    const at = `${where}.${op}`;
    if (op === 'eq' || op === 'ne') {
      if (!isScalar(value)) throw bad(at, `expected a string, a finite number, a boolean or null, got ${JSON.stringify(value)}`);
      return { kind: op, path, value };
    }
    if (op === 'in' || op === 'nin') return { kind: op, path, values: scalarList(value, at) };
    if ((RANGES as readonly string[]).includes(op)) {
      if (typeof value !== 'string' && !(typeof value === 'number' && Number.isFinite(value))) {
        throw bad(at, `a range bound is a finite number or a string, got ${JSON.stringify(value)}`);
      }
      return { kind: op as Range, path, value };
    }
    if (op === 'exists') {
      if (typeof value !== 'boolean') throw bad(at, `expected true or false, got ${JSON.stringify(value)}`);
      return { kind: 'exists', path, value };
    }
    throw bad(at, `unknown condition '${op}' (known: ${CONDITIONS.join(', ')})`);
  });
}

function parse(filter: unknown, where: string, depth: number): Node {
  if (depth > MAX_DEPTH) throw bad(where, `nested more than ${MAX_DEPTH} levels`);
  if (!isPlainObject(filter)) throw bad(where, `expected an object, got ${JSON.stringify(filter)}`);
  const keys = Object.keys(filter);
  if (keys.length === 0) throw bad(where, 'an empty filter; pass none to match everything');
  const nodes = keys.flatMap((key): Node[] => {
    const value = filter[key];
    if (key === 'and' || key === 'or') {
      if (!Array.isArray(value) || value.length === 0) throw bad(`${where}.${key}`, 'expected a non-empty array of filters');
      return [{ kind: key, items: value.map((f, i) => parse(f, `${where}.${key}[${i}]`, depth + 1)) }];
    }
    if (key === 'not') return [{ kind: 'not', item: parse(value, `${where}.not`, depth + 1) }];
    return fieldNode(key, value, `${where}.${key}`);
  });
  return nodes.length === 1 ? nodes[0] : { kind: 'and', items: nodes };
}

/**
 * The value at `path` in `metadata`, or undefined when a step is missing; as PostgreSQL's `#>`
 * reads it, a step into an array is an index (negative: from the end).
 */
function lookup(metadata: unknown, path: string[]): unknown {
  let at: unknown = metadata;
  for (const step of path) {
    if (Array.isArray(at)) {
      if (!/^-?\d+$/.test(step)) return undefined;
      const i = Number(step) < 0 ? at.length + Number(step) : Number(step);
      if (!(i >= 0 && i < at.length)) return undefined;
      at = at[i];
    } else if (isPlainObject(at) && Object.prototype.hasOwnProperty.call(at, step)) {
      at = at[step];
    } else {
      return undefined;
    }
  }
  return at;
}

/** Code-point order of two strings (UTF-8 byte order, as PostgreSQL's "C" collation sorts). */
function compareStrings(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function inRange(kind: Range, field: unknown, bound: number | string): boolean {
  let order: number;
  if (typeof bound === 'number' && typeof field === 'number') order = field < bound ? -1 : field > bound ? 1 : 0;
  else if (typeof bound === 'string' && typeof field === 'string') order = compareStrings(field, bound);
  else return false;
  return kind === 'gt' ? order > 0 : kind === 'gte' ? order >= 0 : kind === 'lt' ? order < 0 : order <= 0;
}

function matches(node: Node, metadata: unknown): boolean {
  switch (node.kind) {
    case 'and': return node.items.every((n) => matches(n, metadata));
    case 'or': return node.items.some((n) => matches(n, metadata));
    case 'not': return !matches(node.item, metadata);
    case 'eq': return lookup(metadata, node.path) === node.value;
    case 'ne': return lookup(metadata, node.path) !== node.value;
    case 'in': return node.values.includes(lookup(metadata, node.path) as FilterScalar);
    case 'nin': return !node.values.includes(lookup(metadata, node.path) as FilterScalar);
    case 'exists': return (lookup(metadata, node.path) !== undefined) === node.value;
    default: return inRange(node.kind, lookup(metadata, node.path), node.value);
  }
}

/** Parameterised SQL of a filter over a jsonb column. */
export interface FilterSql {
  /** A boolean SQL expression (never NULL) with placeholders $first.. */
  sql: string;
  params: unknown[];
}

function toSql(node: Node, column: string, params: unknown[], first: number): string {
  const param = (value: unknown, cast: string) => {
    params.push(value);
    return `$${first + params.length - 1}::${cast}`;
  };
  const field = (path: string[]) => `(${column} #> ${param(path, 'text[]')})`;
  switch (node.kind) {
    case 'and':
    case 'or':
      return `(${node.items.map((n) => toSql(n, column, params, first)).join(node.kind === 'and' ? ' AND ' : ' OR ')})`;
    case 'not': return `(NOT ${toSql(node.item, column, params, first)})`;
    case 'eq': return `COALESCE(${field(node.path)} = ${param(JSON.stringify(node.value), 'jsonb')}, false)`;
    case 'ne': return `(NOT COALESCE(${field(node.path)} = ${param(JSON.stringify(node.value), 'jsonb')}, false))`;
    case 'in':
    case 'nin': {
      const found = `EXISTS (SELECT 1 FROM jsonb_array_elements(${param(JSON.stringify(node.values), 'jsonb')}) AS v(x) ` +
        `WHERE v.x = ${field(node.path)})`;
      return node.kind === 'in' ? found : `(NOT ${found})`;
    }
    case 'exists': return `(${field(node.path)} IS ${node.value ? 'NOT ' : ''}NULL)`;
    default: {
      const op = { gt: '>', gte: '>=', lt: '<', lte: '<=' }[node.kind];
      const x = field(node.path);
      if (typeof node.value === 'number') {
        return `(CASE WHEN jsonb_typeof(${x}) = 'number' THEN (${x})::numeric ${op} ${param(String(node.value), 'numeric')} ELSE false END)`;
      }
      return `(CASE WHEN jsonb_typeof(${x}) = 'string' THEN (${x} #>> '{}') COLLATE "C" ${op} ${param(node.value, 'text')} COLLATE "C" ` +
        'ELSE false END)';
    }
  }
}

/** A checked filter, ready to test documents or to become SQL. */
export class MetadataFilter {
  private constructor(private readonly root: Node) {}

  /** Checks `filter`; an M3Error (ERR_INPUT) names the part that is wrong and the grammar. */
  static parse(filter: unknown): MetadataFilter {
    return new MetadataFilter(parse(filter, '', 0));
  }

  /** Whether a document's metadata (a JSON object, or undefined for none) satisfies the filter. */
  matches(metadata: unknown): boolean {
    return matches(this.root, metadata ?? {});
  }

  /**
   * The filter as a boolean SQL expression over the jsonb `column` (an identifier the caller
   * owns, never user input), its values in `params`, numbered from `$first`.
   */
  toSql(column: string, first = 1): FilterSql {
    if (!/^[a-z_][a-z0-9_.]*$/.test(column)) throw new M3Error('ERR_INPUT', `toSql: column ${JSON.stringify(column)} is not a plain identifier`);
    const params: unknown[] = [];
    return { sql: toSql(this.root, column, params, first), params };
  }
}
