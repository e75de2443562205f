/**
 * Lexical (sparse) scores of one query against many documents with the native kernels: the query
 * is scattered into a table over the vocabulary and each document's weights are gathered from it
 * (AVX-512 or AVX2 gathers where the CPU has them; on CPUs with a native VP2INTERSECT, short
 * queries are intersected with each document instead). score = the sum over ids present in both rows
 * of w_query * w_doc, as {@link lexicalScore} computes for one pair.
 */
import { BGE_M3_VOCAB_SIZE } from '../base/defaults';
import { fromNative, inputError } from '../base/errors';
import { checkChoice, checkOptions, optionalInteger } from '../base/validate';
import { native, type IsaTierName } from '../addon/native';
import type { SparseRow, SparseVectors } from './vectors';

/** The largest vocabSize accepted (ids are looked up with signed 32-bit indices). */
const MAX_VOCAB_SIZE = 2 ** 31;

/** Options of {@link lexicalScores} and {@link lexicalScoresSync}. */
export interface LexicalScoresOptions {
  /** Threads to split the documents over, 1 to 256 (default 1). Results do not depend on it. */
  threads?: number;
  /**
   * Every id must be below this (default 250002, BGE-M3's vocabulary). Pass your model's
   * vocabulary size for another tokenizer. Each thread uses a table of this many floats.
   */
  vocabSize?: number;
}

/**
 * Kernel choice for tests and benchmarks: a tier ('serial' | 'avx2' | 'avx512', lowered to what
 * the CPU has; on AVX-512 CPUs with a native VP2INTERSECT, 'avx512' intersects queries of at most
 * 64 ids with each document instead of using the table), the AVX-512 table kernel alone
 * ('avx512-gather'), or the reference sorted merge per document ('merge').
 */
export type LexicalKernel = IsaTierName | 'avx512-gather' | 'merge';

const KERNELS: readonly LexicalKernel[] = ['serial', 'avx2', 'avx512', 'avx512-gather', 'merge'];

interface PreparedCall {
  query: SparseRow;
  docs: SparseVectors;
  threads: number;
  vocabSize: number;
}

function prepare(query: SparseRow, docs: SparseVectors, options: LexicalScoresOptions): PreparedCall {
  checkOptions(options);
  if (!query || typeof query !== 'object' || !(query.ids instanceof Uint32Array) || !(query.weights instanceof Float32Array)) {
    throw inputError('{ ids: Uint32Array, weights: Float32Array } (a row of encode().sparse)', 'query', query);
  }
  if (query.ids.length !== query.weights.length) {
    throw inputError(`a Float32Array of length ${query.ids.length} (as query.ids)`, 'query.weights', query.weights);
  }
  if (!docs || typeof docs !== 'object' || !(docs.offsets instanceof Uint32Array) || !(docs.ids instanceof Uint32Array) ||
      !(docs.weights instanceof Float32Array)) {
    throw inputError('{ offsets: Uint32Array, ids: Uint32Array, weights: Float32Array } (encode().sparse)', 'docs', docs);
  }
  if (docs.offsets.length < 1) throw inputError('count + 1 entries (at least [0])', 'docs.offsets', docs.offsets);
  if (docs.ids.length !== docs.weights.length) {
    throw inputError(`a Float32Array of length ${docs.ids.length} (as docs.ids)`, 'docs.weights', docs.weights);
  }
  const threads = optionalInteger(options.threads, 'threads', 1, 1, 256);
  const vocabSize = optionalInteger(options.vocabSize, 'vocabSize', BGE_M3_VOCAB_SIZE, 1, MAX_VOCAB_SIZE);
  return { query, docs, threads, vocabSize };
}

/**
 * Lexical scores of `query` against every document of `docs`, off the JS thread: a Float32Array
 * with one score per document. `docs` is shaped like encode()'s `sparse` output and `query` like
 * one of its rows. Rows must have ascending, unique ids below `vocabSize` and finite weights;
 * an empty query or document scores 0. Each score is the sum of exact products, accumulated in
 * float64 and rounded once to float32. Do not modify the arrays until the promise settles. Rejects with an M3Error (ERR_INPUT) naming the
 * first broken rule.
 */
export async function lexicalScores(query: SparseRow, docs: SparseVectors, options: LexicalScoresOptions = {}): Promise<Float32Array> {
  const callerStack = new Error().stack;
  try {
    const c = prepare(query, docs, options);
    return await native().lexicalScores(c.query.ids, c.query.weights, c.docs.offsets, c.docs.ids, c.docs.weights,
      c.vocabSize, c.threads);
  } catch (err) {
    throw fromNative(err, callerStack);
  }
}

/**
 * {@link lexicalScores} on the calling thread (worth it for a few thousand documents or fewer,
 * where a thread hand-off costs more than the scoring). `isa` forces a lower tier, the AVX-512
 * table kernel or the reference merge (tests, benchmarks).
 */
export function lexicalScoresSync(query: SparseRow, docs: SparseVectors,
  options: LexicalScoresOptions & { isa?: LexicalKernel } = {}): Float32Array {
  const c = prepare(query, docs, options);
  const isa = options.isa === undefined ? undefined : checkChoice(options.isa, 'isa', KERNELS);
  try {
    return native().lexicalScoresSync(c.query.ids, c.query.weights, c.docs.offsets, c.docs.ids, c.docs.weights,
      c.vocabSize, c.threads, isa);
  } catch (err) {
    throw fromNative(err);
  }
}
