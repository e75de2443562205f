/**
 * What BGEM3 takes (load, encode and computeScore options) and reports (info), and the checks of
 * those options.
 */
import { DEVICES, type Device, type NativeModelInfo } from '../addon/native';
import { DEFAULT_BATCH_LIMITS } from '../base/defaults';
import { M3Error, inputError } from '../base/errors';
import { checkBoolean, checkChoice, checkInteger, checkSignal, optionalInteger } from '../base/validate';
import type { BatchLimits } from './batching';
import type { DownloadProgress } from './hub_download';
import { checkOutputs } from './outputs';

/** Options of {@link BGEM3.load}. */
export interface LoadOptions {
  /** 'cpu' (default) or 'cuda' (needs ONNX Runtime's CUDA provider libraries). */
  device?: Device;
  /** CUDA device ordinal (default 0). */
  deviceId?: number;
  /**
   * device 'cuda' only: the most bytes ONNX Runtime's GPU memory arena may hold (default: no
   * limit). The arena grows by what each run asks for, not by powers of two.
   */
  gpuMemLimit?: number;
  /**
   * device 'cuda' only: let fp32 matrix products use TF32 tensor-core math (default false). Faster
   * on Ampere and later GPUs, with a 10-bit mantissa in the products: outputs move by about 1e-3,
   * outside the fp32 parity the package otherwise keeps.
   */
  allowTf32?: boolean;
  /** ONNX Runtime intra-op threads per run (default: one per physical core). */
  threads?: number;
  /** ONNX Runtime inter-op threads (default 1). */
  interOpThreads?: number;
  /** How many encode batches may run at once on this model (default 1). */
  concurrency?: number;
  /** Graph optimisation level (default 'all'). */
  graphOptimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** ONNX Runtime's CPU memory arena (default true). */
  memoryArena?: boolean;
  /**
   * Once no encode has run for this many ms, give the memory a burst of large batches left
   * behind back to the system ({@link BGEM3.releaseMemory}; default 1000, 0: never on its own).
   */
  releaseMemoryAfterMs?: number;
  /**
   * Let ONNX Runtime's threads spin-wait between runs (default false: they would hold the cores
   * the native heads use right after each run, and burn CPU while a server idles).
   */
  allowSpinning?: boolean;
  /**
   * Run each self-attention block of the graph as one fused kernel (default true; CPU with
   * AVX2 or AVX-512). The graph is rewritten as it loads: the softmax(q·kᵀ·scale + mask)·v core of
   * each block becomes one node whose scores never leave the cache, instead of a
   * batch x heads x length² tensor per layer. `info().fusedAttentionBlocks` says how many blocks
   * run fused, `info().attentionNote` why none do. false runs the graph's own attention ops.
   */
  fusedAttention?: boolean;
  /**
   * Arithmetic of the graph's dense layers and fused attention (default 'fp32', FlagEmbedding's
   * own). 'bf16' (a CPU with AVX-512 BF16; faster on AMD Zen 4 and 5, slower than fp32 on an
   * Intel Xeon measured) rewrites each MatMul by a weight (plus its bias) into a kernel that rounds the
   * inputs and weights to bf16 and sums the products in fp32, and runs the fused attention's two
   * products the same way (its softmax in fp32): about twice the multiply-adds per instruction,
   * at the cost of agreeing with the fp32 model only to about 1e-3 instead of 1e-6. The weights
   * are packed once at load (half the size of the fp32 ones, which ONNX Runtime keeps).
   * 'fp16' is the GPU's path (device 'cuda'): the graph is converted at load to fp16 weights and
   * activations for the tensor cores, with LayerNorm statistics and squared norms kept in fp32
   * and the outputs cast back to fp32 (docs/gpu.md); `info().fp16` says what was converted. It
   * also runs on the CPU, slowly, to check the conversion.
   * `info().precision` says what runs; elsewhere the model runs in fp32 and
   * `info().precisionNote` says why.
   */
  precision?: 'fp32' | 'bf16' | 'fp16';
  /** Default truncation length for encode (default 8192, never more than the model's positions). */
  maxLength?: number;
  /** The graph file, relative to the model directory, when it is not onnx/model.onnx or model.onnx. */
  onnxFile?: string;
  /**
   * Where ONNX Runtime writes the graph as it optimized it for this device (an .onnx file), to
   * see which of its fusions fired (`scripts/ort-fusions.js` counts them). For inspection only:
   * the file holds the weights too, so leave it unset for a model over 2 GB.
   */
  optimizedGraphPath?: string;
  /** A model by hub id: the branch, tag or commit hash (default 'main'; `ORG/NAME@revision` says the same). */
  revision?: string;
  /** A model by hub id: the Hugging Face cache (default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** A model by hub id: the access token for a private or gated model (default $HF_TOKEN). */
  token?: string;
  /**
   * A model by hub id: called as each file downloads (default: a progress bar when stderr is a
   * terminal, else nothing).
   */
  onProgress?: (progress: DownloadProgress) => void;
}

/** Options of {@link BGEM3.encode}. */
export interface EncodeOptions {
  /** Compute the dense vector (default true). */
  dense?: boolean;
  /** Compute the lexical weights (default true). */
  sparse?: boolean;
  /** Compute the ColBERT vectors (default false). */
  colbert?: boolean;
  /** Truncate each text to this many tokens including <s> and </s> (default: the model's maxLength). */
  maxLength?: number;
  /** Most texts per batch (default 32 on the CPU, 256 on a GPU). */
  batchSize?: number;
  /** Most padded tokens per batch (default 16384 on the CPU, 131072 on a GPU; a longer text gets a batch of its own). */
  maxBatchTokens?: number;
  /**
   * Most bytes of one batch's attention scores, texts x heads x length² x 4 (default 16 MiB on
   * the CPU, 1 GiB on a GPU). The graph's own attention (a GPU, `fusedAttention: false`, a CPU
   * without AVX2) holds about two such tensors at its peak, so long texts run in smaller batches:
   * one 8192-token text of BGE-M3 alone needs 4.3 GB of scores. A text over the budget still
   * runs, alone. On the CPU small batches of long texts are also faster, fused or not (their
   * activations stay in cache): BGE-M3's shape at 512 tokens ran 19% faster one text at a time
   * than 16 at once.
   */
  maxAttentionBytes?: number;
  /** Cancels queued work and the run in progress; the promise rejects with ERR_ABORTED. */
  signal?: AbortSignal;
  /**
   * Cut texts longer than maxLength (default true, as FlagEmbedding does); false makes such a
   * text an ERR_TOO_LONG error that names it.
   */
  truncate?: boolean;
}

/** Options of {@link BGEM3.computeScore}. */
export interface ComputeScoreOptions {
  /** [w_dense, w_sparse, w_colbert] for the combined scores (default DEFAULT_WEIGHTS, the paper's [1, 0.3, 1]). */
  weights?: [number, number, number];
  /** Query truncation (default 512). */
  maxQueryLength?: number;
  /** Passage truncation (default 8192, capped by the model). */
  maxPassageLength?: number;
  batchSize?: number;
  maxBatchTokens?: number;
  maxAttentionBytes?: number;
  signal?: AbortSignal;
}

/** What {@link BGEM3.info} reports. */
export interface ModelInfo extends NativeModelInfo {
  dir: string;
  /** The directory, or the hub id (ORG/NAME[@revision]) the model was loaded by: what to load it again with. */
  name: string;
  tokenizer: string;
  vocabSize: number;
  /** Longest input the model's position table allows. */
  modelMaxLength: number;
  /** Default truncation of encode. */
  maxLength: number;
  /** Self-attention heads (config.json num_attention_heads; 16, BGE-M3's, without it). */
  attentionHeads: number;
}

/** Default maxAttentionBytes by device: cache-sized batches on the CPU, large ones on a GPU. */
const DEFAULT_MAX_ATTENTION_BYTES = { cpu: 16 * 2 ** 20, cuda: 2 ** 30 } as const;

/** A truncation length: an integer >= 2 (room for <s> and </s>) within the model's positions. */
export function checkLength(value: unknown, what: string, modelMaxLength: number): number {
  if (typeof value === 'number' && Number.isInteger(value) && value > modelMaxLength) {
    throw new M3Error('ERR_INPUT', `${what} ${value} exceeds this model's ${modelMaxLength} usable positions ` +
      `(config.json max_position_embeddings); pass at most ${modelMaxLength}`);
  }
  return checkInteger(value, what, 2, modelMaxLength);
}

/** Load options checked, with the defaults of those the native loader does not default itself. */
export interface CheckedLoadOptions {
  device: Device;
  memoryArena: boolean;
  releaseMemoryAfterMs: number;
  allowSpinning: boolean;
  fusedAttention: boolean;
  precision: 'fp32' | 'bf16' | 'fp16';
}

/** Checks every load option (maxLength excepted: it needs the model's positions). */
export function checkLoadOptions(options: LoadOptions): CheckedLoadOptions {
  const device = checkChoice(options.device, 'device', DEVICES, 'cpu');
  if (options.threads !== undefined) checkInteger(options.threads, 'threads', 1, 1024);
  if (options.interOpThreads !== undefined) checkInteger(options.interOpThreads, 'interOpThreads', 1, 1024);
  if (options.concurrency !== undefined) checkInteger(options.concurrency, 'concurrency', 1, 64);
  if (options.deviceId !== undefined) checkInteger(options.deviceId, 'deviceId', 0, 1024);
  if (options.gpuMemLimit !== undefined) {
    checkInteger(options.gpuMemLimit, 'gpuMemLimit', 1 << 20, Number.MAX_SAFE_INTEGER);
    if (device !== 'cuda') throw new M3Error('ERR_INPUT', "gpuMemLimit limits the GPU arena of device 'cuda'; pass device: 'cuda' or drop it");
  }
  if (options.allowTf32 !== undefined) {
    if (typeof options.allowTf32 !== 'boolean') throw inputError('true or false', 'allowTf32', options.allowTf32);
    if (options.allowTf32 && device !== 'cuda') throw new M3Error('ERR_INPUT', "allowTf32 applies to device 'cuda' (TF32 is a GPU tensor-core mode); pass device: 'cuda' or drop it");
  }
  if (options.graphOptimization !== undefined) {
    checkChoice(options.graphOptimization, 'graphOptimization', ['disabled', 'basic', 'extended', 'all'] as const);
  }
  if (options.onnxFile !== undefined && typeof options.onnxFile !== 'string') throw inputError('a path', 'onnxFile', options.onnxFile);
  if (options.optimizedGraphPath !== undefined && (typeof options.optimizedGraphPath !== 'string' || options.optimizedGraphPath === ''))
    throw inputError('a file path', 'optimizedGraphPath', options.optimizedGraphPath);
  for (const key of ['revision', 'cacheDir', 'token'] as const) {
    const value = options[key];
    if (value !== undefined && (typeof value !== 'string' || value.length === 0)) throw inputError('a non-empty string', key, value);
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw inputError('a function', 'onProgress', options.onProgress);
  }
  const memoryArena = checkBoolean(options.memoryArena, 'memoryArena', true);
  const releaseMemoryAfterMs = optionalInteger(options.releaseMemoryAfterMs, 'releaseMemoryAfterMs', 1000, 0, 2 ** 31 - 1);
  const allowSpinning = checkBoolean(options.allowSpinning, 'allowSpinning', false);
  const fusedAttention = checkBoolean(options.fusedAttention, 'fusedAttention', true);
  const precision = checkChoice(options.precision, 'precision', ['fp32', 'bf16', 'fp16'] as const, 'fp32');
  return { device, memoryArena, releaseMemoryAfterMs, allowSpinning, fusedAttention, precision };
}

/** Checked encode options, as the native run takes them. */
export interface RunOptions {
  /** The outputs, as bits (OUTPUT_DENSE, ...). */
  flags: number;
  limits: BatchLimits;
  signal?: AbortSignal;
}

/** Encode's output and batching options, checked, for a model on `device` with `attentionHeads` heads. */
export function checkRunOptions(options: Omit<EncodeOptions, 'maxLength' | 'truncate'>, device: Device, attentionHeads: number): RunOptions {
  const flags = checkOutputs(options);
  const defaults = DEFAULT_BATCH_LIMITS[device];
  const batchSize = optionalInteger(options.batchSize, 'batchSize', defaults.batchSize, 1, 1 << 20);
  const maxBatchTokens = optionalInteger(options.maxBatchTokens, 'maxBatchTokens', defaults.maxBatchTokens, 2, 1 << 30);
  const maxAttentionBytes = optionalInteger(options.maxAttentionBytes, 'maxAttentionBytes', DEFAULT_MAX_ATTENTION_BYTES[device],
    1 << 20, Number.MAX_SAFE_INTEGER);
  // fp32 scores: 4 bytes a cell, one cell per head.
  const maxAttentionCells = Math.floor(maxAttentionBytes / (4 * attentionHeads));
  return { flags, limits: { batchSize, maxBatchTokens, maxAttentionCells }, signal: checkSignal(options.signal) };
}
