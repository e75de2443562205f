/**
 * HybridIndex.documents(): the stored documents in batches shaped as add() takes them, so that
 * an index can be rebuilt elsewhere (another dense route, another ColBERT format, a filtered
 * subset) or handed to another store. The vectors come from the native index's exported state
 * (what save writes), ColBERT rows decoded to f32.
 */
import type { NativeIndexState } from '../addon/native';
import { EncodeOutput } from '../engine/outputs';
import type { DocumentMetadata } from './document_fields';

/** One batch of documents: everything add() needs to put them in another index. */
export interface DocumentBatch {
  ids: Array<string | number>;
  texts: Array<string | undefined>;
  metadata: Array<DocumentMetadata | undefined>;
  /** Dense, sparse and (when the index stores them) ColBERT vectors in f32, decoded from bf16 or int8 storage. */
  encoded: EncodeOutput;
}

/** A compacted index's documents: slot i is ids[i], its vectors row i of `state`. */
export interface ExportedDocuments {
  ids: Array<string | number>;
  texts: Array<string | undefined>;
  metadata: Array<DocumentMetadata | undefined>;
  state: NativeIndexState;
  dim: number;
  colbert: 'f32' | 'bf16' | 'i8' | false;
}

/** offsets[start .. end] rebased to start at 0. */
function rebased(offsets: Uint32Array, start: number, end: number): Uint32Array {
  return offsets.slice(start, end + 1).map((o) => o - offsets[start]);
}

/**
 * ColBERT rows [from, to) of an exported state as f32: bf16 widened exactly (it is the upper
 * half of an f32, so add() stores the same bits again), int8 times its row's scale (add()
 * quantizes that back to the same values, or within a rounding of the scale).
 */
function decodeColbert(state: NativeIndexState, format: 'f32' | 'bf16' | 'i8', from: number, to: number, dim: number): Float32Array {
  if (format === 'f32') return state.colbertF32.slice(from * dim, to * dim);
  const out = new Float32Array((to - from) * dim);
  if (format === 'bf16') {
    const bits = new Uint32Array(out.buffer);
    const bf16 = state.colbertBf16;
    for (let i = 0; i < bits.length; i++) bits[i] = bf16[from * dim + i] << 16;
    return out;
  }
  const q = state.colbertI8;
  const scales = state.colbertScales;
  for (let row = from; row < to; row++) {
    const scale = scales[row];
    for (let k = 0; k < dim; k++) out[(row - from) * dim + k] = q[row * dim + k] * scale;
  }
  return out;
}

/** The documents in batches of `batchSize` (each array its own copy). */
export function* documentBatches(docs: ExportedDocuments, batchSize: number): Generator<DocumentBatch, void, undefined> {
  const { state, dim } = docs;
  const so = state.sparseOffsets;
  const co = state.colbertOffsets;
  for (let start = 0; start < docs.ids.length; start += batchSize) {
    const end = Math.min(docs.ids.length, start + batchSize);
    const sparse = { offsets: rebased(so, start, end), ids: state.sparseIds.slice(so[start], so[end]), weights: state.sparseWeights.slice(so[start], so[end]) };
    const colbert = docs.colbert ? { offsets: rebased(co, start, end), data: decodeColbert(state, docs.colbert, co[start], co[end], dim) } : undefined;
    yield {
      ids: docs.ids.slice(start, end), texts: docs.texts.slice(start, end), metadata: docs.metadata.slice(start, end),
      encoded: new EncodeOutput(end - start, dim, state.dense.slice(start * dim, end * dim), sparse, colbert),
    };
  }
}
