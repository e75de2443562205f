/**
 * The search options every hybrid retriever takes (HybridIndex in process, PgStore in
 * PostgreSQL), checked in one place so that both read them alike: the same defaults, the same
 * weights (scoring/fusion.ts) and the same rule that each route recalls at least k candidates.
 */
import { inputError } from '../base/errors';
import { checkOptions, optionalInteger } from '../base/validate';
import { DEFAULT_WEIGHTS, checkWeights } from '../scoring/fusion';
import type { Filter } from './filter';

/** Candidates each route recalls by default. */
export const DEFAULT_CANDIDATES = 200;
/** The largest count a search option takes. */
export const MAX_COUNT = 2 ** 31;

/** Search options as checked. */
export interface SearchParams {
  k: number;
  /** Scaled so that the largest is 1 (fusion.ts); the ColBERT weight is 0 without ColBERT vectors. */
  wDense: number;
  wSparse: number;
  wColbert: number;
  denseCandidates: number;
  sparseCandidates: number;
  denseRoute: boolean;
  sparseRoute: boolean;
  exhaustive: boolean;
  threads: number;
}

/** Search options as a caller gives them (HybridIndex.search, PgStore.search). */
export interface SearchParamOptions {
  /** Results to return (default 10). */
  k?: number;
  /** [dense, sparse, colbert] weights (default the paper's [1, 0.3, 1]). */
  weights?: [number, number, number];
  /** Candidates from the dense route (default 200). */
  denseCandidates?: number;
  /** Candidates from the sparse route (default 200). */
  sparseCandidates?: number;
  /** Recall routes (default both). */
  routes?: Array<'dense' | 'sparse'>;
  /** Score every document instead of recalling candidates (exact; the reference for recall). */
  exhaustive?: boolean;
  /** Threads: for the ColBERT rerank of search(), across queries in searchBatch() (default 1). */
  threads?: number;
  /**
   * Only documents whose metadata matches (filter.ts; a document without metadata is tested as
   * {}). Every route recalls among the matching documents only, so k hits come back whenever k
   * documents match (within what the routes reach: the sparse route only finds documents that
   * share a token with the query).
   */
  filter?: Filter;
}

/** Checks the common search options; `colbert` says whether the retriever stores ColBERT vectors. */
export function searchParams(options: SearchParamOptions, colbert: boolean): SearchParams {
  checkOptions(options);
  const k = optionalInteger(options.k, 'k', 10, 1, MAX_COUNT);
  const weights = checkWeights(options.weights ?? DEFAULT_WEIGHTS, 'weights', { colbert });
  const routes = options.routes ?? ['dense', 'sparse'];
  if (!Array.isArray(routes) || routes.length === 0 || routes.some((r) => r !== 'dense' && r !== 'sparse')) {
    throw inputError("a non-empty array of 'dense' and 'sparse'", 'routes', routes);
  }
  return {
    k, wDense: weights[0], wSparse: weights[1], wColbert: weights[2],
    // Each route recalls at least k candidates, so k results come back whenever they exist.
    denseCandidates: Math.max(k, optionalInteger(options.denseCandidates, 'denseCandidates', DEFAULT_CANDIDATES, 1, MAX_COUNT)),
    sparseCandidates: Math.max(k, optionalInteger(options.sparseCandidates, 'sparseCandidates', DEFAULT_CANDIDATES, 1, MAX_COUNT)),
    denseRoute: routes.includes('dense'), sparseRoute: routes.includes('sparse'),
    exhaustive: options.exhaustive === undefined ? false : !!options.exhaustive,
    threads: Math.min(optionalInteger(options.threads, 'threads', 1, 1, MAX_COUNT), 1024),
  };
}
