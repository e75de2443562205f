/**
 * On-disk format of a HybridIndex, written so that a crash at any moment leaves either the old
 * index or the new one.
 *
 * A directory holds `MANIFEST` (JSON: format, version, the segment file's name, size and
 * CRC-32) and one `segment-<id>.bin`. A segment is "BGEM3IDX", a u32 version, a u32 section
 * count, then per section a 16-byte name, a u64 length, a u32 CRC-32 and 4 bytes of padding,
 * followed by the data padded to 8 bytes. Sections: `meta` (JSON: dims, vocabulary, ColBERT
 * format, model identity, count, dense route), `ids` (JSON array) and the index's arrays. An
 * index with the approximate dense route also has `graph-<id>.usearch` (the HNSW graph as usearch
 * saves it, keyed by slot), named in MANIFEST with its size and CRC-32: derived data, so a graph
 * that is missing, fails its checksum or fails the structural check usearch's loader needs (see
 * hnsw_graph_check.ts) is rebuilt from the vectors instead of failing the load.
 *
 * save (holding the directory's LOCK, so concurrent saves take turns): write the new segment under
 * a fresh name and fsync it; write a uniquely named MANIFEST temp file, fsync, rename it over
 * MANIFEST, fsync the directory; only then delete older segments, keeping the previous one for
 * readers that read the old MANIFEST. load trusts nothing: every path must be a regular file (a
 * FIFO would block the open), every size and checksum is verified, every JSON value has its type
 * checked, and each failure is an M3Error (ERR_MODEL_FILES) naming the file and the problem.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as zlib from 'node:zlib';
import { M3Error, describe, fromNative } from '../base/errors';
import { describeFileKind, fsyncFile, openRegularFile, readRegularFile, regularFileStats, replaceFileSynced, writeFileSynced } from '../base/files';
import { scanHnswGraphFile, type HnswGraphExpectation } from './hnsw_graph_check';
import { native } from '../addon/native';
import type { NativeIndexState } from '../addon/native';

export const FORMAT = 'bge-m3-hybrid-index';
export const VERSION = 1;
const MAGIC = Buffer.from('BGEM3IDX', 'latin1');
const MANIFEST = 'MANIFEST';
// A MANIFEST is a few hundred bytes; anything far larger is not one, and is not read into memory.
const MAX_MANIFEST_BYTES = 1 << 20;
// How messages about these files name them.
const ROLE = 'Index file';

/** What identifies the model an index was built with. */
export interface ModelIdentity {
  dim: number;
  vocabSize: number;
  layout?: string;
}

export interface IndexMeta {
  dim: number;
  vocabSize: number;
  colbert: 'f32' | 'bf16' | 'i8' | false;
  count: number;
  model?: ModelIdentity;
  /** The dense route the index was saved with (absent: 'exact'). */
  dense?: 'exact' | 'hnsw';
}

/** Writes the HNSW graph to a file (the approximate dense route's own format). */
export type GraphWriter = (file: string) => void;

/** A graph file named by MANIFEST, not yet verified (see verifyGraph). */
export interface GraphRef {
  file: string;
  bytes: number;
  crc32: number;
}

type SectionName = keyof NativeIndexState | 'meta' | 'ids';
const ARRAY_SECTIONS: Array<[keyof NativeIndexState, new (buffer: ArrayBuffer, offset: number, length: number) => ArrayBufferView]> = [
  ['dense', Float32Array], ['sparseOffsets', Uint32Array], ['sparseIds', Uint32Array], ['sparseWeights', Float32Array],
  ['colbertOffsets', Uint32Array], ['colbertF32', Float32Array], ['colbertBf16', Uint16Array], ['colbertI8', Int8Array],
  ['colbertScales', Float32Array],
];

function bytesOf(view: ArrayBufferView): Buffer {
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

/**
 * Writes an index directory atomically (see the file comment); saves to one directory take turns.
 * `graph` writes the HNSW graph, for an index with the approximate dense route.
 */
export function saveIndex(dir: string, meta: IndexMeta, ids: unknown[], state: NativeIndexState, graph?: GraphWriter): void {
  withDirectoryLock(dir, () => writeSegmentAndManifest(dir, meta, ids, state, graph));
}

/** Size and CRC-32 of a file, read in pieces (a graph can be larger than a Buffer). */
function fileChecksum(file: string): { bytes: number; crc32: number } {
  const { fd } = openRegularFile(file, ROLE);
  try {
    const piece = Buffer.allocUnsafe(16 << 20);
    let crc = 0;
    let bytes = 0;
    for (let n; (n = fs.readSync(fd, piece, 0, piece.length, bytes)) > 0; bytes += n) crc = zlib.crc32(piece.subarray(0, n), crc);
    return { bytes, crc32: crc };
  } finally {
    fs.closeSync(fd);
  }
}

function writeSegmentAndManifest(dir: string, meta: IndexMeta, ids: unknown[], state: NativeIndexState, writeGraph?: GraphWriter): void {
  const sections: Array<[SectionName, Buffer]> = [
    ['meta', Buffer.from(JSON.stringify(meta), 'utf8')],
    ['ids', Buffer.from(JSON.stringify(ids), 'utf8')],
    ...ARRAY_SECTIONS.map(([name]) => [name, bytesOf(state[name])] as [SectionName, Buffer]),
  ];
  const head = Buffer.alloc(16);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(VERSION, 8);
  head.writeUInt32LE(sections.length, 12);
  const chunks: Buffer[] = [head];
  for (const [name, data] of sections) {
    const entry = Buffer.alloc(32);
    entry.write(name, 0, 16, 'latin1');
    entry.writeBigUInt64LE(BigInt(data.length), 16);
    entry.writeUInt32LE(zlib.crc32(data), 24);
    chunks.push(entry, data, Buffer.alloc((8 - (data.length % 8)) % 8));
  }
  const generation = `${Date.now().toString(36)}-${crypto.randomBytes(4).toString('hex')}`;
  const segment = `segment-${generation}.bin`;
  writeFileSynced(path.join(dir, segment), chunks);
  const size = chunks.reduce((n, c) => n + c.length, 0);
  // Empty chunks are skipped: zlib.crc32 of an empty view of a zero-length native buffer
  // returns 0 instead of the running value.
  const crc = chunks.reduce((c, chunk) => (chunk.length ? zlib.crc32(chunk, c) : c), 0);
  let graph: GraphRef | undefined;
  if (writeGraph) {
    const file = `graph-${generation}.usearch`;
    writeGraph(path.join(dir, file));
    fsyncFile(path.join(dir, file), ROLE);
    graph = { file, ...fileChecksum(path.join(dir, file)) };
  }
  const previous = currentManifest(dir);
  const manifest = {
    format: FORMAT, version: VERSION, segment, bytes: size, crc32: crc, graph,
    previous: typeof previous?.segment === 'string' ? previous.segment : undefined,
    previousGraph: typeof previous?.graph?.file === 'string' ? previous.graph.file : undefined,
  };
  replaceFileSynced(path.join(dir, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  // The previous generation stays for readers that read the old MANIFEST just before the swap.
  const keep = new Set([segment, manifest.previous, graph?.file, manifest.previousGraph]);
  for (const name of fs.readdirSync(dir)) {
    if ((/^segment-.*\.bin$/.test(name) || /^graph-.*\.usearch$/.test(name)) && !keep.has(name)) fs.rmSync(path.join(dir, name), { force: true });
  }
}

/** The current MANIFEST, if there is a readable one. */
function currentManifest(dir: string): { segment?: unknown; graph?: { file?: unknown } } | undefined {
  try {
    const m = JSON.parse(readRegularFile(path.join(dir, MANIFEST), ROLE, MAX_MANIFEST_BYTES).toString('utf8'));
    return m && typeof m === 'object' ? m : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs `fn` holding the directory's LOCK, so saves from several processes (and several index
 * objects in one process) take turns: an exclusive flock on the file LOCK, which the kernel
 * releases when its holder exits, however it exits, so a killed save never leaves a lock that
 * others must guess is stale. LOCK holds the holder's process id, for people; it is removed on
 * release. A LOCK that is anything but a regular file (a FIFO, a directory, a symbolic link) was
 * not made by a save, and is refused rather than opened, truncated and written to.
 */
export function withDirectoryLock<T>(dir: string, fn: () => T, timeoutMs = 10 * 60 * 1000): T {
  fs.mkdirSync(dir, { recursive: true });
  const lock = path.join(dir, 'LOCK');
  const deadline = Date.now() + timeoutMs;
  let fd = -1;
  try {
    for (;;) {
      refuseForeignLock(lock);
      if ((fd = native().tryLockFile(lock)) >= 0) break;
      if (Date.now() > deadline) {
        let holder = '';
        try {
          holder = readRegularFile(lock, ROLE, 64).toString('utf8').trim();
        } catch {
          // gone already: say nothing about who held it
        }
        throw new M3Error('ERR_RUNTIME', `'${lock}' stayed locked for ${Math.round(timeoutMs / 1000)} s${holder ? ` by process ${holder}` : ''}; ` +
          'another save to this index directory is still running.');
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  } catch (err) {
    throw fromNative(err);
  }
  try {
    // Inside the lock no other save runs: a MANIFEST temp file here is a killed save's leftover.
    for (const name of fs.readdirSync(dir)) {
      if (/^MANIFEST\..*\.tmp$/.test(name) || /^LOCK\.\d+\.\w+$/.test(name)) fs.rmSync(path.join(dir, name), { force: true });
    }
    return fn();
  } finally {
    native().unlockFile(fd, lock, true);
  }
}

/**
 * Throws unless `lock` is absent or a regular file. lstat, not stat: the lock is created here and
 * is never a link, and opening a link would truncate whatever file it points to.
 */
function refuseForeignLock(lock: string): void {
  let stats: fs.Stats;
  try {
    stats = fs.lstatSync(lock);
  } catch {
    return;
  }
  if (!stats.isFile()) {
    throw new M3Error('ERR_MODEL_FILES', `'${lock}' is ${describeFileKind(stats)}, not the lock file bge-m3 creates there; remove it, then save again.`);
  }
}

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
  /** The segment file, for messages about its contents. */
  segment: string;
  /** The graph file MANIFEST names, not yet verified (see verifyGraph). */
  graph?: GraphRef;
  /** Why MANIFEST's graph entry is unusable, when it has one that is. */
  graphProblem?: string;
}

/** Reads and verifies an index directory (the graph file, if any, is verified by verifyGraph). */
export function loadIndex(dir: string, retried = false): LoadedIndex {
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
  if (manifest.version !== VERSION) {
    fail(manifestFile, `has format version ${typeof manifest.version === 'number' ? manifest.version : describe(manifest.version)}; this bge-m3 reads version ${VERSION}. Rebuild the index with this version.`);
  }
  if (typeof manifest.segment !== 'string' || !/^segment-[\w-]+\.bin$/.test(manifest.segment)) fail(manifestFile, 'names no valid segment file.');
  const { bytes: segmentBytes, crc32: segmentCrc } = manifest;
  if (!Number.isSafeInteger(segmentBytes) || (segmentBytes as number) < 16) {
    fail(manifestFile, `gives the segment's size as ${describe(segmentBytes)}, not a byte count; the directory is corrupted.`);
  }
  if (!Number.isInteger(segmentCrc) || (segmentCrc as number) < 0 || (segmentCrc as number) > 0xffffffff) {
    fail(manifestFile, `gives the segment's checksum as ${describe(segmentCrc)}, not a CRC-32; the directory is corrupted.`);
  }
  const file = path.join(dir, manifest.segment);
  if (!regularFileStats(file, ROLE)) {
    // A save may have swapped MANIFEST between our read and now; read it once more.
    if (!retried) return loadIndex(dir, true);
    fail(file, 'is missing (named by MANIFEST); the directory is incomplete.');
  }
  const bytes = readSegment(file, segmentBytes as number);
  if (crcOf(bytes) !== segmentCrc) fail(file, 'does not match its checksum in MANIFEST: it is corrupted.');
  if (!bytes.subarray(0, 8).equals(MAGIC)) fail(file, 'does not start with the bge-m3 index magic.');
  const version = bytes.readUInt32LE(8);
  if (version !== VERSION) fail(file, `has format version ${version}; this bge-m3 reads version ${VERSION}.`);
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
  const state = {} as Record<string, ArrayBufferView>;
  for (const [name, Type] of ARRAY_SECTIONS) {
    const data = section(name);
    const size = (Type as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
    if (data.length % size !== 0) fail(file, `section '${name}' has a length that is not a whole number of elements.`);
    // A copy, aligned for its element type.
    const copy = new ArrayBuffer(data.length);
    new Uint8Array(copy).set(data);
    state[name] = new Type(copy, 0, data.length / size);
  }
  const loaded: LoadedIndex = { meta, ids, state: state as unknown as NativeIndexState, segment: file };
  const g = manifest.graph;
  if (isRecord(g) && typeof g.file === 'string' && /^graph-[\w-]+\.usearch$/.test(g.file) && Number.isSafeInteger(g.bytes) && Number.isInteger(g.crc32)) {
    loaded.graph = { file: g.file, bytes: g.bytes as number, crc32: g.crc32 as number };
  } else if (g !== undefined) {
    loaded.graphProblem = `'${manifestFile}' names its graph file as ${describe(g)}, not { file, bytes, crc32 }`;
  }
  return loaded;
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
