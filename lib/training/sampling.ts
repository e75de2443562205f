/**
 * What each fine-tuning step trains on: the rows shuffled, and for each row one positive and
 * groupSize - 1 negatives sampled, all from a generator seeded by (seed, epoch) alone, so an
 * epoch's plan is the same on every platform and after a resume.
 */
import { mulberry32, shuffle } from '../base/rng';

/** A training row with its texts as cache indices. */
export interface Example { query: number; pos: number[]; neg: number[] }

/** One step: query indices, passage indices, and each query's positive (an index into passages). */
export interface Step { queries: Int32Array; passages: Int32Array; target: Int32Array }

/** What the plan depends on. */
export interface SamplingConfig {
  seed: number;
  groupSize: number;
  batchSize: number;
}

/**
 * The steps of one epoch: rows shuffled, then for each row one positive and groupSize - 1
 * negatives sampled (with repetition only when the row has too few, as FlagEmbedding does).
 */
export function planEpoch(examples: readonly Example[], config: SamplingConfig, epoch: number): Step[] {
  const random = mulberry32(Math.imul(config.seed + 1, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca77));
  const order = shuffle(examples.map((_, i) => i), random);
  const steps: Step[] = [];
  for (let start = 0; start < order.length; start += config.batchSize) {
    const rows = order.slice(start, start + config.batchSize).map((i) => examples[i]);
    const passages: number[] = [];
    const target: number[] = [];
    for (const row of rows) {
      target.push(passages.length);
      passages.push(row.pos[Math.floor(random() * row.pos.length)]);
      const want = config.groupSize - 1;
      if (row.neg.length === 0 || want === 0) continue;
      let pool = row.neg;
      if (pool.length < want) pool = Array.from({ length: Math.ceil(want / pool.length) }, () => row.neg).flat();
      passages.push(...shuffle([...pool], random).slice(0, want));
    }
    steps.push({ queries: Int32Array.from(rows.map((r) => r.query)), passages: Int32Array.from(passages), target: Int32Array.from(target) });
  }
  return steps;
}
