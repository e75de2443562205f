/**
 * bge-m3: a native BGE-M3 engine for Node.js. Dense, lexical (sparse) and ColBERT outputs from
 * one forward pass through ONNX Runtime, with scoring helpers.
 */
export { BGEM3 } from './model';
export type { LoadOptions, EncodeOptions, ComputeScoreOptions, ComputeScoreResult, ModelInfo } from './model';
export { EncodeOutput } from './outputs';
export type { SparseVectors, MultiVectors, SparseRow, EncodeRow, EncodeStats } from './outputs';
export { denseScore, lexicalScore, colbertScore } from './scores';
export { M3Error } from './errors';
export type { M3ErrorCode } from './errors';
export { runtimeInfo, capabilities, setIsa, DEMO_MODEL_DIR } from './runtime';
export type { IsaTierName, NativeCapabilities as Capabilities } from './native';
export type { RuntimeInfo } from './runtime';
export type { TokenizedBatch } from './tokenizer';
export { maxSim, maxSimSync, quantize, DeviceMultiVectors, cudaInfo } from './maxsim';
export type { VectorFormat, QuantizedMultiVectors, MaxSimDocuments, MaxSimOptions, MaxSimQuery, DeviceUploadOptions } from './maxsim';
export { lexicalScores, lexicalScoresSync, BGE_M3_VOCAB_SIZE, type LexicalScoresOptions, type LexicalKernel } from './lexical';
export { HybridIndex } from './hybrid_index';
export type { DocumentId, HybridIndexOptions, SearchOptions, SearchHit, ModelIdentity, ModelLike } from './hybrid_index';
export { evaluate, readEvalRows, formatMetricsTable, EVAL_MODES } from './evaluate';
export type { EvalRow, ModeMetrics, EvaluateOptions, EvaluateResult } from './evaluate';
export { Batcher } from './batcher';
export type { BatcherOptions, BatcherEncodeOptions, BatcherStats, BatchInfo } from './batcher';
export { decodeWire, encodeWire, WIRE_CONTENT_TYPE } from './wire';
export { m3Loss } from './train';
export type { M3LossScores, M3LossOptions, M3LossResult } from './train';
export { finetuneHeads } from './finetune';
export type { FinetuneOptions, FinetuneEvent, FinetuneResult, StepLosses } from './finetune';
