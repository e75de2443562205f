/**
 * bge-m3: a native BGE-M3 engine for Node.js. Dense, lexical (sparse) and ColBERT outputs from
 * one forward pass through ONNX Runtime, with scoring helpers.
 */
export { BGEM3 } from './engine/model';
export type { LoadOptions, EncodeOptions, ComputeScoreOptions, ComputeScoreResult, ModelInfo, DownloadProgress } from './engine/model';
export { EncodeOutput } from './engine/outputs';
export type { SparseVectors, MultiVectors, SparseRow, EncodeRow, EncodeRowView, EncodeStats, EncodeOutputJSON, EncodeRowJSON, SparseJSON } from './engine/outputs';
export { denseScore, lexicalScore, colbertScore } from './scoring/scores';
export { DEFAULT_WEIGHTS, type FusionWeights } from './scoring/fusion';
export { M3Error } from './base/errors';
export type { M3ErrorCode } from './base/errors';
export { runtimeInfo, capabilities, setIsa, DEMO_MODEL_DIR, VERSION } from './engine/runtime';
export type { IsaTierName, NativeCapabilities as Capabilities } from './addon/native';
export type { RuntimeInfo } from './engine/runtime';
export type { TokenizedBatch } from './engine/tokenizer';
export { maxSim, maxSimSync, quantize, DeviceMultiVectors, cudaInfo } from './scoring/maxsim';
export type { VectorFormat, QuantizedMultiVectors, MaxSimDocuments, MaxSimOptions, MaxSimQuery, DeviceUploadOptions } from './scoring/maxsim';
export { lexicalScores, lexicalScoresSync, type LexicalScoresOptions, type LexicalKernel } from './scoring/lexical';
export { BGE_M3_VOCAB_SIZE } from './base/defaults';
export { HybridIndex } from './retrieval/hybrid_index';
export { MetadataFilter, type Filter, type FieldConditions, type FilterScalar, type FilterSql } from './retrieval/filter';
export type {
  DocumentId, HybridIndexOptions, SearchOptions, SearchHit, ModelIdentity, ModelLike, DocumentFields, DocumentMetadata, StoredDocument, DocumentBatch,
} from './retrieval/hybrid_index';
export { PgStore } from './store/pg_store';
export type { PgStoreOptions, StoreSearchOptions, StoreHit, StoreDocument } from './store/pg_store';
export { ingest, type IngestOptions, type IngestProgress, type IngestResult } from './store/ingest';
export { parseStoreUrl } from './store/url';
export { importIndex, exportIndex, type TransferOptions } from './store/transfer';
export { evaluate, formatMetricsTable, EVAL_MODES } from './training/evaluate';
export type { ModeMetrics, EvaluateOptions, EvaluateResult } from './training/evaluate';
export { readEvalRows, type EvalRow } from './training/rows';
export { Batcher } from './engine/batcher';
export type { BatcherOptions, BatcherEncodeOptions, BatcherStats, BatchInfo } from './engine/batcher';
export { decodeWire, encodeWire, WIRE_CONTENT_TYPE } from './serve/wire';
export { m3Loss } from './training/train';
export type { M3LossScores, M3LossOptions, M3LossResult } from './training/train';
export { finetuneHeads } from './training/finetune';
export type { FinetuneOptions, FinetuneEvent, FinetuneResult, StepLosses } from './training/finetune';
