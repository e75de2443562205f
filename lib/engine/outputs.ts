/** Encode results as contiguous typed arrays (the README's "API"). */
import type { MultiVectors, SparseRow, SparseVectors } from '../scoring/vectors';

export type { MultiVectors, SparseRow, SparseVectors } from '../scoring/vectors';

/** One text's outputs, as views into the batch arrays (no copies). */
export interface EncodeRow {
  dense?: Float32Array;
  sparse?: SparseRow;
  /** n_tokens - 1 vectors of `dim` floats, row-major. */
  colbert?: Float32Array;
}

import { NATIVE_OUTPUT_KINDS, type EncodeStats, type NativeOutputKind } from '../addon/native';
import { M3Error } from '../base/errors';
import { checkBoolean } from '../base/validate';

export type { EncodeStats };

/**
 * The outputs of an encode as bits: bit i is NATIVE_OUTPUT_KINDS[i], the addon's table of output
 * kinds (native/core/outputs.h). The batcher's grouping key and the binary layout's section flags
 * (lib/serve/wire.ts) are these bits; the native encoder takes their names (outputNames).
 * OUTPUT_HIDDEN asks the native encoder for last_hidden_state instead (fine-tuning's cache).
 */
const bit = (kind: NativeOutputKind) => 1 << NATIVE_OUTPUT_KINDS.indexOf(kind);
export const OUTPUT_DENSE = bit('dense');
export const OUTPUT_SPARSE = bit('sparse');
export const OUTPUT_COLBERT = bit('colbert');
export const OUTPUT_HIDDEN = bit('hidden');

/** The names of the output kinds whose bits `flags` sets, as the native encoder takes them. */
export function outputNames(flags: number): NativeOutputKind[] {
  return NATIVE_OUTPUT_KINDS.filter((kind) => (flags & bit(kind)) !== 0);
}

/** Which of the three outputs an encode computes. */
export interface OutputChoice {
  dense: boolean;
  sparse: boolean;
  colbert: boolean;
}

/** The bits of an output choice. */
export function outputFlags(choice: OutputChoice): number {
  return (choice.dense ? OUTPUT_DENSE : 0) | (choice.sparse ? OUTPUT_SPARSE : 0) | (choice.colbert ? OUTPUT_COLBERT : 0);
}

/** The output choice of some bits. */
export function outputsOf(flags: number): OutputChoice {
  return { dense: (flags & OUTPUT_DENSE) !== 0, sparse: (flags & OUTPUT_SPARSE) !== 0, colbert: (flags & OUTPUT_COLBERT) !== 0 };
}

/**
 * The `dense`, `sparse` and `colbert` options of an encode, checked (defaults: dense and sparse),
 * as bits; at least one must be requested.
 */
export function checkOutputs(options: { dense?: unknown; sparse?: unknown; colbert?: unknown }): number {
  const flags = outputFlags({
    dense: checkBoolean(options.dense, 'dense', true),
    sparse: checkBoolean(options.sparse, 'sparse', true),
    colbert: checkBoolean(options.colbert, 'colbert', false),
  });
  if (flags === 0) throw new M3Error('ERR_INPUT', 'encode: all of dense, sparse and colbert are false; request at least one output');
  return flags;
}

/** A sparse row as vector databases take it (Qdrant, Milvus, pgvector's sparsevec): token ids and weights. */
export interface SparseJSON {
  indices: number[];
  values: number[];
}

/** One text's outputs as plain JSON values ({@link EncodeRowView.toJSON}). */
export interface EncodeRowJSON {
  dense?: number[];
  sparse?: SparseJSON;
  /** One array of `dim` numbers per token after `<s>`. */
  colbert?: number[][];
}

/** An encode's outputs as plain JSON values, one entry per text ({@link EncodeOutput.toJSON}). */
export interface EncodeOutputJSON {
  count: number;
  dim: number;
  dense?: number[][];
  sparse?: SparseJSON[];
  colbert?: number[][][];
  /** Tokens of each text as encoded. */
  tokens?: number[];
}

/** {@link EncodeOutput.row}'s result: views, and `toJSON()` for plain arrays. */
export type EncodeRowView = EncodeRow & { toJSON(): EncodeRowJSON };

function rowJSON(row: EncodeRow, dim: number): EncodeRowJSON {
  const out: EncodeRowJSON = {};
  if (row.dense) out.dense = Array.from(row.dense);
  if (row.sparse) out.sparse = { indices: Array.from(row.sparse.ids), values: Array.from(row.sparse.weights) };
  if (row.colbert) {
    const vectors: number[][] = [];
    for (let at = 0; at < row.colbert.length; at += dim) vectors.push(Array.from(row.colbert.subarray(at, at + dim)));
    out.colbert = vectors;
  }
  return out;
}

/** The result of `encode`: only the requested outputs are present. */
export class EncodeOutput {
  constructor(
    /** Number of texts. */
    readonly count: number,
    /** Width of dense and ColBERT vectors (1024 for BGE-M3). */
    readonly dim: number,
    /** count * dim floats, row-major, each row L2-normalised. */
    readonly dense?: Float32Array,
    readonly sparse?: SparseVectors,
    readonly colbert?: MultiVectors,
    /** Where the time went (absent for an empty input). */
    readonly stats?: EncodeStats,
    /** Tokens of each text as encoded: after truncation, `<s>` and `</s>` included. */
    readonly tokens?: Uint32Array,
  ) {}

  /** Tokens of all texts as encoded (the `usage` of an embeddings API). */
  get tokenCount(): number {
    let n = 0;
    if (this.tokens) for (const t of this.tokens) n += t;
    return n;
  }

  /**
   * Texts [start, end) as an EncodeOutput of their own: vectors and weights are subarray views
   * of this result's arrays (no copies); only the offsets are new, rebased to start at 0.
   */
  slice(start: number, end: number): EncodeOutput {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > this.count) {
      throw new RangeError(`Expected 0 <= start <= end <= ${this.count} for slice but received ${start}, ${end}`);
    }
    const rebase = (offsets: Uint32Array) => {
      const out = new Uint32Array(end - start + 1);
      for (let i = 0; i <= end - start; i++) out[i] = offsets[start + i] - offsets[start];
      return out;
    };
    let sparse: SparseVectors | undefined;
    if (this.sparse) {
      const { offsets, ids, weights } = this.sparse;
      sparse = { offsets: rebase(offsets), ids: ids.subarray(offsets[start], offsets[end]), weights: weights.subarray(offsets[start], offsets[end]) };
    }
    let colbert: MultiVectors | undefined;
    if (this.colbert) {
      const { offsets, data } = this.colbert;
      colbert = { offsets: rebase(offsets), data: data.subarray(offsets[start] * this.dim, offsets[end] * this.dim) };
    }
    return new EncodeOutput(end - start, this.dim, this.dense?.subarray(start * this.dim, end * this.dim), sparse, colbert, this.stats,
      this.tokens?.subarray(start, end));
  }

  /**
   * Plain JSON values (what `JSON.stringify` writes): dense vectors and ColBERT rows as arrays of
   * numbers, sparse rows as `{indices, values}` by token id, one entry per text.
   */
  toJSON(): EncodeOutputJSON {
    const rows = Array.from({ length: this.count }, (_, i) => rowJSON(this.row(i), this.dim));
    const out: EncodeOutputJSON = { count: this.count, dim: this.dim };
    if (this.dense) out.dense = rows.map((r) => r.dense as number[]);
    if (this.sparse) out.sparse = rows.map((r) => r.sparse as SparseJSON);
    if (this.colbert) out.colbert = rows.map((r) => r.colbert as number[][]);
    if (this.tokens) out.tokens = Array.from(this.tokens);
    return out;
  }

  /** The outputs of text `i` as subarray views; `toJSON()` (not enumerable) gives plain arrays. */
  row(i: number): EncodeRowView {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) {
      throw new RangeError(`Expected an integer in [0, ${this.count}) for row index but received ${i}`);
    }
    const row: EncodeRow = {};
    if (this.dense) row.dense = this.dense.subarray(i * this.dim, (i + 1) * this.dim);
    if (this.sparse) {
      const { offsets, ids, weights } = this.sparse;
      row.sparse = { ids: ids.subarray(offsets[i], offsets[i + 1]), weights: weights.subarray(offsets[i], offsets[i + 1]) };
    }
    if (this.colbert) {
      const { offsets, data } = this.colbert;
      row.colbert = data.subarray(offsets[i] * this.dim, offsets[i + 1] * this.dim);
    }
    const dim = this.dim;
    Object.defineProperty(row, 'toJSON', { value: () => rowJSON(row, dim), enumerable: false });
    return row as EncodeRowView;
  }
}
