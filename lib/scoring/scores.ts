/**
 * Scores between one query and one passage (docs/semantics.md, "Scores"). The dense and lexical
 * scores accumulate in float64, so they do not depend on summation order beyond float32 input
 * rounding; the ColBERT score is the native MaxSim kernel's (maxsim.ts), as every surface gives it.
 */
import { M3Error, inputError } from '../base/errors';
import { maxSimSync } from './maxsim';
import type { SparseRow } from './vectors';

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
 * ColBERT score: the mean over query vectors of the best inner product with any passage vector
 * (the native MaxSim kernel, in float32). An empty query or passage scores 0.
 */
export function colbertScore(query: Float32Array, passage: Float32Array, dim: number): number {
  requireFloat32(query, 'query');
  requireFloat32(passage, 'passage');
  if (!Number.isInteger(dim) || dim <= 0) throw inputError('a positive integer', 'dim', dim);
  if (query.length % dim !== 0 || passage.length % dim !== 0) {
    throw new M3Error('ERR_INPUT', `colbertScore: dim ${dim} does not divide the query (${query.length}) or passage (${passage.length}) length`);
  }
  return maxSimSync(query, { offsets: Uint32Array.of(0, passage.length / dim), data: passage }, { dim })[0];
}
