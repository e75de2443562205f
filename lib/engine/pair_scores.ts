/**
 * The scores of query-passage pairs in all three modes and their two weighted combinations, as
 * FlagEmbedding's `compute_score` gives them (BGEM3.computeScore and POST /score).
 */
import { checkWeights, fuse, fuseDenseSparse, type FusionWeights } from '../scoring/fusion';
import { colbertScore, denseScore, lexicalScore } from '../scoring/scores';
import type { EncodeOutput } from './outputs';

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
export function pairScores(queries: EncodeOutput, passages: EncodeOutput, weights: FusionWeights): PairScores {
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
