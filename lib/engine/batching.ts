/**
 * The batch plan of one encode: texts sorted by token length (longest first, as FlagEmbedding
 * does), cut into batches that respect a text count and a padded-token budget and waste little
 * on padding.
 */

export interface BatchPlan {
  /** Text indices in processing order. */
  order: Uint32Array;
  /** Exclusive ends into `order`, one per batch. */
  batchEnds: Uint32Array;
}

/**
 * What one more model run costs in the planner's cost model, in padded tokens: a run of B texts
 * padded to length L costs RUN_COST_TOKENS + B * L. Padding costs as much compute as real
 * tokens, so one batch that mixes very different lengths is slower than several tighter ones;
 * a run's fixed cost (thread hand-offs, small GEMMs) bounds how far to split. 32 was fastest
 * for 64 texts of 8 to 48 tokens on 1 and 2 threads (bench model, CPU): 1.7x and 1.3x faster
 * than two full batches of 32.
 */
export const RUN_COST_TOKENS = 32;

/** What one model run may hold. */
export interface BatchLimits {
  /** Most texts per run. */
  batchSize: number;
  /** Most padded tokens per run (texts x the longest one's length). */
  maxBatchTokens: number;
  /**
   * Most attention-score cells per head in a run: texts x length², length the longest text's.
   * Self-attention holds a [texts, heads, length, length] score tensor per layer, so its memory
   * grows with the square of the length (two 8192-token texts of BGE-M3: 8.6 GB of scores).
   * Default: no limit.
   */
  maxAttentionCells?: number;
}

/**
 * Plans batches over texts of the given token lengths: sorted longest first, then cut where the
 * cost model above is lowest (an exact dynamic programme over the sorted order). A batch holds
 * at most `batchSize` texts and, padded to its longest member, at most `maxBatchTokens`
 * tokens and `maxAttentionCells` attention cells; a text over a budget gets a batch of its own.
 * Ties keep the caller's order, so the plan is deterministic.
 */
export function planBatches(lengths: ArrayLike<number>, limits: BatchLimits, runCost = RUN_COST_TOKENS): BatchPlan {
  const { batchSize, maxBatchTokens } = limits;
  const maxAttentionCells = limits.maxAttentionCells ?? Infinity;
  const n = lengths.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => lengths[b] - lengths[a] || a - b);
  // best[i]: the cheapest plan of the first i sorted texts; from[i]: where its last batch starts.
  const best = new Float64Array(n + 1).fill(Infinity);
  const from = new Int32Array(n + 1);
  best[0] = 0;
  for (let i = 1; i <= n; i++) {
    for (let j = i - 1; j >= 0 && i - j <= batchSize; j--) {
      // Texts j .. i-1, padded to the longest, texts[order[j]]; growing the batch backwards
      // only raises both factors, so the first one over a budget ends the search.
      const longest = lengths[order[j]];
      const padded = (i - j) * longest;
      if (i - j > 1 && (padded > maxBatchTokens || padded * longest > maxAttentionCells)) break;
      const cost = best[j] + runCost + padded;
      if (cost <= best[i]) {
        best[i] = cost;
        from[i] = j;
      }
    }
  }
  const ends: number[] = [];
  for (let i = n; i > 0; i = from[i]) ends.push(i);
  return { order, batchEnds: Uint32Array.from(ends.reverse()) };
}
