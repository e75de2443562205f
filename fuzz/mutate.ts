/**
 * The generic mutations: of bytes, of JSON documents and of what kind of file system entry
 * stands at a path. Each has a generator (random ops, from a case's Random) and an applier
 * (deterministic, from the ops alone), so that a recipe replays without its generator.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ByteOp, FileKind, FloatValue, JsonOp, JsonPath } from './recipe';
import type { Random } from './rng';

// ---------------------------------------------------------------------------------------------
// Bytes

/** Integers that sit on the edges parsers get wrong: zero, one, sign bits, type maxima, off-by-ones. */
const INTERESTING_INTEGERS: Record<1 | 2 | 4 | 8, string[]> = {
  1: ['0', '1', '-1', '127', '-128', '255', '16', '32', '64'],
  2: ['0', '1', '-1', '255', '256', '32767', '-32768', '65535', '1024', '4096'],
  4: ['0', '1', '-1', '255', '65535', '65536', '2147483647', '-2147483648', '4294967295', '4294967294', '1048576', '16777216', '100000'],
  8: ['0', '1', '-1', '4294967295', '4294967296', '9007199254740991', '9007199254740993', '9223372036854775807', '-9223372036854775808',
    '18446744073709551615', '1099511627776'],
};

/** Floats that break arithmetic: non-finite values, the extremes, signed zero, subnormals. */
export const INTERESTING_FLOATS: FloatValue[] = ['NaN', 'Infinity', '-Infinity', 3.4028234663852886e38, -3.4028234663852886e38, 1e-45, -0, 0, 1e30, 65504];

export function floatOf(value: FloatValue): number {
  return typeof value === 'number' ? value : Number(value);
}

/** Where in a file of `size` bytes an op at `at` lands, once earlier ops may have changed its size. */
function wrap(at: number, size: number, inclusiveEnd = false): number {
  const span = inclusiveEnd ? size + 1 : size;
  return span <= 0 ? 0 : ((at % span) + span) % span;
}

/** Applies one byte op; returns the new contents (the input is not modified). */
export function applyByteOp(data: Buffer, op: ByteOp): Buffer {
  switch (op.op) {
    case 'flip': {
      if (data.length === 0) return data;
      const out = Buffer.from(data);
      out[wrap(op.at, out.length)] ^= 1 << (op.bit & 7);
      return out;
    }
    case 'set-byte': {
      if (data.length === 0) return data;
      const out = Buffer.from(data);
      out[wrap(op.at, out.length)] = op.value & 0xff;
      return out;
    }
    case 'set-int': {
      if (data.length < op.width) return data;
      const out = Buffer.from(data);
      const at = wrap(op.at, out.length - op.width + 1);
      let v = BigInt.asUintN(op.width * 8, BigInt(op.value));
      for (let i = 0; i < op.width; i++, v >>= 8n) out[at + i] = Number(v & 0xffn);
      return out;
    }
    case 'set-f32': {
      if (data.length < 4) return data;
      const out = Buffer.from(data);
      out.writeFloatLE(floatOf(op.value), wrap(op.at, out.length - 3));
      return out;
    }
    case 'insert': {
      const at = wrap(op.at, data.length, true);
      const piece = op.hex !== undefined ? Buffer.from(op.hex, 'hex') : Buffer.alloc(Math.max(0, op.length ?? 0), op.fill ?? 0);
      return Buffer.concat([data.subarray(0, at), piece, data.subarray(at)]);
    }
    case 'delete': {
      if (data.length === 0) return data;
      const at = wrap(op.at, data.length);
      return Buffer.concat([data.subarray(0, at), data.subarray(Math.min(data.length, at + Math.max(0, op.length)))]);
    }
    case 'truncate':
      return data.subarray(0, Math.max(0, Math.min(data.length, op.length)));
    case 'repeat': {
      if (data.length === 0) return data;
      const at = wrap(op.at, data.length);
      const chunk = data.subarray(at, Math.min(data.length, at + Math.max(0, op.length)));
      const copies = Array.from({ length: Math.max(0, Math.min(op.times, 1 << 16)) }, () => chunk);
      return Buffer.concat([data.subarray(0, at + chunk.length), ...copies, data.subarray(at + chunk.length)]);
    }
    default:
      return data;
  }
}

/** Where byte ops should land more often than chance would put them: headers, tables, fields. */
export interface ByteHints {
  /** Offsets of fields worth hitting (a header's counts, a table's entries). */
  hot?: number[];
  /** Offsets of 4-byte floats (weights, vectors). */
  floats?: { start: number; end: number };
}

/** An offset: half the time near the start of the file or a hot spot, where headers live. */
function pickOffset(rng: Random, size: number, hints: ByteHints): number {
  if (size === 0) return 0;
  const hot = hints.hot?.filter((h) => h < size) ?? [];
  if (hot.length && rng.chance(0.35)) return Math.min(size - 1, rng.pick(hot) + rng.below(8));
  if (rng.chance(0.3)) return rng.below(Math.min(size, 128));
  return rng.below(size);
}

/** One random byte op for a file of `size` bytes. */
export function randomByteOp(rng: Random, size: number, hints: ByteHints = {}): ByteOp {
  const at = pickOffset(rng, size, hints);
  const kind = rng.weighted<ByteOp['op']>([
    ['flip', 3], ['set-byte', 2], ['set-int', 4], ['set-f32', hints.floats ? 2 : 0.5], ['insert', 1.5], ['delete', 1.5], ['truncate', 1], ['repeat', 0.7],
  ]);
  switch (kind) {
    case 'flip':
      return { op: 'flip', at, bit: rng.below(8) };
    case 'set-byte':
      return { op: 'set-byte', at, value: rng.pick([0, 0xff, 0x7f, 0x80, 0x20, 0x22, 0x7b, 0x5b, 0x30, rng.below(256)]) };
    case 'set-int': {
      const width = rng.pick([1, 2, 4, 4, 8, 8] as const);
      const aligned = rng.chance(0.6) ? at - (at % width) : at;
      return { op: 'set-int', at: aligned, width, value: rng.pick(INTERESTING_INTEGERS[width]) };
    }
    case 'set-f32': {
      const f = hints.floats;
      const where = f && f.end - f.start >= 4 && rng.chance(0.8) ? f.start + 4 * rng.below(Math.floor((f.end - f.start) / 4)) : at - (at % 4);
      return { op: 'set-f32', at: where, value: rng.pick(INTERESTING_FLOATS) };
    }
    case 'insert':
      return rng.chance(0.5)
        ? { op: 'insert', at, hex: rng.bytes(rng.between(1, 16)).toString('hex') }
        : { op: 'insert', at, fill: rng.pick([0, 0xff, 0x41, 0x80]), length: rng.pick([1, 7, 64, 1000, 65536]) };
    case 'delete':
      return { op: 'delete', at, length: rng.pick([1, 2, 4, 8, 16, 100, 4096]) };
    case 'truncate':
      return { op: 'truncate', length: rng.chance(0.2) ? 0 : rng.below(size) };
    case 'repeat':
    default:
      return { op: 'repeat', at, length: rng.pick([1, 4, 16, 64]), times: rng.pick([1, 2, 100]) };
  }
}

/** 1 to `max` byte ops. */
export function randomByteOps(rng: Random, size: number, hints: ByteHints = {}, max = 4): ByteOp[] {
  return Array.from({ length: rng.smallCount(max) }, () => randomByteOp(rng, size, hints));
}

// ---------------------------------------------------------------------------------------------
// JSON

/**
 * A value of a JsonOp with its stand-ins made real: long strings built, and text to be written
 * verbatim (`$raw`, `$nest`) held in a marker string that {@link stringifyJson} swaps for it.
 * Only the op's own (small) value is walked, never the document.
 */
function realize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(realize);
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (typeof o.$raw === 'string') return rawMarker(o.$raw);
    if (typeof o.$repeat === 'string' && typeof o.count === 'number') return o.$repeat.repeat(Math.max(0, Math.min(o.count, 1 << 24)));
    if (typeof o.$nest === 'number') {
      const depth = Math.max(0, Math.min(o.$nest, 1 << 20));
      return rawMarker(`${'['.repeat(depth)}${JSON.stringify(o.leaf ?? null)}${']'.repeat(depth)}`);
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, realize(x)]));
  }
  return value;
}

function rawMarker(text: string): string {
  return `\u0001raw:${Buffer.from(text, 'utf8').toString('base64')}\u0001`;
}

/** JSON text of a document, with the verbatim text of `$raw` and `$nest` stand-ins in place. */
export function stringifyJson(value: unknown): string {
  const text = JSON.stringify(value) ?? 'null';
  return text.replace(/"\\u0001raw:([A-Za-z0-9+/=]*)\\u0001"/g, (_, b64: string) => Buffer.from(b64, 'base64').toString('utf8'));
}

type Container = Record<string, unknown> | unknown[];

function isContainer(value: unknown): value is Container {
  return typeof value === 'object' && value !== null;
}

/** The value at `path`, or undefined when the path leads nowhere. */
export function getPath(root: unknown, at: JsonPath): unknown {
  let node = root;
  for (const key of at) {
    if (!isContainer(node)) return undefined;
    if (!Object.prototype.hasOwnProperty.call(node, key)) return undefined;
    node = (node as Record<string, unknown>)[key as string];
  }
  return node;
}

/** A deep copy (stand-ins and all). */
function clone<T>(value: T): T {
  return value === undefined ? value : JSON.parse(JSON.stringify(value));
}

/**
 * Applies one JSON op to a parsed document and returns the document (the root may be replaced).
 * An op whose path no longer leads anywhere (an earlier op removed it) does nothing.
 */
export function applyJsonOp(root: unknown, op: JsonOp): unknown {
  const setAt = (doc: unknown, at: JsonPath, value: unknown): unknown => {
    if (at.length === 0) return value;
    const parent = getPath(doc, at.slice(0, -1));
    const key = at[at.length - 1];
    if (Array.isArray(parent) && typeof key === 'number' && key >= 0 && key <= parent.length) parent[key] = value;
    // defineProperty, so that a key such as __proto__ becomes a key of the JSON like any other.
    else if (isContainer(parent) && !Array.isArray(parent)) Object.defineProperty(parent, String(key), { value, enumerable: true, writable: true, configurable: true });
    return doc;
  };
  switch (op.op) {
    case 'json-set':
      return setAt(root, op.path, realize(clone(op.value)));
    case 'json-delete': {
      if (op.path.length === 0) return undefined;
      const parent = getPath(root, op.path.slice(0, -1));
      const key = op.path[op.path.length - 1];
      if (Array.isArray(parent) && typeof key === 'number') parent.splice(key, 1);
      else if (isContainer(parent)) delete (parent as Record<string, unknown>)[String(key)];
      return root;
    }
    case 'json-duplicate': {
      const parent = getPath(root, op.path.slice(0, -1));
      const key = op.path[op.path.length - 1];
      if (Array.isArray(parent) && typeof key === 'number' && key < parent.length) parent.splice(key + 1, 0, clone(parent[key]));
      return root;
    }
    case 'json-copy': {
      const value = getPath(root, op.from);
      return value === undefined ? root : setAt(root, op.to, clone(value));
    }
    default:
      return root;
  }
}

/**
 * Applies JSON ops to a file's bytes: parsed, mutated, written compactly. Bytes that do not
 * parse, or a document too deeply nested for JSON.stringify (after an earlier `$nest`), are left alone.
 */
export function applyJsonOpsToBytes(data: Buffer, ops: JsonOp[]): Buffer {
  try {
    let doc: unknown = JSON.parse(data.toString('utf8'));
    for (const op of ops) doc = applyJsonOp(doc, op);
    // A deleted root leaves an empty file.
    return doc === undefined ? Buffer.alloc(0) : Buffer.from(stringifyJson(doc), 'utf8');
  } catch {
    return data;
  }
}

/** Every path in a document, to pick from (bounded: a tokenizer's vocabulary has thousands). */
function childKeys(node: unknown): Array<string | number> {
  if (Array.isArray(node)) return node.map((_, i) => i);
  if (isContainer(node)) return Object.keys(node);
  return [];
}

/** A path found by walking down from `start`, stopping at each level with probability `stop`. */
export function randomPath(rng: Random, root: unknown, start: JsonPath = [], stop = 0.3): JsonPath {
  const at = [...start];
  let node = getPath(root, at);
  while (node !== undefined) {
    const keys = childKeys(node);
    if (keys.length === 0 || (at.length > start.length && rng.chance(stop))) break;
    const key = rng.pick(keys);
    at.push(key);
    node = (node as Record<string, unknown>)[key as string];
  }
  return at;
}

/** Strings that trip text handling: empty, control characters, lone surrogates, joiners, bidi, NUL. */
export const EDGE_STRINGS = [
  '', ' ', '\u0000', '\ud800', '\udfff', '\ud83d', '\u200d', '\u202e', '\ufeff', '\uffff', '\u{10ffff}', 'e\u0301\u0301\u0301',
  '👩🏽‍💻', '東京', '\n\r\t', '%s%n', '../../etc/passwd', '{}', '[', '"', '\\', 'a'.repeat(300),
];

/** Numbers that break validation: huge, negative, fractional, beyond the doubles, around the integer limits. */
const EDGE_NUMBERS: unknown[] = [
  0, -1, 1, 2, 0.5, -0.5, 1.5, 255, 256, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 + 2, -(2 ** 53), 1e21, 1e308, -1e308, 5e-324,
  { $raw: '1e309' }, { $raw: '-1e309' }, { $raw: '-0' }, { $raw: '1E400' }, { $raw: '123456789012345678901234567890' },
];

/** A replacement value for `current`: of another type, or an edge of its own type, or a piece of the document elsewhere. */
export function randomJsonValue(rng: Random, current: unknown, dictionary: readonly string[] = []): unknown {
  const kind = rng.weighted<string>([
    ['null', 2], ['bool', 1], ['number', 4], ['string', 3], ['long-string', 1], ['array', 2], ['object', 2], ['nest', 0.5],
    ['dictionary', dictionary.length ? 3 : 0], ['near', typeof current === 'number' ? 4 : 0],
  ]);
  switch (kind) {
    case 'null': return null;
    case 'bool': return rng.chance(0.5);
    case 'number': return rng.pick(EDGE_NUMBERS);
    case 'string': return rng.pick(EDGE_STRINGS);
    case 'long-string': return { $repeat: rng.pick(['a', ' ', 'ab ', '東', '👩🏽‍💻', '\u0301', '<s>', '</s> ']), count: rng.pick([1000, 100_000, 1_000_000]) };
    case 'array': return rng.pick<unknown>([[], [null], [1, 2, 3], ['a', 'b'], [[]], [{}], Array.isArray(current) ? [...current, ...current] : [current]]);
    case 'object':
      return rng.pick<unknown>([{}, { type: null }, { type: rng.pick(dictionary.length ? dictionary : ['x']) }, { '': 1 }, JSON.parse('{"__proto__": {"polluted": true}}')]);
    case 'nest': return { $nest: rng.pick([100, 10_000, 200_000]), leaf: rng.pick([1, 'x', null]) };
    case 'dictionary': return rng.pick(dictionary);
    case 'near':
    default: {
      const n = current as number;
      return rng.pick([n + 1, n - 1, -n, n * 2, n * 1024, n + 0.5, n * 1e300, Math.floor(n / 2), 0]);
    }
  }
}

/** What parts of a document JSON mutations favour, each with a weight. */
export type JsonFocus = ReadonlyArray<readonly [JsonPath, number]>;

/** 1 to `max` JSON ops, starting their paths at the focus points that exist in `doc`. */
export function randomJsonOps(rng: Random, doc: unknown, focus: JsonFocus = [[[], 1]], dictionary: readonly string[] = [], max = 3): JsonOp[] {
  const usable = focus.filter(([at]) => getPath(doc, at) !== undefined);
  const starts: JsonFocus = usable.length ? usable : [[[], 1]];
  const ops: JsonOp[] = [];
  for (let n = rng.smallCount(max); n > 0; n--) {
    const at = randomPath(rng, doc, rng.weighted(starts.map(([p, w]) => [p, w] as const)));
    const kind = rng.weighted<JsonOp['op']>([['json-set', 6], ['json-delete', 2], ['json-duplicate', 1], ['json-copy', 1]]);
    if (kind === 'json-delete') ops.push({ op: 'json-delete', path: at });
    else if (kind === 'json-duplicate' && at.length && typeof at[at.length - 1] === 'number') ops.push({ op: 'json-duplicate', path: at });
    else if (kind === 'json-copy') ops.push({ op: 'json-copy', from: randomPath(rng, doc, [], 0.4), to: at });
    else ops.push({ op: 'json-set', path: at, value: randomJsonValue(rng, getPath(doc, at), dictionary) });
  }
  return ops;
}

// ---------------------------------------------------------------------------------------------
// File system entries

export const FILE_KINDS: FileKind[] = ['missing', 'empty', 'directory', 'fifo', 'symlink-to-fifo', 'symlink-to-directory', 'dangling-symlink', 'symlink-loop'];

function mkfifo(file: string): void {
  execFileSync('mkfifo', [file]);
}

/** Puts a `kind` where the file `file` was (`scratch` is a folder outside the case's directory for link targets). */
export function replaceWithKind(file: string, kind: FileKind, scratch: string): void {
  fs.rmSync(file, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const base = path.basename(file);
  switch (kind) {
    case 'missing':
      return;
    case 'empty':
      fs.writeFileSync(file, '');
      return;
    case 'directory':
      fs.mkdirSync(file);
      return;
    case 'fifo':
      mkfifo(file);
      return;
    case 'symlink-to-fifo': {
      const fifo = path.join(scratch, `${base}.fifo`);
      fs.rmSync(fifo, { force: true });
      mkfifo(fifo);
      fs.symlinkSync(fifo, file);
      return;
    }
    case 'symlink-to-directory':
      fs.symlinkSync(scratch, file);
      return;
    case 'dangling-symlink':
      fs.symlinkSync(path.join(scratch, `${base}.nowhere`), file);
      return;
    case 'symlink-loop':
      fs.symlinkSync(base, file);
      return;
  }
}

/** The bytes at `file` if it is a regular file (links followed), else undefined. */
export function readIfRegular(file: string): Buffer | undefined {
  try {
    return fs.statSync(file).isFile() ? fs.readFileSync(file) : undefined;
  } catch {
    return undefined;
  }
}
