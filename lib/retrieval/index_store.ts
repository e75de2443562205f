/**
 * On-disk format of a HybridIndex, written so that a crash at any moment leaves either the old
 * index or the new one.
 *
 * A directory holds `MANIFEST` (JSON: format, version, the segment file's name, size and
 * CRC-32) and one `segment-<id>.bin`. A segment is "BGEM3IDX", a u32 version, a u32 section
 * count, then per section a 16-byte name, a u64 length, a u32 CRC-32 and 4 bytes of padding,
 * followed by the data padded to 8 bytes. Sections: `meta` (JSON: dims, vocabulary, ColBERT
 * format, model identity, count, dense route), `ids` (JSON array), the index's arrays, and, from
 * version 2, `texts` and `metadata`: one JSON value per line (JSON Lines), line i for the
 * document of ids[i], `null` where it has none; a text is a JSON string, metadata a JSON object.
 * They are lines rather than one JSON array so that neither is bounded by the size of one
 * JavaScript string (a corpus's texts easily pass 512 MiB). Version 1 segments (no texts or
 * metadata) still load. An index with the approximate dense route also has
 * `graph-<id>.usearch` (the HNSW graph as usearch saves it, keyed by slot), named in MANIFEST
 * with its size and CRC-32: derived data, so a graph that is missing, fails its checksum or
 * fails the structural check usearch's loader needs (see hnsw_graph_check.ts) is rebuilt from
 * the vectors instead of failing the load.
 *
 * save (holding the directory's LOCK, so concurrent saves take turns): write the new segment under
 * a fresh name and fsync it; write a uniquely named MANIFEST temp file, fsync, rename it over
 * MANIFEST, fsync the directory; only then delete older segments, keeping the previous one for
 * readers that read the old MANIFEST. load trusts nothing: every path must be a regular file (a
 * FIFO would block the open), every size and checksum is verified, every JSON value has its type
 * checked, and each failure is an M3Error (ERR_MODEL_FILES) naming the file and the problem.
 *
 * This file has the format and the save; index_load.ts the load.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as zlib from 'node:zlib';
import { M3Error, fromNative } from '../base/errors';
import { describeFileKind, fsyncFile, openRegularFile, readRegularFile, replaceFileSynced, writeFileSynced } from '../base/files';
import { native } from '../addon/native';
import type { NativeIndexState } from '../addon/native';

export const FORMAT = 'bge-m3-hybrid-index';
/** The version save writes (of MANIFEST and of the segment). */
export const VERSION = 2;
/** The versions load reads: 1 has no texts or metadata. */
export const READABLE_VERSIONS: readonly number[] = [1, 2];
export const MAGIC = Buffer.from('BGEM3IDX', 'latin1');
export const MANIFEST = 'MANIFEST';
// A MANIFEST is a few hundred bytes; anything far larger is not one, and is not read into memory.
export const MAX_MANIFEST_BYTES = 1 << 20;
// How messages about these files name them.
export const ROLE = 'Index file';

/** What identifies the model an index was built with. */
export interface ModelIdentity {
  dim: number;
  vocabSize: number;
  layout?: string;
  /** Where the model was loaded from (its directory or hub id), so that errors can name it. */
  name?: string;
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

/** A graph file named by MANIFEST, not yet verified (see verifyGraph in index_load.ts). */
export interface GraphRef {
  file: string;
  bytes: number;
  crc32: number;
}

/** The texts and metadata of the documents, by slot (undefined: none). */
export interface StoredDocuments {
  texts: ReadonlyArray<string | undefined>;
  metadata: ReadonlyArray<Record<string, unknown> | undefined>;
}

type SectionName = keyof NativeIndexState | 'meta' | 'ids' | 'texts' | 'metadata';
export const ARRAY_SECTIONS: Array<[keyof NativeIndexState, new (buffer: ArrayBuffer, offset: number, length: number) => ArrayBufferView]> = [
  ['dense', Float32Array], ['sparseOffsets', Uint32Array], ['sparseIds', Uint32Array], ['sparseWeights', Float32Array],
  ['colbertOffsets', Uint32Array], ['colbertF32', Float32Array], ['colbertBf16', Uint16Array], ['colbertI8', Int8Array],
  ['colbertScales', Float32Array],
];

function bytesOf(view: ArrayBufferView): Buffer {
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

/** Values as JSON Lines (undefined as null), in pieces of about 1 MiB: no one string holds them all. */
function jsonLines(values: ReadonlyArray<unknown>): Buffer[] {
  const pieces: Buffer[] = [];
  let piece = '';
  for (const value of values) {
    piece += `${JSON.stringify(value ?? null)}\n`;
    if (piece.length >= 1 << 20) {
      pieces.push(Buffer.from(piece, 'utf8'));
      piece = '';
    }
  }
  if (piece.length > 0) pieces.push(Buffer.from(piece, 'utf8'));
  return pieces;
}

/**
 * Writes an index directory atomically (see the file comment); saves to one directory take turns.
 * `graph` writes the HNSW graph, for an index with the approximate dense route.
 */
export function saveIndex(dir: string, meta: IndexMeta, ids: unknown[], state: NativeIndexState, documents: StoredDocuments,
  graph?: GraphWriter): void {
  withDirectoryLock(dir, () => writeSegmentAndManifest(dir, meta, ids, state, documents, graph));
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

function writeSegmentAndManifest(dir: string, meta: IndexMeta, ids: unknown[], state: NativeIndexState, documents: StoredDocuments,
  writeGraph?: GraphWriter): void {
  // Each section's data in one or more pieces.
  const sections: Array<[SectionName, Buffer[]]> = [
    ['meta', [Buffer.from(JSON.stringify(meta), 'utf8')]],
    ['ids', [Buffer.from(JSON.stringify(ids), 'utf8')]],
    ...ARRAY_SECTIONS.map(([name]) => [name, [bytesOf(state[name])]] as [SectionName, Buffer[]]),
    ['texts', jsonLines(documents.texts)],
    ['metadata', jsonLines(documents.metadata)],
  ];
  const head = Buffer.alloc(16);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(VERSION, 8);
  head.writeUInt32LE(sections.length, 12);
  const chunks: Buffer[] = [head];
  for (const [name, pieces] of sections) {
    const length = pieces.reduce((n, p) => n + p.length, 0);
    const entry = Buffer.alloc(32);
    entry.write(name, 0, 16, 'latin1');
    entry.writeBigUInt64LE(BigInt(length), 16);
    entry.writeUInt32LE(pieces.reduce((c, p) => (p.length ? zlib.crc32(p, c) : c), 0), 24);
    chunks.push(entry, ...pieces, Buffer.alloc((8 - (length % 8)) % 8));
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
