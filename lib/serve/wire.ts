/**
 * The binary layout of encode results, as `bge-m3 serve` sends them for
 * `Accept: application/octet-stream`, for clients that want the typed arrays without JSON.
 *
 * All numbers little-endian; every section is a whole number of 4-byte elements, so each starts
 * 4-byte aligned (a Float32Array or Uint32Array view can sit directly on it).
 *
 *   offset  size            field
 *   0       8               magic "BGEM3ENC" (ASCII)
 *   8       4   u32         version (1)
 *   12      4   u32         count: texts
 *   16      4   u32         dim: width of dense and ColBERT vectors
 *   20      4   u32         flags: 1 dense, 2 sparse, 4 colbert (sections present, in this order)
 *   24      4   u32         nnz: sparse entries (0 without sparse)
 *   28      4   u32         rows: ColBERT vectors (0 without colbert)
 *   32      4*count u32     tokens of each text as encoded
 *   then, when flagged:
 *     dense   4*count*dim f32            row-major, L2-normalised
 *     sparse  4*(count+1) u32 offsets, 4*nnz u32 ids, 4*nnz f32 weights
 *     colbert 4*(count+1) u32 offsets (in vectors), 4*rows*dim f32 vectors
 */
import { M3Error } from '../base/errors';
import { EncodeOutput, OUTPUT_COLBERT, OUTPUT_DENSE, OUTPUT_SPARSE, type MultiVectors, type SparseVectors } from '../engine/outputs';

export const WIRE_MAGIC = 'BGEM3ENC';
export const WIRE_VERSION = 1;
export const WIRE_CONTENT_TYPE = 'application/octet-stream';
const HEADER_BYTES = 32;

/** The result in the binary layout above (one allocation, one copy of each array). */
export function encodeWire(out: EncodeOutput): Buffer {
  const { count, dim } = out;
  const tokens = out.tokens ?? new Uint32Array(count);
  const sections: ArrayBufferView[] = [tokens];
  let flags = 0;
  if (out.dense) {
    flags |= OUTPUT_DENSE;
    sections.push(out.dense);
  }
  if (out.sparse) {
    flags |= OUTPUT_SPARSE;
    sections.push(out.sparse.offsets, out.sparse.ids, out.sparse.weights);
  }
  if (out.colbert) {
    flags |= OUTPUT_COLBERT;
    sections.push(out.colbert.offsets, out.colbert.data);
  }
  const size = HEADER_BYTES + sections.reduce((n, s) => n + s.byteLength, 0);
  const buf = Buffer.allocUnsafe(size);
  buf.write(WIRE_MAGIC, 0, 'latin1');
  buf.writeUInt32LE(WIRE_VERSION, 8);
  buf.writeUInt32LE(count, 12);
  buf.writeUInt32LE(dim, 16);
  buf.writeUInt32LE(flags, 20);
  buf.writeUInt32LE(out.sparse ? out.sparse.ids.length : 0, 24);
  buf.writeUInt32LE(out.colbert ? out.colbert.offsets[count] : 0, 28);
  let at = HEADER_BYTES;
  for (const s of sections) {
    // Typed arrays are in the platform's byte order, which Node supports only as little-endian.
    Buffer.from(s.buffer, s.byteOffset, s.byteLength).copy(buf, at);
    at += s.byteLength;
  }
  return buf;
}

/** Reads the binary layout back into an EncodeOutput (views on a copy of `data`, aligned). */
export function decodeWire(data: Uint8Array): EncodeOutput {
  const bad = (why: string) => new M3Error('ERR_INPUT', `Not a bge-m3 binary encode result: ${why}`);
  if (data.byteLength < HEADER_BYTES) throw bad(`${data.byteLength} bytes is shorter than the ${HEADER_BYTES}-byte header`);
  // One aligned copy, so every section can be viewed in place.
  const buffer = new ArrayBuffer(data.byteLength);
  new Uint8Array(buffer).set(data);
  const view = new DataView(buffer);
  const magic = Buffer.from(buffer, 0, 8).toString('latin1');
  if (magic !== WIRE_MAGIC) throw bad(`magic is ${JSON.stringify(magic)}, expected ${WIRE_MAGIC}`);
  const version = view.getUint32(8, true);
  if (version !== WIRE_VERSION) throw bad(`version ${version}; this library reads version ${WIRE_VERSION}`);
  const count = view.getUint32(12, true);
  const dim = view.getUint32(16, true);
  const flags = view.getUint32(20, true);
  const nnz = view.getUint32(24, true);
  const rows = view.getUint32(28, true);
  // The header and offsets must agree with the sections, or rows would slice the wrong entries.
  if (flags & ~(OUTPUT_DENSE | OUTPUT_SPARSE | OUTPUT_COLBERT)) throw bad(`flags ${flags} set bits other than dense (1), sparse (2) and colbert (4)`);
  if (!(flags & OUTPUT_SPARSE) && nnz !== 0) throw bad(`nnz is ${nnz} but there is no sparse section`);
  if (!(flags & OUTPUT_COLBERT) && rows !== 0) throw bad(`rows is ${rows} but there is no colbert section`);
  const framed = (offsets: Uint32Array, end: number, what: string) => {
    if (offsets[0] !== 0) throw bad(`${what} offsets start at ${offsets[0]}, not 0`);
    for (let i = 0; i < count; i++) {
      if (offsets[i + 1] < offsets[i]) throw bad(`${what} offsets decrease at text ${i} (${offsets[i]}, then ${offsets[i + 1]})`);
    }
    if (offsets[count] !== end) throw bad(`${what} offsets end at ${offsets[count]}, not at the ${end} entries of the section`);
  };
  let at = HEADER_BYTES;
  const take = <T>(Type: new (b: ArrayBuffer, o: number, n: number) => T, n: number): T => {
    if (at + 4 * n > buffer.byteLength) throw bad(`truncated: a section needs ${4 * n} bytes at offset ${at} of ${buffer.byteLength}`);
    const out = new Type(buffer, at, n);
    at += 4 * n;
    return out;
  };
  const tokens = take(Uint32Array, count);
  const dense = flags & OUTPUT_DENSE ? take(Float32Array, count * dim) : undefined;
  let sparse: SparseVectors | undefined;
  if (flags & OUTPUT_SPARSE) {
    sparse = { offsets: take(Uint32Array, count + 1), ids: take(Uint32Array, nnz), weights: take(Float32Array, nnz) };
    framed(sparse.offsets, nnz, 'sparse');
  }
  let colbert: MultiVectors | undefined;
  if (flags & OUTPUT_COLBERT) {
    colbert = { offsets: take(Uint32Array, count + 1), data: take(Float32Array, rows * dim) };
    framed(colbert.offsets, rows, 'colbert');
  }
  if (at !== buffer.byteLength) throw bad(`${buffer.byteLength - at} bytes left over after the sections`);
  return new EncodeOutput(count, dim, dense, sparse, colbert, undefined, tokens);
}
