/**
 * Loading a HybridIndex directory (the format is described in index_store.ts). Nothing is
 * trusted: every path must be a regular file (a FIFO would block the open), every size and
 * checksum is verified, every JSON value has its type checked, and each failure is an M3Error
 * (ERR_MODEL_FILES) naming the file and the problem. The HNSW graph file is derived data: it is
 * verified apart (verifyGraph), and rebuilt from the vectors when it fails.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type { NativeIndexState } from '../addon/native';
import { M3Error, describe } from '../base/errors';
import { openRegularFile, readRegularFile, regularFileStats } from '../base/files';
import { MAX_METADATA_DEPTH, freezeJson } from './document_fields';
import { scanHnswGraphFile, type HnswGraphExpectation } from './hnsw_graph_check';
import {
  ARRAY_SECTIONS, FORMAT, MAGIC, MANIFEST, MAX_MANIFEST_BYTES, READABLE_VERSIONS, ROLE, type GraphRef, type IndexMeta, type StoredDocuments,
} from './index_store';

/**
 * Reads a segment of `expected` bytes (any size: readFileSync stops at 2 GiB), checking the size
 * before allocating anything.
 */
function readSegment(file: string, expected: number): Buffer {
  const { fd, stats } = openRegularFile(file, ROLE);
  try {
    if (stats.size !== expected) fail(file, `has ${stats.size} bytes but MANIFEST says ${expected}: it is truncated or was changed.`);
    let out: Buffer;
    try {
      out = Buffer.allocUnsafe(expected);
    } catch (err) {
      throw new M3Error('ERR_MODEL_FILES', `Index file '${file}' has ${expected} bytes, more than this process can hold in one buffer.`, { cause: err });
    }
    let done = 0;
    while (done < expected) {
      let n: number;
      try {
        n = fs.readSync(fd, out, done, Math.min(1 << 30, expected - done), done);
      } catch (err) {
        throw new M3Error('ERR_MODEL_FILES', `Index file '${file}' cannot be read (${(err as Error).message}).`, { cause: err });
      }
      if (n === 0) fail(file, `ended after ${done} of its ${expected} bytes while it was read: it was changed.`);
      done += n;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** CRC-32 of any size (zlib.crc32 takes at most 2 GiB at a time). */
function crcOf(data: Buffer): number {
  let crc = 0;
  for (let at = 0; at < data.length; at += 1 << 30) crc = zlib.crc32(data.subarray(at, Math.min(data.length, at + (1 << 30))), crc);
  return crc;
}

function fail(file: string, problem: string): never {
  throw new M3Error('ERR_MODEL_FILES', `Index file '${file}' ${problem}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A graph file that passed every check, still open at `fd` (the caller closes it), or why it is unusable. */
export type VerifiedGraph = { file: string; fd: number; why?: undefined } | { file: string; fd?: undefined; why: string };

/**
 * Opens the graph file a MANIFEST names and checks it completely before anyone trusts it: a
 * regular file, of the recorded size and checksum, and an HNSW graph that `expected` describes
 * (see hnsw_graph_check.ts), all in one pass over the file. When any of that fails, `why` says
 * what (the caller rebuilds the graph from the vectors).
 */
export function verifyGraph(dir: string, ref: GraphRef, expected: HnswGraphExpectation): VerifiedGraph {
  const file = path.join(dir, ref.file);
  let opened: { fd: number; stats: fs.Stats };
  try {
    if (!regularFileStats(file, 'the graph file')) return { file, why: `'${file}' is missing` };
    opened = openRegularFile(file, 'the graph file');
  } catch (err) {
    // The message ends a sentence of its own; here it ends the warning's.
    return { file, why: (err as Error).message.replace(/\.$/, '') };
  }
  const { fd, stats } = opened;
  let why: string | undefined;
  try {
    if (stats.size !== ref.bytes) {
      why = `'${file}' has ${stats.size} bytes but MANIFEST says ${ref.bytes}`;
    } else {
      const scan = scanHnswGraphFile(fd, stats.size, expected);
      // The checksum first: a mismatch is most likely an accident, and says so more plainly.
      if (scan.crc32 !== ref.crc32) why = `'${file}' does not match its checksum in MANIFEST`;
      else if (scan.problem) why = `'${file}' is not a graph this index can load: ${scan.problem}`;
    }
  } catch (err) {
    why = `'${file}' could not be read: ${(err as Error).message}`;
  }
  if (why === undefined) return { file, fd };
  fs.closeSync(fd);
  return { file, why };
}

/** What {@link loadIndex} reads from an index directory. */
export interface LoadedIndex {
  meta: IndexMeta;
  ids: Array<string | number>;
  state: NativeIndexState;
  /** Texts and metadata by slot (a version-1 segment has none). */
  documents: StoredDocuments & { metadata: Array<Record<string, unknown> | undefined> };
  /** The segment file, for messages about its contents. */
  segment: string;
  /** The graph file MANIFEST names, not yet verified (see verifyGraph). */
  graph?: GraphRef;
  /** Why MANIFEST's graph entry is unusable, when it has one that is. */
  graphProblem?: string;
}

/** Reads and verifies an index directory (the graph file, if any, is verified by verifyGraph). */
export function loadIndex(dir: string, retried = false): LoadedIndex {
  const { manifest, manifestFile } = readManifest(dir);
  const file = path.join(dir, manifest.segment as string);
  if (!regularFileStats(file, ROLE)) {
    // A save may have swapped MANIFEST between our read and now; read it once more.
    if (!retried) return loadIndex(dir, true);
    fail(file, 'is missing (named by MANIFEST); the directory is incomplete.');
  }
  const bytes = readSegment(file, manifest.bytes as number);
  if (crcOf(bytes) !== manifest.crc32) fail(file, 'does not match its checksum in MANIFEST: it is corrupted.');
  const { sections, version } = readSections(file, bytes);
  const section = (name: string) => sections.get(name) ?? fail(file, `has no '${name}' section.`);
  let meta: unknown;
  let ids: unknown;
  try {
    meta = JSON.parse(section('meta').toString('utf8'));
    ids = JSON.parse(section('ids').toString('utf8'));
  } catch (err) {
    if (err instanceof M3Error) throw err;
    fail(file, `has an unreadable meta or ids section (${(err as Error).message}).`);
  }
  checkMeta(meta, file);
  checkIds(ids, meta.count, file);
  const documents = version >= 2 ? storedDocuments(section, ids.length, file)
    : { texts: new Array<undefined>(ids.length).fill(undefined), metadata: new Array<undefined>(ids.length).fill(undefined) };
  const loaded: LoadedIndex = { meta, ids, state: arraySections(section, file), documents, segment: file };
  const g = manifest.graph;
  if (isRecord(g) && typeof g.file === 'string' && /^graph-[\w-]+\.usearch$/.test(g.file) && Number.isSafeInteger(g.bytes) && Number.isInteger(g.crc32)) {
    loaded.graph = { file: g.file, bytes: g.bytes as number, crc32: g.crc32 as number };
  } else if (g !== undefined) {
    loaded.graphProblem = `'${manifestFile}' names its graph file as ${describe(g)}, not { file, bytes, crc32 }`;
  }
  return loaded;
}

/** The directory's MANIFEST, checked: this format and version, a segment file's name, size and CRC-32. */
function readManifest(dir: string): { manifest: Record<string, unknown>; manifestFile: string } {
  const manifestFile = path.join(dir, MANIFEST);
  if (!regularFileStats(manifestFile, ROLE)) {
    throw new M3Error('ERR_MODEL_FILES', `'${dir}' is not a bge-m3 index: it has no ${MANIFEST} file (save one with index.save(dir)).`);
  }
  const text = readRegularFile(manifestFile, ROLE, MAX_MANIFEST_BYTES).toString('utf8');
  let manifest: unknown;
  try {
    manifest = JSON.parse(text);
  } catch (err) {
    fail(manifestFile, `is not valid JSON (${(err as Error).message}); the directory is corrupted.`);
  }
  if (!isRecord(manifest)) fail(manifestFile, `holds ${describe(manifest)}, not a JSON object; the directory is corrupted.`);
  if (manifest.format !== FORMAT) fail(manifestFile, `is not a bge-m3 index manifest (format ${describe(manifest.format)}).`);
  if (!READABLE_VERSIONS.includes(manifest.version as number)) {
    fail(manifestFile, `has format version ${typeof manifest.version === 'number' ? manifest.version : describe(manifest.version)}; ` +
      `this bge-m3 reads versions ${READABLE_VERSIONS.join(' and ')}. Rebuild the index with this version.`);
  }
  if (typeof manifest.segment !== 'string' || !/^segment-[\w-]+\.bin$/.test(manifest.segment)) fail(manifestFile, 'names no valid segment file.');
  const { bytes: segmentBytes, crc32: segmentCrc } = manifest;
  if (!Number.isSafeInteger(segmentBytes) || (segmentBytes as number) < 16) {
    fail(manifestFile, `gives the segment's size as ${describe(segmentBytes)}, not a byte count; the directory is corrupted.`);
  }
  if (!Number.isInteger(segmentCrc) || (segmentCrc as number) < 0 || (segmentCrc as number) > 0xffffffff) {
    fail(manifestFile, `gives the segment's checksum as ${describe(segmentCrc)}, not a CRC-32; the directory is corrupted.`);
  }
  return { manifest, manifestFile };
}

/** A segment's version and sections by name, each checked against its CRC-32, after its magic and version. */
function readSections(file: string, bytes: Buffer): { sections: Map<string, Buffer>; version: number } {
  if (!bytes.subarray(0, 8).equals(MAGIC)) fail(file, 'does not start with the bge-m3 index magic.');
  const version = bytes.readUInt32LE(8);
  if (!READABLE_VERSIONS.includes(version)) fail(file, `has format version ${version}; this bge-m3 reads versions ${READABLE_VERSIONS.join(' and ')}.`);
  const count = bytes.readUInt32LE(12);
  const sections = new Map<string, Buffer>();
  let at = 16;
  for (let i = 0; i < count; i++) {
    if (at + 32 > bytes.length) fail(file, `ends inside section header ${i}.`);
    const name = bytes.toString('latin1', at, at + 16).replace(/\0+$/, '');
    const length = Number(bytes.readBigUInt64LE(at + 16));
    const crc = bytes.readUInt32LE(at + 24);
    at += 32;
    if (at + length > bytes.length) fail(file, `section '${name}' runs past the end of the file.`);
    const data = bytes.subarray(at, at + length);
    if (crcOf(data) !== crc) fail(file, `section '${name}' does not match its checksum.`);
    sections.set(name, data);
    at += length + ((8 - (length % 8)) % 8);
  }
  return { sections, version };
}

/**
 * The values of a JSON Lines section (see index_store.ts): exactly `count` lines, each ending
 * in a newline (JSON escapes the newlines inside strings, so none is part of a value).
 */
function jsonLines(section: (name: string) => Buffer, name: string, count: number, file: string): unknown[] {
  const data = section(name);
  const values: unknown[] = [];
  for (let at = 0; at < data.length;) {
    const end = data.indexOf(0x0a, at);
    if (end < 0) fail(file, `section '${name}' does not end with a newline after its last line: it is truncated or corrupted.`);
    if (values.length === count) fail(file, `section '${name}' has more than ${count} lines for ${count} documents.`);
    try {
      values.push(JSON.parse(data.toString('utf8', at, end)));
    } catch (err) {
      fail(file, `section '${name}' line ${values.length + 1} is not valid JSON (${(err as Error).message}).`);
    }
    at = end + 1;
  }
  if (values.length !== count) fail(file, `section '${name}' has ${values.length} lines for ${count} documents.`);
  return values;
}

/** Texts and metadata by slot from their sections, each of the right JSON type (null: none). */
function storedDocuments(section: (name: string) => Buffer, count: number, file: string): LoadedIndex['documents'] {
  const texts = jsonLines(section, 'texts', count, file).map((text, slot) => {
    if (text !== null && typeof text !== 'string') fail(file, `has stored text ${slot} ${describe(text)}, not a string or null: the texts section is corrupted.`);
    return text ?? undefined;
  });
  const metadata = jsonLines(section, 'metadata', count, file).map((m, slot) => {
    if (m !== null && !isRecord(m)) fail(file, `has stored metadata ${slot} ${describe(m)}, not a JSON object or null: the metadata section is corrupted.`);
    // Frozen, as add() keeps metadata (document_fields.ts).
    if (!freezeJson(m)) fail(file, `has stored metadata ${slot} nested more than ${MAX_METADATA_DEPTH} levels deep: the metadata section is corrupted.`);
    return m === null ? undefined : m;
  });
  return { texts, metadata };
}

/** The index's arrays from their sections, each a whole number of elements, copied to be aligned for its type. */
function arraySections(section: (name: string) => Buffer, file: string): NativeIndexState {
  const state = {} as Record<string, ArrayBufferView>;
  for (const [name, Type] of ARRAY_SECTIONS) {
    const data = section(name);
    const size = (Type as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
    if (data.length % size !== 0) fail(file, `section '${name}' has a length that is not a whole number of elements.`);
    const copy = new ArrayBuffer(data.length);
    new Uint8Array(copy).set(data);
    state[name] = new Type(copy, 0, data.length / size);
  }
  return state as unknown as NativeIndexState;
}

/** Throws (naming the segment `file`) unless `meta` has every field of IndexMeta, each of the right JSON type. */
function checkMeta(meta: unknown, file: string): asserts meta is IndexMeta {
  if (!isRecord(meta)) fail(file, `has a meta section holding ${describe(meta)}, not a JSON object.`);
  const invalid = (field: string, value: unknown, expected: string): never =>
    fail(file, `has an invalid meta section: ${field} is ${describe(value)}, not ${expected}.`);
  const positiveInteger = (field: string, value: unknown) => {
    if (!Number.isSafeInteger(value) || (value as number) < 1) invalid(field, value, 'a positive integer');
  };
  positiveInteger('dim', meta.dim);
  positiveInteger('vocabSize', meta.vocabSize);
  // Slots are u32.
  if (!Number.isSafeInteger(meta.count) || (meta.count as number) < 0 || (meta.count as number) > 0xffffffff) {
    invalid('count', meta.count, 'a document count');
  }
  if (![false, 'f32', 'bf16', 'i8'].includes(meta.colbert as string | false)) invalid('colbert', meta.colbert, "false, 'f32', 'bf16' or 'i8'");
  if (![undefined, 'exact', 'hnsw'].includes(meta.dense as string | undefined)) invalid('dense', meta.dense, "'exact' or 'hnsw'");
  const model = meta.model;
  if (model !== undefined) {
    if (!isRecord(model)) return invalid('model', model, 'an object { dim, vocabSize, layout? }');
    positiveInteger('model.dim', model.dim);
    positiveInteger('model.vocabSize', model.vocabSize);
    if (model.layout !== undefined && typeof model.layout !== 'string') invalid('model.layout', model.layout, 'a string');
    if (model.name !== undefined && typeof model.name !== 'string') invalid('model.name', model.name, 'a string');
  }
}

/** Throws (naming the segment `file`) unless `ids` is `count` distinct ids, each a string or a safe integer. */
function checkIds(ids: unknown, count: number, file: string): asserts ids is Array<string | number> {
  if (!Array.isArray(ids) || ids.length !== count) fail(file, `lists ${Array.isArray(ids) ? ids.length : 'no'} ids for ${count} documents.`);
  const seen = new Set<string | number>();
  ids.forEach((id: unknown, slot) => {
    if (typeof id !== 'string' && !(typeof id === 'number' && Number.isSafeInteger(id))) {
      fail(file, `has stored id ${slot} ${describe(id)}, not a string or a safe integer: the ids section is corrupted.`);
    }
    if (seen.has(id)) fail(file, `lists id ${JSON.stringify(id)} twice.`);
    seen.add(id);
  });
}
