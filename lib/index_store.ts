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
 * that is missing or fails its checksum is rebuilt from the vectors instead of failing the load.
 *
 * save (holding the directory's LOCK, so concurrent saves take turns): write the new segment under
 * a fresh name and fsync it; write a uniquely named MANIFEST temp file, fsync, rename it over
 * MANIFEST, fsync the directory; only then delete older segments, keeping the previous one for
 * readers that read the old MANIFEST. load trusts nothing: every size and checksum is verified
 * and each failure names the file and the problem.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as zlib from 'node:zlib';
import { M3Error, fromNative } from './errors';
import { native } from './native';
import type { NativeIndexState } from './native';

export const FORMAT = 'bge-m3-hybrid-index';
export const VERSION = 1;
const MAGIC = Buffer.from('BGEM3IDX', 'latin1');
const MANIFEST = 'MANIFEST';

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

function writeFileSynced(file: string, chunks: Buffer[]): void {
  const fd = fs.openSync(file, 'w');
  try {
    for (const chunk of chunks) {
      let done = 0;
      while (done < chunk.length) done += fs.writeSync(fd, chunk, done, chunk.length - done);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function fsyncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
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
  const fd = fs.openSync(file, 'r');
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

function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.fsyncSync(fd);
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
    fsyncFile(path.join(dir, file));
    graph = { file, ...fileChecksum(path.join(dir, file)) };
  }
  const previous = currentManifest(dir);
  const manifest = {
    format: FORMAT, version: VERSION, segment, bytes: size, crc32: crc, graph,
    previous: typeof previous?.segment === 'string' ? previous.segment : undefined,
    previousGraph: typeof previous?.graph?.file === 'string' ? previous.graph.file : undefined,
  };
  const tmp = path.join(dir, `${MANIFEST}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  writeFileSynced(tmp, [Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`)]);
  fs.renameSync(tmp, path.join(dir, MANIFEST));
  fsyncDirectory(dir);
  // The previous generation stays for readers that read the old MANIFEST just before the swap.
  const keep = new Set([segment, manifest.previous, graph?.file, manifest.previousGraph]);
  for (const name of fs.readdirSync(dir)) {
    if ((/^segment-.*\.bin$/.test(name) || /^graph-.*\.usearch$/.test(name)) && !keep.has(name)) fs.rmSync(path.join(dir, name), { force: true });
  }
}

/** The current MANIFEST, if there is a readable one. */
function currentManifest(dir: string): { segment?: unknown; graph?: { file?: unknown } } | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8'));
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
 * release.
 */
export function withDirectoryLock<T>(dir: string, fn: () => T, timeoutMs = 10 * 60 * 1000): T {
  fs.mkdirSync(dir, { recursive: true });
  const lock = path.join(dir, 'LOCK');
  const deadline = Date.now() + timeoutMs;
  let fd: number;
  try {
    while ((fd = native().tryLockFile(lock)) < 0) {
      if (Date.now() > deadline) {
        let holder = '';
        try {
          holder = fs.readFileSync(lock, 'utf8').trim();
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

/** Reads a file of any size (readFileSync stops at 2 GiB) into one buffer. */
function readWhole(file: string): Buffer {
  const size = fs.statSync(file).size;
  const out = Buffer.allocUnsafe(size);
  const fd = fs.openSync(file, 'r');
  try {
    let done = 0;
    while (done < size) {
      const n = fs.readSync(fd, out, done, Math.min(1 << 30, size - done), done);
      if (n === 0) break;
      done += n;
    }
    return done === size ? out : out.subarray(0, done);
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

/**
 * The graph file a MANIFEST names, when it is there with the recorded size and checksum; else
 * undefined and `why` says what is wrong (the caller rebuilds the graph from the vectors).
 */
export function verifyGraph(dir: string, ref: GraphRef): { file?: string; why?: string } {
  const file = path.join(dir, ref.file);
  if (!fs.existsSync(file)) return { why: `'${file}' is missing` };
  const { bytes, crc32 } = fileChecksum(file);
  if (bytes !== ref.bytes) return { why: `'${file}' has ${bytes} bytes but MANIFEST says ${ref.bytes}` };
  if (crc32 !== ref.crc32) return { why: `'${file}' does not match its checksum in MANIFEST` };
  return { file };
}

/** Reads and verifies an index directory (the graph file, if any, is verified by verifyGraph). */
export function loadIndex(dir: string, retried = false): { meta: IndexMeta; ids: unknown[]; state: NativeIndexState; graph?: GraphRef } {
  const manifestFile = path.join(dir, MANIFEST);
  if (!fs.existsSync(manifestFile)) {
    throw new M3Error('ERR_MODEL_FILES', `'${dir}' is not a bge-m3 index: it has no ${MANIFEST} file (save one with index.save(dir)).`);
  }
  let manifest: { format?: unknown; version?: unknown; segment?: unknown; bytes?: unknown; crc32?: unknown; graph?: unknown };
  try {
    manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  } catch (err) {
    fail(manifestFile, `is not valid JSON (${(err as Error).message}); the directory is corrupted.`);
  }
  if (manifest.format !== FORMAT) fail(manifestFile, `is not a bge-m3 index manifest (format ${JSON.stringify(manifest.format)}).`);
  if (manifest.version !== VERSION) {
    fail(manifestFile, `has format version ${String(manifest.version)}; this bge-m3 reads version ${VERSION}. Rebuild the index with this version.`);
  }
  if (typeof manifest.segment !== 'string' || !/^segment-[\w-]+\.bin$/.test(manifest.segment)) fail(manifestFile, 'names no valid segment file.');
  const file = path.join(dir, manifest.segment);
  if (!fs.existsSync(file)) {
    // A save may have swapped MANIFEST between our read and now; read it once more.
    if (!retried) return loadIndex(dir, true);
    fail(file, 'is missing (named by MANIFEST); the directory is incomplete.');
  }
  const bytes = readWhole(file);
  if (bytes.length !== manifest.bytes) fail(file, `has ${bytes.length} bytes but MANIFEST says ${String(manifest.bytes)}: it is truncated or was changed.`);
  if (crcOf(bytes) !== manifest.crc32) fail(file, 'does not match its checksum in MANIFEST: it is corrupted.');
  if (bytes.length < 16 || !bytes.subarray(0, 8).equals(MAGIC)) fail(file, 'does not start with the bge-m3 index magic.');
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
  let meta: IndexMeta;
  let ids: unknown[];
  try {
    meta = JSON.parse(section('meta').toString('utf8'));
    ids = JSON.parse(section('ids').toString('utf8'));
  } catch (err) {
    fail(file, `has an unreadable meta or ids section (${(err as Error).message}).`);
  }
  if (!meta || typeof meta !== 'object' || !Number.isInteger(meta.dim) || !Number.isInteger(meta.vocabSize) ||
      !Number.isInteger(meta.count) || ![false, 'f32', 'bf16', 'i8'].includes(meta.colbert as string | false) ||
      ![undefined, 'exact', 'hnsw'].includes(meta.dense)) {
    fail(file, 'has an invalid meta section (dim, vocabSize, count, colbert, dense).');
  }
  if (!Array.isArray(ids) || ids.length !== meta.count) fail(file, `lists ${Array.isArray(ids) ? ids.length : 'no'} ids for ${meta.count} documents.`);
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
  const g = manifest.graph as Partial<GraphRef> | undefined;
  const graph = g && typeof g === 'object' && typeof g.file === 'string' && /^graph-[\w-]+\.usearch$/.test(g.file) &&
    Number.isSafeInteger(g.bytes) && Number.isInteger(g.crc32) ? g as GraphRef : undefined;
  return { meta, ids, state: state as unknown as NativeIndexState, graph };
}
