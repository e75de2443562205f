/**
 * The vectors the scoring kernels take, as encode() gives them: lexical weights and ColBERT
 * vectors of one text or of many, in contiguous typed arrays.
 */

/** Lexical weights of many texts: row i is ids/weights[offsets[i] .. offsets[i+1]), ids ascending and unique. */
export interface SparseVectors {
  offsets: Uint32Array;
  ids: Uint32Array;
  weights: Float32Array;
}

/** ColBERT vectors of many texts: text i owns vectors offsets[i] .. offsets[i+1] of `data` (`dim` floats each). */
export interface MultiVectors {
  offsets: Uint32Array;
  data: Float32Array;
}

/** One text's lexical weights (ids ascending, unique). */
export interface SparseRow {
  ids: Uint32Array;
  weights: Float32Array;
}
