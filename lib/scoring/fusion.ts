/**
 * The weighted fusion of the three scores, and the one check of its weights that every surface
 * (computeScore, HybridIndex.search, the CLI and the HTTP routes) applies.
 *
 * The fused score is (w_d * dense + w_s * sparse + w_c * colbert) / (w_d + w_s + w_c), FlagEmbedding's
 * combination. Finite weights can still overflow it: [1e308, 1e308, 1e308] sums to Infinity and
 * the score to NaN or 0. The ratio does not change when every weight is divided by the largest,
 * so the weights are scaled to a largest of 1 once, when checked: no product or sum of them can
 * then overflow, and tiny weights (down to subnormals) keep their proportions.
 */
import { M3Error } from '../base/errors';
import { checkWeightTriple } from '../base/validate';

/** [dense, sparse, colbert] weights. */
export type FusionWeights = readonly [number, number, number];

/**
 * The one default [dense, sparse, colbert] triple of every surface: computeScore, `bge-m3 score`,
 * POST /score, POST /rerank (and /v1/rerank), HybridIndex.search and `bge-m3 search`. It is the
 * BGE-M3 paper's "All" setting for MIRACL and MKQA (w1 = 1, w2 = 0.3, w3 = 1), so the same pair
 * scores the same everywhere; its first two weights are the paper's "Dense+Sparse" setting, the
 * weights of 'sparse+dense'. FlagEmbedding's `compute_score` defaults to [1, 1, 1] and its README
 * example passes [0.4, 0.2, 0.4]: pass those as `weights` to compare (docs/semantics.md).
 */
export const DEFAULT_WEIGHTS: FusionWeights = [1, 0.3, 1];

/** Which weights must not all be zero, so the fused score has a denominator. */
export interface WeightNeeds {
  /** 'sparse+dense' is computed too: dense and sparse must not both be 0. */
  denseOrSparse?: boolean;
  /** The ColBERT score exists (false: an index without ColBERT vectors; its weight does not count). */
  colbert?: boolean;
}

/**
 * Checks [dense, sparse, colbert] weights (three finite non-negative numbers whose weighted
 * combinations have a denominator) and returns them scaled so that the largest is 1.
 */
export function checkWeights(weights: unknown, what = 'weights', needs: WeightNeeds = {}): [number, number, number] {
  const [d, s, c] = checkWeightTriple(weights, what, '[dense, sparse, colbert]');
  const counted = needs.colbert === false ? [d, s] : [d, s, c];
  const largest = Math.max(...counted);
  if (largest === 0) {
    throw new M3Error('ERR_INPUT', `${what} ${JSON.stringify(weights)} are all zero for the scores there are; give one a positive weight`);
  }
  if (needs.denseOrSparse && d === 0 && s === 0) {
    throw new M3Error('ERR_INPUT', `${what} ${JSON.stringify(weights)}: dense and sparse cannot both be 0 ('sparse+dense' would divide by zero); give one a positive weight`);
  }
  // Without a ColBERT score its weight plays no part (and could be far larger than the others).
  return [d / largest, s / largest, needs.colbert === false ? 0 : c / largest];
}

/** The weighted mean of the three scores, with weights from {@link checkWeights}. */
export function fuse(w: FusionWeights, dense: number, sparse: number, colbert: number): number {
  return (w[0] * dense + w[1] * sparse + w[2] * colbert) / (w[0] + w[1] + w[2]);
}

/** The weighted mean of dense and sparse ('sparse+dense'), with weights from {@link checkWeights}. */
export function fuseDenseSparse(w: FusionWeights, dense: number, sparse: number): number {
  return fuse([w[0], w[1], 0], dense, sparse, 0);
}
