/**
 * A complete structural check of an HNSW graph file, run before the file is handed to usearch.
 * usearch's loader trusts every count, level and slot it reads (it sizes allocations from the
 * levels table, then reads each node over them, and a search follows neighbour slots without
 * bounds checks), so a file that passes its checksum but was crafted corrupts the heap or crashes
 * a later search. The checksum only catches accidents; this catches everything the loader or a
 * search relies on, in one streaming pass (a graph can be larger than a Buffer), and computes the
 * CRC-32 on the way, so the file is read once.
 *
 * The format, as usearch 2.25 writes it with index_dense_gt::save and its default serialization
 * config (vectors included, 32-bit matrix dimensions); see include/usearch/index_dense.hpp and
 * include/usearch/index.hpp at https://github.com/unum-cloud/usearch/tree/v2.25.3. All integers are
 * little-endian, as on every platform this package builds for:
 *
 *   matrix     u32 rows, u32 bytes per row, then rows × bytes of vectors (here f32)
 *   dense head 64 bytes: "usearch" (7), u16 major, minor, patch; u8 metric, scalar, key and
 *              slot kinds; u64 present count, deleted count, dimensions; u8 multi; padding
 *   graph head u64 size, connectivity, connectivity_base, max_level, entry_slot
 *   levels     i16 per node
 *   nodes      per node: u64 key, i16 level, then for each level 0..level a u32 neighbour count
 *              followed by room for connectivity_base (level 0) or connectivity (above) u32 slots
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';

/** What an index knows its graph must be. */
export interface HnswGraphExpectation {
  /** Vector width. */
  dimensions: number;
  /** Nodes: one per document, keyed by the slots 0..count-1. */
  count: number;
}

/** The outcome of {@link scanHnswGraphFile}: the file's size and CRC-32, and what is wrong with it, if anything. */
export interface HnswGraphScan {
  bytes: number;
  crc32: number;
  problem?: string;
}

// What this engine's graphs are (see createGraph in hnsw_route.ts): inner product over f32
// vectors, u64 keys, u32 slots, one vector per key. Kinds are usearch's enum values.
const MAGIC = 'usearch';
const VERSION_MAJOR = 2;
// Headers before 2.10 used other numbers for the kinds, which usearch rewrites on load.
const FIRST_MINOR_WITH_THESE_KINDS = 10;
const METRIC_INNER_PRODUCT = 'i'.charCodeAt(0);
const SCALAR_F32 = 11;
const KEY_U64 = 14;
const SLOT_U32 = 15;
const SLOT_BYTES = 4;
const F32_BYTES = 4;
const MATRIX_HEAD_BYTES = 8;
const DENSE_HEAD_BYTES = 64;
const GRAPH_HEAD_BYTES = 40;
const NODE_HEAD_BYTES = 10;
const NEIGHBOUR_COUNT_BYTES = 4;
// Levels are i16; usearch casts max_level to one.
const MAX_LEVEL = 0x7fff;
// Far above any useful graph (usearch's default is 16); keeps one neighbour list well inside a chunk.
const MAX_CONNECTIVITY = 1 << 16;
const CHUNK_BYTES = 8 << 20;

class GraphProblem extends Error {}

/**
 * Reads a file front to back in chunks, handing out contiguous byte ranges and computing the
 * CRC-32 of everything read. Buffer positions stay congruent to file offsets modulo 8, so data
 * that is aligned in the file can be viewed as a typed array in place.
 */
class ChunkedReader {
  private readonly buffer = Buffer.allocUnsafeSlow(CHUNK_BYTES + 8);
  private at = 0;
  private end = 0;
  private readFrom = 0;
  crc32 = 0;

  constructor(private readonly fd: number, readonly size: number) {}

  /** File offset of the next byte to parse. */
  get offset(): number {
    return this.readFrom - (this.end - this.at);
  }

  get bytes(): Buffer {
    return this.buffer;
  }

  /** Buffer index of the next `n` bytes (n <= CHUNK_BYTES), which are then consumed. */
  take(n: number): number {
    if (this.end - this.at < n) this.refill(n);
    const index = this.at;
    this.at += n;
    return index;
  }

  /** Reads what is left, for the checksum. */
  drain(): void {
    while (this.readFrom < this.size) {
      this.at = this.end = 0;
      this.readMore();
    }
  }

  private refill(n: number): void {
    const left = this.end - this.at;
    const to = this.offset & 7;
    this.buffer.copy(this.buffer, to, this.at, this.end);
    this.at = to;
    this.end = to + left;
    while (this.end - this.at < n) {
      if (this.readFrom >= this.size) throw new GraphProblem(`it ends at byte ${this.size}, inside data that needs ${n - (this.end - this.at)} more bytes`);
      this.readMore();
    }
  }

  private readMore(): void {
    const want = Math.min(this.buffer.length - this.end, this.size - this.readFrom);
    const got = fs.readSync(this.fd, this.buffer, this.end, want, this.readFrom);
    if (got === 0) throw new GraphProblem('it became shorter while it was read');
    this.crc32 = zlib.crc32(this.buffer.subarray(this.end, this.end + got), this.crc32);
    this.end += got;
    this.readFrom += got;
  }
}

function problem(text: string): never {
  throw new GraphProblem(text);
}

/** A u64 as a number: exact below 2^53, and beyond that still larger than any count it is compared with. */
function u64(bytes: Buffer, at: number): number {
  return bytes.readUInt32LE(at + 4) * 0x100000000 + bytes.readUInt32LE(at);
}

/**
 * Checks that the regular file open at `fd` (of `size` bytes) is an HNSW graph this engine can
 * hand to usearch: every field of the format above that the loader or a search trusts, against
 * `expected` and against each other. Reads the whole file once, in chunks, and returns its CRC-32
 * with the first problem found (undefined when there is none). Time and memory are linear in the
 * file size and the node count.
 */
export function scanHnswGraphFile(fd: number, size: number, expected: HnswGraphExpectation): HnswGraphScan {
  const reader = new ChunkedReader(fd, size);
  let found: string | undefined;
  try {
    checkGraph(reader, expected);
  } catch (err) {
    if (!(err instanceof GraphProblem)) throw err;
    found = err.message;
  }
  try {
    reader.drain();
  } catch (err) {
    if (!(err instanceof GraphProblem)) throw err;
    found ??= err.message;
  }
  return { bytes: size, crc32: reader.crc32, problem: found };
}

function checkGraph(reader: ChunkedReader, expected: HnswGraphExpectation): void {
  const vectorsEnd = checkVectors(reader, expected);
  checkIndexHeader(reader, expected, vectorsEnd);
  const graph = checkGraphHeader(reader, expected.count, vectorsEnd);
  if (!graph) return;
  const levels = checkLevels(reader, graph);
  checkNodes(reader, graph, levels);
}

/** The vector matrix: one row of `dimensions` finite f32 values per document. Returns where it ends. */
function checkVectors(reader: ChunkedReader, { dimensions, count }: HnswGraphExpectation): number {
  const bytes = reader.bytes;
  const rowBytes = dimensions * F32_BYTES;
  atLeast(reader, MATRIX_HEAD_BYTES, 'the vector matrix dimensions');
  const i = reader.take(MATRIX_HEAD_BYTES);
  const rows = bytes.readUInt32LE(i);
  const rowLength = bytes.readUInt32LE(i + 4);
  if (rows !== count) problem(`it holds ${rows} vectors, not one per document (${count})`);
  if (rowLength !== rowBytes) problem(`its vectors have ${rowLength} bytes each, not ${rowBytes} (${dimensions} f32 values)`);
  const vectorsEnd = MATRIX_HEAD_BYTES + rows * rowLength;
  atLeast(reader, vectorsEnd + DENSE_HEAD_BYTES + GRAPH_HEAD_BYTES + 2 * count, 'the end of its vectors, headers and levels table');
  checkVectorsFinite(reader, rows * rowLength);
  return vectorsEnd;
}

function atLeast(reader: ChunkedReader, length: number, what: string): void {
  if (length > reader.size) problem(`its ${reader.size} bytes end before ${what}`);
}

/** The dense index header: usearch's magic and version, the kinds this engine writes, the counts. */
function checkIndexHeader(reader: ChunkedReader, { dimensions, count }: HnswGraphExpectation, vectorsEnd: number): void {
  const bytes = reader.bytes;
  const i = reader.take(DENSE_HEAD_BYTES);
  if (bytes.toString('latin1', i, i + MAGIC.length) !== MAGIC) problem(`it has no usearch header after its vectors (byte ${vectorsEnd})`);
  const major = bytes.readUInt16LE(i + 7);
  const minor = bytes.readUInt16LE(i + 9);
  if (major !== VERSION_MAJOR || minor < FIRST_MINOR_WITH_THESE_KINDS) {
    problem(`it was written by usearch ${major}.${minor}, not ${VERSION_MAJOR}.${FIRST_MINOR_WITH_THESE_KINDS} or later`);
  }
  const kinds = [bytes[i + 13], bytes[i + 14], bytes[i + 15], bytes[i + 16]];
  if (kinds.join() !== [METRIC_INNER_PRODUCT, SCALAR_F32, KEY_U64, SLOT_U32].join()) {
    problem(`its metric, scalar, key and slot kinds are ${kinds.join(', ')}, not inner product, f32, u64 and u32 (${METRIC_INNER_PRODUCT}, ${SCALAR_F32}, ${KEY_U64}, ${SLOT_U32})`);
  }
  const present = u64(bytes, i + 17);
  const deleted = u64(bytes, i + 25);
  const headerDimensions = u64(bytes, i + 33);
  const multi = bytes[i + 41];
  if (present !== count || deleted !== 0) problem(`its header counts ${present} present and ${deleted} deleted vectors, not ${count} and 0`);
  if (headerDimensions !== dimensions) problem(`its header gives ${headerDimensions} dimensions, not ${dimensions}`);
  if (multi !== 0) problem(`its header sets multi (several vectors per key) to ${multi}`);
}

/** The graph's shape, from its header. */
interface GraphShape {
  nodes: number;
  connectivity: number;
  connectivityBase: number;
  maxLevel: number;
  entry: number;
  /** Where the levels table ends. */
  levelsEnd: number;
}

/** The graph header: one node per document, a connectivity usearch builds. undefined for an empty graph (nothing more is read). */
function checkGraphHeader(reader: ChunkedReader, count: number, vectorsEnd: number): GraphShape | undefined {
  const bytes = reader.bytes;
  const i = reader.take(GRAPH_HEAD_BYTES);
  const nodes = u64(bytes, i);
  const connectivity = u64(bytes, i + 8);
  const connectivityBase = u64(bytes, i + 16);
  const maxLevel = u64(bytes, i + 24);
  const entry = u64(bytes, i + 32);
  if (nodes !== count) problem(`its graph has ${nodes} nodes, not one per document (${count})`);
  if (connectivity < 2 || connectivity > MAX_CONNECTIVITY || connectivityBase < connectivity || connectivityBase > MAX_CONNECTIVITY) {
    problem(`its connectivity ${connectivity} (base ${connectivityBase}) is not one usearch builds (2 to ${MAX_CONNECTIVITY}, the base at least as large)`);
  }
  const levelsEnd = vectorsEnd + DENSE_HEAD_BYTES + GRAPH_HEAD_BYTES + 2 * nodes;
  if (nodes === 0) {
    // usearch stops reading after an empty graph's header; nothing else in it is used.
    if (reader.size !== levelsEnd) problem(`it has ${reader.size} bytes, but an empty graph has ${levelsEnd}`);
    return undefined;
  }
  if (maxLevel > MAX_LEVEL) problem(`its top level ${maxLevel} is above ${MAX_LEVEL}`);
  if (entry >= nodes) problem(`its entry point is slot ${entry}, but it has ${nodes} nodes`);
  return { nodes, connectivity, connectivityBase, maxLevel, entry, levelsEnd };
}

/** The levels table: each node's level, which must also account for every byte of the file. */
function checkLevels(reader: ChunkedReader, { nodes, connectivity, connectivityBase, maxLevel, entry, levelsEnd }: GraphShape): Int16Array {
  const bytes = reader.bytes;
  const levels = new Int16Array(nodes);
  const baseListBytes = NEIGHBOUR_COUNT_BYTES + connectivityBase * SLOT_BYTES;
  const listBytes = NEIGHBOUR_COUNT_BYTES + connectivity * SLOT_BYTES;
  let total = levelsEnd;
  for (let node = 0; node < nodes;) {
    const batch = Math.min(nodes - node, CHUNK_BYTES / 2);
    let i = reader.take(2 * batch);
    for (const stop = node + batch; node < stop; node++, i += 2) {
      const level = bytes.readInt16LE(i);
      if (level < 0 || level > maxLevel) problem(`node ${node} has level ${level}, outside 0 to the top level ${maxLevel}`);
      levels[node] = level;
      total += NODE_HEAD_BYTES + baseListBytes + level * listBytes;
    }
  }
  if (levels[entry] !== maxLevel) problem(`its entry point, slot ${entry}, has level ${levels[entry]}, not the top level ${maxLevel}`);
  if (total !== reader.size) problem(`its headers and levels describe ${total} bytes, but it has ${reader.size}`);
  return levels;
}

/** The nodes: keys that are slots, each once; at each level a neighbour list within its room, of other nodes that have that level, none twice. */
function checkNodes(reader: ChunkedReader, { nodes, connectivity, connectivityBase }: GraphShape, levels: Int16Array): void {
  const bytes = reader.bytes;
  const keySeen = new Uint8Array(nodes);
  // seenIn[slot] === list marks a neighbour already met in the current list: duplicates found in
  // linear time, without clearing a set per list.
  const seenIn = new Uint32Array(nodes);
  let list = 0;
  for (let node = 0; node < nodes; node++) {
    let i = reader.take(NODE_HEAD_BYTES);
    const key = u64(bytes, i);
    const level = bytes.readInt16LE(i + 8);
    if (key >= nodes) problem(`node ${node} has key ${key}, not a slot below ${nodes}`);
    if (keySeen[key]) problem(`key ${key} appears on two nodes`);
    keySeen[key] = 1;
    if (level !== levels[node]) problem(`node ${node} has level ${level}, but the levels table says ${levels[node]}`);
    for (let l = 0; l <= level; l++) {
      const room = l === 0 ? connectivityBase : connectivity;
      i = reader.take(NEIGHBOUR_COUNT_BYTES + room * SLOT_BYTES);
      const neighbours = bytes.readUInt32LE(i);
      if (neighbours > room) problem(`node ${node} lists ${neighbours} neighbours at level ${l}, more than the ${room} it has room for`);
      if (++list === 0x100000000) {
        seenIn.fill(0);
        list = 1;
      }
      for (let k = 0, at = i + NEIGHBOUR_COUNT_BYTES; k < neighbours; k++, at += SLOT_BYTES) {
        const slot = bytes.readUInt32LE(at);
        if (slot >= nodes) problem(`node ${node} links to slot ${slot} at level ${l}, but there are ${nodes} nodes`);
        if (slot === node) problem(`node ${node} links to itself at level ${l}`);
        // A search at level l reads the neighbour's level-l list, which exists only up to its level.
        if (levels[slot] < l) problem(`node ${node} links at level ${l} to node ${slot}, which has only levels up to ${levels[slot]}`);
        if (seenIn[slot] === list) problem(`node ${node} lists neighbour ${slot} twice at level ${l}`);
        seenIn[slot] = list;
      }
    }
  }
}

/** Vectors must be finite: NaN and infinities turn distances into NaN, which orders nothing. */
function checkVectorsFinite(reader: ChunkedReader, length: number): void {
  const step = CHUNK_BYTES - (CHUNK_BYTES % F32_BYTES);
  for (let done = 0; done < length;) {
    const n = Math.min(step, length - done);
    const start = reader.offset;
    const at = reader.take(n);
    // The matrix starts 8 bytes into the file, so its elements are 4-byte aligned in the buffer.
    const words = new Uint32Array(reader.bytes.buffer, reader.bytes.byteOffset + at, n / F32_BYTES);
    for (let k = 0; k < words.length; k++) {
      if ((words[k] & 0x7f800000) === 0x7f800000) {
        problem(`vector element at byte ${start + k * F32_BYTES} is not a finite number`);
      }
    }
    done += n;
  }
}
