/**
 * The store's column formats, between encode() output and pgvector's text forms and bytea.
 *
 * - dense: `halfvec(dim)` text, `[x0,x1,...]` (pgvector rounds each value to fp16, to nearest even).
 * - sparse: `sparsevec(vocab)` text, `{i:w,...}/vocab` with 1-based indices (token id + 1). A row
 *   is split in two columns: `sparse` holds the SPARSE_RECALL_NNZ largest weights (pgvector's HNSW
 *   index takes at most 1,000 non-zeros) and `sparse_rest` the others (NULL when there are none);
 *   the lexical score is the sum of both inner products, so it is exact.
 * - colbert: `bytea`, little-endian rows of the store's format: bf16 bits (2 bytes per value),
 *   f32 (4 bytes), or i8 (one f32 scale per row, then the rows of int8 values).
 */
import { M3Error } from '../base/errors';
import { quantize } from '../scoring/maxsim';
import type { QuantizedMultiVectors } from '../scoring/maxsim';
import type { MultiVectors } from '../scoring/vectors';

export type ColbertFormat = 'f32' | 'bf16' | 'i8';

/** pgvector's HNSW index on sparsevec takes rows of at most this many non-zeros. */
export const SPARSE_RECALL_NNZ = 1000;

/** The largest magnitude fp16 holds (halfvec refuses larger values). */
export const HALF_MAX = 65504;

/** A dense row as halfvec/vector text. */
export function vectorText(values: Float32Array, start = 0, length = values.length - start): string {
  const parts = new Array<string>(length);
  for (let i = 0; i < length; i++) parts[i] = String(values[start + i]);
  return `[${parts.join(',')}]`;
}

/** Parses `[x,y,...]` (halfvec or vector text) into floats. */
export function parseVectorText(text: string, dim: number): Float32Array {
  if (typeof text !== 'string' || text[0] !== '[' || text[text.length - 1] !== ']') {
    throw new M3Error('ERR_STORE', `a dense vector in the store is not pgvector text: ${String(text).slice(0, 40)}`);
  }
  const out = new Float32Array(dim);
  const parts = text.slice(1, -1).split(',');
  if (parts.length !== dim) throw new M3Error('ERR_STORE', `a dense vector in the store has ${parts.length} values, not ${dim}`);
  for (let i = 0; i < dim; i++) out[i] = Number(parts[i]);
  return out;
}

function sparseText(ids: ArrayLike<number>, weights: ArrayLike<number>, order: number[], vocabSize: number): string {
  const parts = order.map((i) => `${ids[i] + 1}:${weights[i]}`);
  return `{${parts.join(',')}}/${vocabSize}`;
}

/**
 * One sparse row as the two sparsevec columns: the recall part (the largest weights, at most
 * SPARSE_RECALL_NNZ) and the rest (null when the row fits). Zero weights are left out (pgvector
 * drops them too).
 */
export function sparseColumns(ids: Uint32Array, weights: Float32Array, start: number, end: number, vocabSize: number): [string, string | null] {
  const order: number[] = [];
  for (let i = start; i < end; i++) if (weights[i] !== 0) order.push(i);
  if (order.length <= SPARSE_RECALL_NNZ) return [sparseText(ids, weights, order, vocabSize), null];
  const byWeight = [...order].sort((a, b) => weights[b] - weights[a] || ids[a] - ids[b]);
  const top = byWeight.slice(0, SPARSE_RECALL_NNZ).sort((a, b) => a - b);
  const rest = byWeight.slice(SPARSE_RECALL_NNZ).sort((a, b) => a - b);
  return [sparseText(ids, weights, top, vocabSize), sparseText(ids, weights, rest, vocabSize)];
}

/** Parses sparsevec text into ascending token ids and their weights, appended to `ids`/`weights`. */
export function parseSparseText(text: string | null | undefined, ids: number[], weights: number[]): void {
  if (text === null || text === undefined) return;
  const m = /^\{(.*)\}\/\d+$/.exec(text);
  if (!m) throw new M3Error('ERR_STORE', `a sparse vector in the store is not pgvector text: ${String(text).slice(0, 40)}`);
  if (m[1] === '') return;
  for (const part of m[1].split(',')) {
    const colon = part.indexOf(':');
    ids.push(Number(part.slice(0, colon)) - 1);
    weights.push(Number(part.slice(colon + 1)));
  }
}

/** Merges two ascending (id, weight) lists into one ascending list. */
export function mergeSparse(aIds: number[], aW: number[], bIds: number[], bW: number[]): { ids: number[]; weights: number[] } {
  const ids: number[] = [];
  const weights: number[] = [];
  let i = 0;
  let j = 0;
  while (i < aIds.length || j < bIds.length) {
    if (j >= bIds.length || (i < aIds.length && aIds[i] < bIds[j])) {
      ids.push(aIds[i]);
      weights.push(aW[i++]);
    } else {
      ids.push(bIds[j]);
      weights.push(bW[j++]);
    }
  }
  return { ids, weights };
}

/** Bytes per stored ColBERT row. */
export function colbertRowBytes(format: ColbertFormat, dim: number): number {
  return format === 'bf16' ? 2 * dim : format === 'f32' ? 4 * dim : dim + 4;
}

/**
 * Every document's ColBERT rows in the store's format: one Buffer per document (little-endian;
 * see the file comment).
 */
export function colbertBlobs(colbert: MultiVectors, count: number, dim: number, format: ColbertFormat): Buffer[] {
  const out: Buffer[] = [];
  if (format === 'f32') {
    for (let i = 0; i < count; i++) {
      const rows = colbert.data.subarray(colbert.offsets[i] * dim, colbert.offsets[i + 1] * dim);
      out.push(Buffer.from(rows.buffer.slice(rows.byteOffset, rows.byteOffset + rows.byteLength)));
    }
    return out;
  }
  const q = quantize(colbert, dim, format);
  for (let i = 0; i < count; i++) {
    const r0 = colbert.offsets[i];
    const r1 = colbert.offsets[i + 1];
    if (format === 'bf16') {
      const v = q.data.subarray(r0 * dim, r1 * dim);
      out.push(Buffer.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)));
    } else {
      const s = q.scales!.subarray(r0, r1);
      const v = q.data.subarray(r0 * dim, r1 * dim);
      out.push(Buffer.concat([new Uint8Array(s.buffer, s.byteOffset, s.byteLength), new Uint8Array(v.buffer, v.byteOffset, v.byteLength)]));
    }
  }
  return out;
}

/** Rows in a stored ColBERT blob; throws ERR_STORE for a blob that is not whole rows. */
export function colbertRows(blob: Uint8Array, format: ColbertFormat, dim: number, id: string): number {
  const per = colbertRowBytes(format, dim);
  if (blob.byteLength % per !== 0) {
    throw new M3Error('ERR_STORE', `document ${JSON.stringify(id)}: its ColBERT bytes (${blob.byteLength}) are not whole ${format} rows of dim ${dim}`);
  }
  return blob.byteLength / per;
}

/**
 * Stored blobs as one document set for the MaxSim kernel (f32 rows, or bf16/i8 as quantize()
 * gives them). The bytes are copied into aligned arrays.
 */
export function blobsAsDocuments(blobs: Uint8Array[], ids: string[], format: ColbertFormat, dim: number): MultiVectors | QuantizedMultiVectors {
  const offsets = new Uint32Array(blobs.length + 1);
  blobs.forEach((b, i) => {
    offsets[i + 1] = offsets[i] + colbertRows(b, format, dim, ids[i]);
  });
  const rows = offsets[blobs.length];
  if (format === 'f32' || format === 'bf16') {
    const bytes = new Uint8Array(rows * colbertRowBytes(format, dim));
    let at = 0;
    for (const b of blobs) {
      bytes.set(b, at);
      at += b.byteLength;
    }
    return format === 'f32'
      ? { offsets, data: new Float32Array(bytes.buffer) }
      : { format: 'bf16', dim, offsets, data: new Uint16Array(bytes.buffer) };
  }
  const scales = new Float32Array(rows);
  const data = new Int8Array(rows * dim);
  blobs.forEach((b, i) => {
    const n = offsets[i + 1] - offsets[i];
    scales.set(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + 4 * n)), offsets[i]);
    data.set(new Int8Array(b.buffer, b.byteOffset + 4 * n, n * dim), offsets[i] * dim);
  });
  return { format: 'i8', dim, offsets, data, scales };
}

/** ColBERT rows of stored blobs as f32 (bf16 widens exactly; i8 is scale * value). */
export function blobsAsFloats(blobs: Uint8Array[], ids: string[], format: ColbertFormat, dim: number): MultiVectors {
  const docs = blobsAsDocuments(blobs, ids, format, dim);
  if (docs.data instanceof Float32Array) return docs as MultiVectors;
  const q = docs as QuantizedMultiVectors;
  const out = new Float32Array(q.data.length);
  if (q.format === 'bf16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < q.data.length; i++) bits[i] = (q.data[i] as number) << 16;
  } else {
    for (let r = 0; r < q.scales!.length; r++) {
      const s = q.scales![r];
      for (let j = r * dim; j < (r + 1) * dim; j++) out[j] = s * q.data[j];
    }
  }
  return { offsets: q.offsets, data: out };
}
