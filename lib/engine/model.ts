/**
 * BGEM3: a loaded BGE-M3 model. Encoding runs on threads owned by the native addon; this class
 * validates arguments, tokenizes, plans batches and shapes the results.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_LENGTH, passageLength, queryLength } from '../base/defaults';
import { M3Error, abortedError, describe, fromNative, inputError } from '../base/errors';
import { checkBoolean, checkChoice, checkInteger, checkNonEmptyString, checkOptions, checkSignal, optionalInteger } from '../base/validate';
import { native, type NativeEncoder, type NativeModelInfo } from '../addon/native';
import { planBatches, type BatchLimits } from './batching';
import { describeFileKind, readRegularFile, regularFileStats } from '../base/files';
import { SCORE_WEIGHTS, checkWeights } from '../scoring/fusion';
import { EncodeOutput, OUTPUT_HIDDEN, checkOutputs, outputsOf, type SparseRow } from './outputs';
import { pairScores, type PairScores } from '../scoring/scores';
import { CLS_ID, EOS_ID, M3Tokenizer, findTokenizerFile, type TokenizedBatch } from './tokenizer';

/** Options of {@link BGEM3.load}. */
export interface LoadOptions {
  /** 'cpu' (default) or 'cuda' (needs ONNX Runtime's CUDA provider libraries). */
  device?: 'cpu' | 'cuda';
  /** CUDA device ordinal (default 0). */
  deviceId?: number;
  /**
   * device 'cuda' only: the most bytes ONNX Runtime's GPU memory arena may hold (default: no
   * limit). The arena grows by what each run asks for, not by powers of two.
   */
  gpuMemLimit?: number;
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
   * `info().precision` says what runs; elsewhere the model runs in fp32 and
   * `info().precisionNote` says why.
   */
  precision?: 'fp32' | 'bf16';
  /** Default truncation length for encode (default 8192, never more than the model's positions). */
  maxLength?: number;
  /** The graph file, relative to the model directory, when it is not onnx/model.onnx or model.onnx. */
  onnxFile?: string;
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
  /** Most texts per batch (default 32). */
  batchSize?: number;
  /** Most padded tokens per batch (default 16384; a longer text gets a batch of its own). */
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
  /** [w_dense, w_sparse, w_colbert] for the combined scores (default [1, 1, 1]). */
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

/** The five score lists of {@link BGEM3.computeScore}, FlagEmbedding's key names. */
export type ComputeScoreResult = PairScores;

/** What {@link BGEM3.info} reports. */
export interface ModelInfo extends NativeModelInfo {
  dir: string;
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
/** BGE-M3's (XLM-RoBERTa large's) attention heads, for a model directory without config.json. */
const DEFAULT_ATTENTION_HEADS = 16;

/** A truncation length: an integer >= 2 (room for <s> and </s>) within the model's positions. */
function checkLength(value: unknown, what: string, modelMaxLength: number): number {
  if (typeof value === 'number' && Number.isInteger(value) && value > modelMaxLength) {
    throw new M3Error('ERR_INPUT', `${what} ${value} exceeds this model's ${modelMaxLength} usable positions ` +
      `(config.json max_position_embeddings); pass at most ${modelMaxLength}`);
  }
  return checkInteger(value, what, 2, modelMaxLength);
}

/** Usable positions from config.json: max_position_embeddings minus the padding offset. */
interface ModelConfig {
  max_position_embeddings?: unknown;
  pad_token_id?: unknown;
  vocab_size?: unknown;
  num_attention_heads?: unknown;
}

/** config.json is a few hundred bytes; anything near this is not one. */
const MAX_CONFIG_BYTES = 1 << 20;

/**
 * Refuses a model directory (or its onnx/ folder) that holds a FIFO, socket or device, or a link
 * to one: ONNX Runtime opens the graph's external data files by the names the graph gives, and
 * an open(2) of a FIFO there would block the load forever.
 */
function checkModelEntries(dir: string): void {
  for (const folder of [dir, path.join(dir, 'onnx')]) {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(folder, { withFileTypes: true });
    } catch {
      continue;  // no onnx/ folder; an unreadable one is reported by the file that needs it
    }
    for (const entry of entries) {
      if (entry.isFile() || entry.isDirectory()) continue;
      const file = path.join(folder, entry.name);
      let stats: fs.Stats;
      try {
        stats = fs.statSync(file);
      } catch {
        continue;  // a dangling link: reported as missing if it is needed
      }
      if (!stats.isFile() && !stats.isDirectory()) {
        throw new M3Error('ERR_MODEL_FILES', `Model file '${file}' is ${entry.isSymbolicLink() ? 'a symbolic link to ' : ''}` +
          `${describeFileKind(stats)}, not a regular file; put the file itself at this path (or remove it).`);
      }
    }
  }
}

/** The model directory's config.json, or {} without one. */
function readModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  if (!regularFileStats(file, 'Model file')) return {};
  let config: unknown;
  try {
    config = JSON.parse(readRegularFile(file, 'Model file', MAX_CONFIG_BYTES).toString('utf8'));
  } catch (err) {
    if (err instanceof M3Error) throw err;
    throw new M3Error('ERR_MODEL_FILES', `Could not parse '${file}': ${(err as Error).message}`, { cause: err });
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new M3Error('ERR_MODEL_FILES', `'${file}' holds ${describe(config)}, not a JSON object; ` +
      "use the config.json that came with the model (or remove it: BGE-M3's defaults then apply)");
  }
  return config as ModelConfig;
}

/**
 * A tokenizer with ids past the model's embedding table. The encoder's probe at load catches
 * that too, but only where ONNX Runtime rejects an out-of-range id (the CPU); the CUDA provider
 * reads such ids as zero embeddings, so config.json's vocab_size is checked first.
 */
function checkVocabulary(dir: string, config: ModelConfig, tokenizerIds: number): void {
  const vocab = config.vocab_size;
  if (typeof vocab === 'number' && Number.isInteger(vocab) && vocab > 0 && tokenizerIds > vocab) {
    throw new M3Error('ERR_MODEL_LAYOUT', `The tokenizer and the model do not match: the tokenizer has ${tokenizerIds} ids but ` +
      `'${path.join(dir, 'config.json')}' gives the model ${vocab} (vocab_size). Use the tokenizer.json that came with this model.`);
  }
}

function readAttentionHeads(dir: string, config: ModelConfig): number {
  const heads = config.num_attention_heads;
  if (heads === undefined || heads === null) return DEFAULT_ATTENTION_HEADS;
  if (typeof heads !== 'number' || !Number.isInteger(heads) || heads < 1) {
    throw new M3Error('ERR_MODEL_LAYOUT', `'${path.join(dir, 'config.json')}': num_attention_heads must be a positive integer, got ${describe(heads)}`);
  }
  return heads;
}

function readModelMaxLength(dir: string, config: ModelConfig): number {
  const file = path.join(dir, 'config.json');
  const positions = config.max_position_embeddings;
  if (positions === undefined || positions === null) return DEFAULT_MAX_LENGTH;
  const pad = config.pad_token_id ?? 1;
  if (typeof pad !== 'number' || !Number.isSafeInteger(pad) || pad < 0) {
    throw new M3Error('ERR_MODEL_LAYOUT', `'${file}': pad_token_id must be a non-negative integer, got ${describe(pad)}`);
  }
  if (typeof positions !== 'number' || !Number.isInteger(positions) || positions - pad - 1 < 2) {
    throw new M3Error('ERR_MODEL_LAYOUT', `'${file}': max_position_embeddings must be an integer > ${pad + 2}, got ${describe(positions)}`);
  }
  // XLM-R positions start after the padding id: ids pad+1 .. positions-1 are usable.
  return positions - pad - 1;
}

function normalizeTexts(texts: unknown): string[] {
  if (typeof texts === 'string') return [texts];
  if (!Array.isArray(texts)) throw inputError('a string or an array of strings', 'texts', texts);
  for (let i = 0; i < texts.length; i++) {
    if (typeof texts[i] !== 'string') throw inputError('a string', `texts[${i}]`, texts[i]);
  }
  return texts as string[];
}

/** Checked encode options, as the native run takes them. */
interface RunOptions {
  /** The outputs, as bits (OUTPUT_DENSE, ...). */
  flags: number;
  limits: BatchLimits;
  signal?: AbortSignal;
}

/** Tokenized texts as encodeTokens takes them: the shapes, and ids within the vocabulary. */
function checkTokens(tokens: TokenizedBatch, vocabSize: number, modelMaxLength: number): void {
  if (!tokens || !(tokens.ids instanceof Int32Array) || !(tokens.offsets instanceof Uint32Array) || tokens.offsets.length < 1) {
    throw inputError('{ ids: Int32Array, offsets: Uint32Array } (as tokenize() returns)', 'tokens', tokens);
  }
  const { ids, offsets } = tokens;
  if (offsets[0] !== 0 || offsets[offsets.length - 1] !== ids.length) {
    throw new M3Error('ERR_INPUT', `tokens.offsets must start at 0 and end at ids.length (${ids.length}); got ${offsets[0]} .. ${offsets[offsets.length - 1]}`);
  }
  for (let i = 0; i + 1 < offsets.length; i++) {
    const n = offsets[i + 1] - offsets[i];
    if (offsets[i + 1] < offsets[i] || n < 2 || n > modelMaxLength) {
      throw new M3Error('ERR_INPUT', `tokens: text ${i} has ${offsets[i + 1] < offsets[i] ? 'decreasing offsets' : `${n} tokens`}; ` +
        `each text needs 2 to ${modelMaxLength} tokens, <s> and </s> included (tokenize() with maxLength truncates)`);
    }
    // The heads read <s> as the dense row and drop it from the ColBERT rows: a text must be framed.
    if (ids[offsets[i]] !== CLS_ID || ids[offsets[i + 1] - 1] !== EOS_ID) {
      throw new M3Error('ERR_INPUT', `tokens: text ${i} is [${ids[offsets[i]]} … ${ids[offsets[i + 1] - 1]}]; each text must start with ` +
        `<s> (id ${CLS_ID}) and end with </s> (id ${EOS_ID}), as tokenize() gives`);
    }
  }
  for (let j = 0; j < ids.length; j++) {
    if (ids[j] < 0 || ids[j] >= vocabSize) {
      throw new M3Error('ERR_INPUT', `tokens.ids[${j}] is ${ids[j]}, outside this model's vocabulary [0, ${vocabSize})`);
    }
  }
}

/** How long into an idle period V8 has collected the last outputs (its memory reducer: about 5 s). */
const IDLE_GC_MS = 10_000;

/** A loaded BGE-M3 model. Create with {@link BGEM3.load}; release with {@link BGEM3.dispose}. */
export class BGEM3 {
  private disposed = false;
  private closing?: Promise<void>;
  private nextJob = 1;
  /** Native encodes running or queued, and the timer that releases memory once they are none. */
  private running = 0;
  private idleTimer?: NodeJS.Timeout;

  private constructor(
    private readonly encoder: NativeEncoder,
    private readonly tokenizer: M3Tokenizer,
    private readonly dir: string,
    /** Longest input the model's position table allows. */
    readonly modelMaxLength: number,
    /** Default truncation length of encode. */
    readonly maxLength: number,
    /** Self-attention heads, for the attention memory of a batch. */
    private readonly attentionHeads: number,
    /** Where the encoder runs (the default attention budget depends on it). */
    private readonly device: 'cpu' | 'cuda',
    private readonly nativeInfo: NativeModelInfo,
    private readonly releaseMemoryAfterMs: number,
  ) {}

  /**
   * Loads a model directory: the BAAI/bge-m3 snapshot (onnx/model.onnx + colbert_linear.pt +
   * sparse_linear.pt + tokenizer.json) or an ONNX export with the heads baked in.
   */
  static async load(dir: string, options: LoadOptions = {}): Promise<BGEM3> {
    const callerStack = new Error().stack;
    checkNonEmptyString(dir, 'dir', 'a model directory path');
    checkOptions(options);
    const abs = path.resolve(dir);
    const dirStats = fs.statSync(abs, { throwIfNoEntry: false });
    if (dirStats && !dirStats.isDirectory()) {
      throw new M3Error('ERR_MODEL_FILES', `'${abs}' is ${describeFileKind(dirStats)}, not a model directory; pass the folder that holds ` +
        'the model (config.json, tokenizer.json, onnx/model.onnx).');
    }
    if (!dirStats) {
      throw new M3Error('ERR_MODEL_FILES', `Model directory '${abs}' does not exist. Download BAAI/bge-m3 ` +
        '(e.g. huggingface-cli download BAAI/bge-m3 --local-dir DIR) and pass DIR.');
    }
    const device = checkChoice(options.device, 'device', ['cpu', 'cuda'] as const, 'cpu');
    if (options.threads !== undefined) checkInteger(options.threads, 'threads', 1, 1024);
    if (options.interOpThreads !== undefined) checkInteger(options.interOpThreads, 'interOpThreads', 1, 1024);
    if (options.concurrency !== undefined) checkInteger(options.concurrency, 'concurrency', 1, 64);
    if (options.deviceId !== undefined) checkInteger(options.deviceId, 'deviceId', 0, 1024);
    if (options.gpuMemLimit !== undefined) {
      checkInteger(options.gpuMemLimit, 'gpuMemLimit', 1 << 20, Number.MAX_SAFE_INTEGER);
      if (device !== 'cuda') throw new M3Error('ERR_INPUT', "gpuMemLimit limits the GPU arena of device 'cuda'; pass device: 'cuda' or drop it");
    }
    if (options.graphOptimization !== undefined) {
      checkChoice(options.graphOptimization, 'graphOptimization', ['disabled', 'basic', 'extended', 'all'] as const);
    }
    if (options.onnxFile !== undefined && typeof options.onnxFile !== 'string') throw inputError('a path', 'onnxFile', options.onnxFile);
    const memoryArena = checkBoolean(options.memoryArena, 'memoryArena', true);
    const releaseMemoryAfterMs = optionalInteger(options.releaseMemoryAfterMs, 'releaseMemoryAfterMs', 1000, 0, 2 ** 31 - 1);
    const allowSpinning = checkBoolean(options.allowSpinning, 'allowSpinning', false);
    const fusedAttention = checkBoolean(options.fusedAttention, 'fusedAttention', true);
    const precision = checkChoice(options.precision, 'precision', ['fp32', 'bf16'] as const, 'fp32');

    checkModelEntries(abs);
    const config = readModelConfig(abs);
    const modelMaxLength = readModelMaxLength(abs, config);
    const attentionHeads = readAttentionHeads(abs, config);
    const maxLength = options.maxLength === undefined
      ? passageLength(modelMaxLength)
      : checkLength(options.maxLength, 'maxLength', modelMaxLength);
    const tokenizer = await M3Tokenizer.load(findTokenizerFile(abs));
    checkVocabulary(abs, config, tokenizer.vocabSize);
    let encoder: NativeEncoder;
    try {
      encoder = await native().Encoder.load(abs, {
        device, deviceId: options.deviceId, gpuMemLimit: options.gpuMemLimit, threads: options.threads, interOpThreads: options.interOpThreads,
        graphOptimization: options.graphOptimization, memoryArena, allowSpinning, fusedAttention, precision, onnxFile: options.onnxFile,
        vocabSize: tokenizer.vocabSize, concurrency: options.concurrency,
      });
    } catch (err) {
      throw fromNative(err, callerStack);
    }
    return new BGEM3(encoder, tokenizer, abs, modelMaxLength, maxLength, attentionHeads, device, encoder.info(), releaseMemoryAfterMs);
  }

  /** Width of the dense and ColBERT vectors. */
  get dim(): number {
    return this.nativeInfo.dim;
  }

  /** Layout, dims, files and limits of this model. */
  info(): ModelInfo {
    return {
      ...this.nativeInfo, dir: this.dir, tokenizer: this.tokenizer.file, vocabSize: this.tokenizer.vocabSize,
      modelMaxLength: this.modelMaxLength, maxLength: this.maxLength, attentionHeads: this.attentionHeads,
    };
  }

  /**
   * Encodes texts into the requested representations. Results are in the caller's order and do
   * not depend on batching. An empty array gives an empty result; an empty string is a text.
   */
  async encode(texts: string | readonly string[], options: EncodeOptions = {}): Promise<EncodeOutput> {
    const callerStack = new Error().stack;
    this.checkUsable();
    checkOptions(options);
    const list = normalizeTexts(texts);
    const run = this.runOptions(options);
    const maxLength = options.maxLength === undefined ? this.maxLength : checkLength(options.maxLength, 'maxLength', this.modelMaxLength);
    const truncate = checkBoolean(options.truncate, 'truncate', true);
    if (run.signal?.aborted) throw abortedError();
    const tokens = await this.tokenizer.encode(list, maxLength, truncate);
    if (run.signal?.aborted) throw abortedError();
    return this.run(tokens, run, callerStack);
  }

  /**
   * Encodes token ids that are already tokenized (as {@link tokenize} gives them: text i is
   * ids[offsets[i] .. offsets[i+1]), each `<s> pieces </s>`), with encode's output options.
   * `maxLength` does not apply: each text must already fit the model's positions. For callers
   * that tokenize once and encode later, such as a request batcher.
   */
  async encodeTokens(tokens: TokenizedBatch, options: Omit<EncodeOptions, 'maxLength' | 'truncate'> = {}): Promise<EncodeOutput> {
    const callerStack = new Error().stack;
    this.checkUsable();
    checkOptions(options);
    checkTokens(tokens, this.tokenizer.vocabSize, this.modelMaxLength);
    const run = this.runOptions(options);
    if (run.signal?.aborted) throw abortedError();
    return this.run(tokens, run, callerStack);
  }

  /**
   * The encoder's last_hidden_state rows of tokenized texts (BAAI layout only): text i's rows
   * start at row tokens.offsets[i], `hidden` floats each. What fine-tuning the heads caches.
   */
  async hiddenStates(tokens: TokenizedBatch,
    options: { batchSize?: number; maxBatchTokens?: number; maxAttentionBytes?: number; signal?: AbortSignal } = {}):
    Promise<{ hidden: number; rows: Float32Array }> {
    const callerStack = new Error().stack;
    this.checkUsable();
    if (this.nativeInfo.layout !== 'bge-m3-snapshot') {
      throw new M3Error('ERR_MODEL_LAYOUT', `'${this.nativeInfo.onnx}' has the heads baked into the graph, so it does not output ` +
        'last_hidden_state; hidden states (and fine-tuning the heads) need the BAAI layout: an ONNX graph with last_hidden_state ' +
        'and the heads in colbert_linear / sparse_linear files.');
    }
    checkTokens(tokens, this.tokenizer.vocabSize, this.modelMaxLength);
    const { limits, signal } = this.runOptions({ ...options, dense: true });
    if (signal?.aborted) throw abortedError();
    const count = tokens.offsets.length - 1;
    if (count === 0) return { hidden: this.nativeInfo.hidden, rows: new Float32Array(0) };
    const lengths = new Uint32Array(count);
    for (let i = 0; i < count; i++) lengths[i] = tokens.offsets[i + 1] - tokens.offsets[i];
    const plan = planBatches(lengths, limits);
    const jobId = this.nextJob++;
    const onAbort = () => this.encoder.cancel(jobId);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const raw = await this.tracked(this.encoder.encode(tokens.ids, tokens.offsets, plan.order, plan.batchEnds, OUTPUT_HIDDEN, jobId));
      if (signal?.aborted) throw abortedError();
      return { hidden: this.nativeInfo.hidden, rows: raw.hidden };
    } catch (err) {
      if ((err as { code?: string })?.code === 'ERR_ABORTED' && signal?.aborted) throw fromNative(abortedError(), callerStack);
      throw fromNative(err, callerStack);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Encode's output and batching options, checked. */
  private runOptions(options: Omit<EncodeOptions, 'maxLength' | 'truncate'>): RunOptions {
    const flags = checkOutputs(options);
    const batchSize = optionalInteger(options.batchSize, 'batchSize', DEFAULT_BATCH_SIZE, 1, 1 << 20);
    const maxBatchTokens = optionalInteger(options.maxBatchTokens, 'maxBatchTokens', DEFAULT_MAX_BATCH_TOKENS, 2, 1 << 30);
    const maxAttentionBytes = optionalInteger(options.maxAttentionBytes, 'maxAttentionBytes', DEFAULT_MAX_ATTENTION_BYTES[this.device],
      1 << 20, Number.MAX_SAFE_INTEGER);
    // fp32 scores: 4 bytes a cell, one cell per head.
    const maxAttentionCells = Math.floor(maxAttentionBytes / (4 * this.attentionHeads));
    return { flags, limits: { batchSize, maxBatchTokens, maxAttentionCells }, signal: checkSignal(options.signal) };
  }

  /** Runs tokenized texts through the native encoder in length-sorted batches. */
  private async run(tokens: TokenizedBatch, options: RunOptions, callerStack: string | undefined): Promise<EncodeOutput> {
    const { flags, signal } = options;
    const { dense, sparse, colbert } = outputsOf(flags);
    this.checkUsable();
    const count = tokens.offsets.length - 1;
    if (count === 0) {
      return new EncodeOutput(0, this.dim,
        dense ? new Float32Array(0) : undefined,
        sparse ? { offsets: new Uint32Array(1), ids: new Uint32Array(0), weights: new Float32Array(0) } : undefined,
        colbert ? { offsets: new Uint32Array(1), data: new Float32Array(0) } : undefined, undefined, new Uint32Array(0));
    }
    const lengths = new Uint32Array(count);
    for (let i = 0; i < count; i++) lengths[i] = tokens.offsets[i + 1] - tokens.offsets[i];
    const plan = planBatches(lengths, options.limits);
    const jobId = this.nextJob++;
    const onAbort = () => this.encoder.cancel(jobId);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const raw = await this.tracked(this.encoder.encode(tokens.ids, tokens.offsets, plan.order, plan.batchEnds, flags, jobId));
      if (signal?.aborted) throw abortedError();
      return new EncodeOutput(raw.count, raw.dim,
        dense ? raw.dense : undefined,
        sparse ? { offsets: raw.sparseOffsets, ids: raw.sparseIds, weights: raw.sparseWeights } : undefined,
        colbert ? { offsets: raw.colbertOffsets, data: raw.colbert } : undefined, raw.stats, lengths);
    } catch (err) {
      if ((err as { code?: string })?.code === 'ERR_ABORTED' && signal?.aborted) throw fromNative(abortedError(), callerStack);
      throw fromNative(err, callerStack);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Token ids as encode would feed them to the model: `<s> pieces </s>` per text, truncated to
   * `maxLength` (default: the model's). Text i is ids[offsets[i] .. offsets[i+1]).
   */
  async tokenize(texts: string | readonly string[], options: { maxLength?: number; truncate?: boolean } = {}): Promise<TokenizedBatch> {
    this.checkUsable();
    const maxLength = options.maxLength === undefined ? this.maxLength : checkLength(options.maxLength, 'maxLength', this.modelMaxLength);
    return this.tokenizer.encode(normalizeTexts(texts), maxLength, checkBoolean(options.truncate, 'truncate', true));
  }

  /**
   * Scores query-passage pairs with all three representations, like FlagEmbedding's
   * `compute_score`: queries and passages are encoded separately (with their own truncation).
   */
  async computeScore(pairs: ReadonlyArray<readonly [string, string]> | readonly [string, string],
                     options: ComputeScoreOptions = {}): Promise<ComputeScoreResult> {
    this.checkUsable();
    if (!Array.isArray(pairs)) throw inputError('an array of [query, passage] pairs', 'pairs', pairs);
    const list = (pairs.length === 2 && typeof pairs[0] === 'string' && typeof pairs[1] === 'string'
      ? [pairs] : pairs) as ReadonlyArray<readonly [string, string]>;
    list.forEach((pair, i) => {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
        throw inputError('a [query, passage] pair of strings', `pairs[${i}]`, pair);
      }
    });
    const weights = checkWeights(options.weights ?? SCORE_WEIGHTS, 'weights', { denseOrSparse: true });
    const maxQueryLength = options.maxQueryLength === undefined
      ? queryLength(this.modelMaxLength) : checkLength(options.maxQueryLength, 'maxQueryLength', this.modelMaxLength);
    const maxPassageLength = options.maxPassageLength === undefined
      ? passageLength(this.modelMaxLength) : checkLength(options.maxPassageLength, 'maxPassageLength', this.modelMaxLength);
    const common = { dense: true, sparse: true, colbert: true, batchSize: options.batchSize, maxBatchTokens: options.maxBatchTokens,
      maxAttentionBytes: options.maxAttentionBytes, signal: options.signal };
    const queries = await this.encode(list.map((p) => p[0]), { ...common, maxLength: maxQueryLength });
    const passages = await this.encode(list.map((p) => p[1]), { ...common, maxLength: maxPassageLength });
    return pairScores(queries, passages, weights);
  }

  /** A row's lexical weights keyed by token piece (the SentencePiece marker removed); cosmetic. */
  convertIdToToken(row: SparseRow): Record<string, number> {
    if (!row || !(row.ids instanceof Uint32Array) || !(row.weights instanceof Float32Array) || row.ids.length !== row.weights.length) {
      throw inputError('{ ids: Uint32Array, weights: Float32Array } of equal lengths', 'row', row);
    }
    // A Map, then own properties: pieces such as 'constructor' or '__proto__' are keys like any other.
    const out = new Map<string, number>();
    for (let i = 0; i < row.ids.length; i++) {
      const piece = this.tokenizer.piece(row.ids[i]);
      // Two ids can decode to the same piece; keep the larger weight, as a lexical match would.
      const had = out.get(piece);
      if (had === undefined || row.weights[i] > had) out.set(piece, row.weights[i]);
    }
    return Object.fromEntries(out);
  }

  /**
   * Gives back to the system the memory that large batches left behind: ONNX Runtime's CPU arena
   * keeps every region it grew to, and the C heap keeps freed pages. Runs after the encodes
   * already queued; about the cost of encoding one short text. A loaded model does this on its
   * own once idle for `releaseMemoryAfterMs` (load option), so a server's memory returns close to
   * its level before a burst. A disposed model resolves at once.
   */
  releaseMemory(): Promise<void> {
    if (this.disposed) return Promise.resolve();
    return this.encoder.releaseMemory().catch((err) => { throw fromNative(err); });
  }

  /** Counts a native encode as running; when the last one settles, the idle release is due. */
  private async tracked<T>(work: Promise<T>): Promise<T> {
    this.running++;
    clearTimeout(this.idleTimer);
    try {
      return await work;
    } finally {
      if (--this.running === 0 && this.releaseMemoryAfterMs > 0 && !this.disposed) this.releaseWhenIdle(this.releaseMemoryAfterMs, true);
    }
  }

  /**
   * Releases memory after `ms` without an encode. The outputs of the last encodes are freed only
   * when V8 collects their typed arrays, which its memory reducer does some seconds into an idle
   * period; a second release after IDLE_GC_MS gives those pages back too.
   */
  private releaseWhenIdle(ms: number, again: boolean): void {
    this.idleTimer = setTimeout(() => {
      if (this.running !== 0 || this.disposed) return;
      this.releaseMemory().catch(() => { /* the memory stays; the next idle period tries again */ });
      if (again) this.releaseWhenIdle(IDLE_GC_MS, false);
    }, ms);
    this.idleTimer.unref();
  }

  /** Releases the session. Pending and running encodes reject with ERR_DISPOSED. Idempotent. */
  dispose(): Promise<void> {
    clearTimeout(this.idleTimer);
    if (!this.closing) {
      this.disposed = true;
      this.closing = this.encoder.close();
    }
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  private checkUsable(): void {
    if (this.disposed) throw new M3Error('ERR_DISPOSED', 'This model has been disposed; load it again with BGEM3.load(dir).');
  }
}
