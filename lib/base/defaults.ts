/**
 * Defaults that several surfaces share (the model, the batcher, the server, the CLI, training),
 * so that each has one value. The [dense, sparse, colbert] weight triples live with the fusion
 * formula (lib/scoring/fusion.ts).
 */

/** Truncation of encode (BGE-M3's 8192 positions; never more than a model has). */
export const DEFAULT_MAX_LENGTH = 8192;

/** Query truncation where queries are encoded apart from passages (FlagEmbedding's 512). */
export const DEFAULT_QUERY_LENGTH = 512;

/** Texts per model run. */
export const DEFAULT_BATCH_SIZE = 32;

/** Padded tokens per model run (and tokens per coalesced batch of the batcher). */
export const DEFAULT_MAX_BATCH_TOKENS = 16384;

/**
 * Texts and padded tokens per model run by device: the CPU figures above (batches whose
 * activations stay in cache), and on a GPU batches large enough to fill it (FlagEmbedding
 * encodes passages 256 at a time on a GPU). The batcher coalesces up to the same token budget.
 */
export const DEFAULT_BATCH_LIMITS = {
  cpu: { batchSize: DEFAULT_BATCH_SIZE, maxBatchTokens: DEFAULT_MAX_BATCH_TOKENS },
  cuda: { batchSize: 256, maxBatchTokens: 131072 },
} as const;

/** BGE-M3's vocabulary size (XLM-RoBERTa's 250,002 tokens): the default bound on sparse ids. */
export const BGE_M3_VOCAB_SIZE = 250002;

/** The query truncation for a model whose position table allows `modelMaxLength` tokens. */
export function queryLength(modelMaxLength: number): number {
  return Math.min(DEFAULT_QUERY_LENGTH, modelMaxLength);
}

/** The passage (encode) truncation for a model whose position table allows `modelMaxLength` tokens. */
export function passageLength(modelMaxLength: number): number {
  return Math.min(DEFAULT_MAX_LENGTH, modelMaxLength);
}
