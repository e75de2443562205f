/**
 * Scores between one query and one passage (docs/semantics.md, "Scores"). Accumulation is in
 * float64 so results do not depend on summation order beyond float32 input rounding.
 */
import { M3Error, inputError } from '../base/errors';
import { checkWeights, fuse, fuseDenseSparse } from './fusion';
import type { EncodeOutput, SparseRow } from '../engine/outputs';

function requireFloat32(value: unknown, what: string): asserts value is Float32Array {
  if (!(value instanceof Float32Array)) throw inputError('a Float32Array', what, value);
}

/** Dense score: the inner product of two L2-normalised vectors (their cosine similarity). */
export function denseScore(a: Float32Array, b: Float32Array): number {
  requireFloat32(a, 'a');
  requireFloat32(b, 'b');
  if (a.length !== b.length) {
    throw new M3Error('ERR_INPUT', `denseScore: vectors have different lengths (${a.length} and ${b.length})`);
  }
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

function checkSparseRow(row: SparseRow, what: string): void {
  if (!row || !(row.ids instanceof Uint32Array) || !(row.weights instanceof Float32Array)) {
    throw inputError('{ ids: Uint32Array, weights: Float32Array }', what, row);
  }
  if (row.ids.length !== row.weights.length) {
    throw new M3Error('ERR_INPUT', `${what}: ids (${row.ids.length}) and weights (${row.weights.length}) differ in length`);
  }
  for (let i = 1; i < row.ids.length; i++) {
    if (row.ids[i] <= row.ids[i - 1]) {
      throw new M3Error('ERR_INPUT', `${what}: ids must be ascending and unique (position ${i}: ${row.ids[i - 1]} then ${row.ids[i]})`);
    }
  }
}

/** Lexical score: the sum over ids present in both rows of w_a * w_b (not normalised). */
export function lexicalScore(a: SparseRow, b: SparseRow): number {
  checkSparseRow(a, 'a');
  checkSparseRow(b, 'b');
  // A merge in JS, not the native pair call: for a typical pair (about 40 and 100 ids) it takes
  // about 700 to 750 ns against 800 to 850 ns for the addon's merge plus the crossing with four
  // typed arrays (bench/lexical.ts, "one pair"). For one query against many rows use lexicalScores.
  let i = 0;
  let j = 0;
  let sum = 0;
  while (i < a.ids.length && j < b.ids.length) {
    const x = a.ids[i];
    const y = b.ids[j];
    if (x === y) sum += a.weights[i++] * b.weights[j++];
    else if (x < y) i++;
    else j++;
  }
  return sum;
}

/**
 * ColBERT score: the mean over query vectors of the best inner product with any passage vector.
 * An empty query or passage scores 0.
 */
export function colbertScore(query: Float32Array, passage: Float32Array, dim: number): number {
  requireFloat32(query, 'query');
  requireFloat32(passage, 'passage');
  if (!Number.isInteger(dim) || dim <= 0) throw inputError('a positive integer', 'dim', dim);
  if (query.length % dim !== 0 || passage.length % dim !== 0) {
    throw new M3Error('ERR_INPUT', `colbertScore: dim ${dim} does not divide the query (${query.length}) or passage (${passage.length}) length`);
  }
  const nq = query.length / dim;
  const np = passage.length / dim;
  if (nq === 0 || np === 0) return 0;
  let total = 0;
  for (let i = 0; i < nq; i++) {
    let best = -Infinity;
    const qo = i * dim;
    for (let j = 0; j < np; j++) {
      const po = j * dim;
      let dot = 0;
      for (let k = 0; k < dim; k++) dot += query[qo + k] * passage[po + k];
      if (dot > best) best = dot;
    }
    total += best;
  }
  return total / nq;
}

/** Five score lists over pairs, FlagEmbedding's `compute_score` keys. */
export interface PairScores {
  dense: Float32Array;
  sparse: Float32Array;
  colbert: Float32Array;
  'sparse+dense': Float32Array;
  'colbert+sparse+dense': Float32Array;
}

/**
 * Scores query i against passage i with all three representations and the two weighted
 * combinations, as FlagEmbedding's `compute_score` does; both results need dense, sparse and
 * colbert. weights = [dense, sparse, colbert].
 */
export function pairScores(queries: EncodeOutput, passages: EncodeOutput, weights: readonly [number, number, number]): PairScores {
  const n = queries.count;
  const out: PairScores = {
    dense: new Float32Array(n), sparse: new Float32Array(n), colbert: new Float32Array(n),
    'sparse+dense': new Float32Array(n), 'colbert+sparse+dense': new Float32Array(n),
  };
  const w = checkWeights(weights, 'weights', { denseOrSparse: true });
  for (let i = 0; i < n; i++) {
    const q = queries.row(i);
    const p = passages.row(i);
    const d = denseScore(q.dense!, p.dense!);
    const s = lexicalScore(q.sparse!, p.sparse!);
    const c = colbertScore(q.colbert!, p.colbert!, queries.dim);
    out.dense[i] = d;
    out.sparse[i] = s;
    out.colbert[i] = c;
    out['sparse+dense'][i] = fuseDenseSparse(w, d, s);
    out['colbert+sparse+dense'][i] = fuse(w, d, s, c);
  }
  return out;
}
