/**
 * The batch plan of one encode: texts sorted by token length (longest first, as FlagEmbedding
 * does), cut into batches that respect both a text count and a padded-token budget.
 */

export interface BatchPlan {
  /** Text indices in processing order. */
  order: Uint32Array;
  /** Exclusive ends into `order`, one per batch. */
  batchEnds: Uint32Array;
}

/**
 * Plans batches over texts of the given token lengths. A batch holds at most `batchSize` texts
 * and, padded to its longest member, at most `maxBatchTokens` tokens; a text longer than the
 * budget gets a batch of its own. Ties keep the caller's order, so the plan is deterministic.
 */
export function planBatches(lengths: ArrayLike<number>, batchSize: number, maxBatchTokens: number): BatchPlan {
  const n = lengths.length;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => lengths[b] - lengths[a] || a - b);
  const ends: number[] = [];
  let start = 0;
  while (start < n) {
    const longest = lengths[order[start]];
    let end = start + 1;
    while (end < n && end - start < batchSize && (end - start + 1) * longest <= maxBatchTokens) end++;
    ends.push(end);
    start = end;
  }
  return { order, batchEnds: Uint32Array.from(ends) };
}
