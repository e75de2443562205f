/**
 * BGEM3: a loaded BGE-M3 model. Encoding runs on threads owned by the native addon; this class
 * checks arguments (inputs.ts, model_options.ts), reads the model directory (model_dir.ts),
 * tokenizes, plans batches and shapes the results.
 */
import * as path from 'node:path';
import { native, type Device, type NativeEncodeResult, type NativeEncoder, type NativeModelInfo } from '../addon/native';
import { passageLength, queryLength } from '../base/defaults';
import { M3Error, abortedError, fromNative } from '../base/errors';
import { checkBoolean, checkNonEmptyString, checkOptions } from '../base/validate';
import { DEFAULT_WEIGHTS, checkWeights } from '../scoring/fusion';
import { pairScores, type PairScores } from './pair_scores';
import { planBatches, type BatchLimits } from './batching';
import { checkSparseRow, checkTokens, normalizePairs, normalizeTexts, textLengths } from './inputs';
import { resolveHubModel } from './hub';
import { checkModelDirectory, checkVocabulary, graphMaxLength, readModelDirectory } from './model_dir';
import {
  checkLength, checkLoadOptions, checkRunOptions, type ComputeScoreOptions, type EncodeOptions, type LoadOptions, type ModelInfo, type RunOptions,
} from './model_options';
import { EncodeOutput, OUTPUT_HIDDEN, outputNames, outputsOf, type SparseRow } from './outputs';
import { M3Tokenizer, findTokenizerFile, type TokenizedBatch } from './tokenizer';

export type { ComputeScoreOptions, EncodeOptions, LoadOptions, ModelInfo } from './model_options';
export type { DownloadProgress } from './hub';

/** The five score lists of {@link BGEM3.computeScore}, FlagEmbedding's key names. */
export type ComputeScoreResult = PairScores;

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
    /** The directory, or the hub id (ORG/NAME[@revision]) the model was loaded by. */
    private readonly name: string,
    /** Longest input the model's position table allows. */
    readonly modelMaxLength: number,
    /** Default truncation length of encode. */
    readonly maxLength: number,
    /** Self-attention heads, for the attention memory of a batch. */
    private readonly attentionHeads: number,
    /** Where the encoder runs (the default attention budget depends on it). */
    /** Where the encoder runs: 'cpu' or 'cuda' (the load option). */
    readonly device: Device,
    private readonly nativeInfo: NativeModelInfo,
    private readonly releaseMemoryAfterMs: number,
  ) {}

  /**
   * Loads a model directory: the BAAI/bge-m3 snapshot (onnx/model.onnx + colbert_linear.pt +
   * sparse_linear.pt + tokenizer.json) or an ONNX export with the heads baked in. A hub id
   * (`BAAI/bge-m3`, `ORG/NAME@revision`) that is no existing path is downloaded into the Hugging
   * Face cache first (only the files the engine reads), or taken from it.
   */
  static async load(dir: string, options: LoadOptions = {}): Promise<BGEM3> {
    const callerStack = new Error().stack;
    checkNonEmptyString(dir, 'dir', 'a model directory path or hub id');
    checkOptions(options);
    const checked = checkLoadOptions(options);
    const abs = (await resolveHubModel(dir, options)) ?? path.resolve(dir);
    const name = abs === path.resolve(dir) ? abs : options.revision !== undefined && !dir.includes('@') ? `${dir}@${options.revision}` : dir;
    checkModelDirectory(abs);
    const model = readModelDirectory(abs);
    if (model.positionsStated) checkMaxLength(options, model.modelMaxLength);
    const tokenizer = await M3Tokenizer.load(findTokenizerFile(abs));
    checkVocabulary(abs, model.config, tokenizer.vocabSize);
    const { device, memoryArena, allowSpinning, fusedAttention, precision } = checked;
    let encoder: NativeEncoder;
    try {
      encoder = await native().Encoder.load(abs, {
        device, deviceId: options.deviceId, gpuMemLimit: options.gpuMemLimit, allowTf32: options.allowTf32, threads: options.threads, interOpThreads: options.interOpThreads,
        graphOptimization: options.graphOptimization, memoryArena, allowSpinning, fusedAttention, precision, onnxFile: options.onnxFile,
        optimizedGraphPath: options.optimizedGraphPath === undefined ? undefined : path.resolve(options.optimizedGraphPath),
        vocabSize: tokenizer.vocabSize, concurrency: options.concurrency,
      });
    } catch (err) {
      throw fromNative(err, callerStack);
    }
    const info = encoder.info();
    let modelMaxLength = model.modelMaxLength;
    let maxLength: number;
    try {
      // Without config.json's max_position_embeddings, the graph's position table sets the limit
      // (a longer text would fail inside ONNX Runtime).
      if (!model.positionsStated) modelMaxLength = graphMaxLength(model, native().graphPositionRows(info.onnx));
      maxLength = checkMaxLength(options, modelMaxLength);
    } catch (err) {
      await encoder.close();
      throw fromNative(err, callerStack);
    }
    return new BGEM3(encoder, tokenizer, abs, name, modelMaxLength, maxLength, model.attentionHeads, device, info,
      checked.releaseMemoryAfterMs);
  }

  /** Width of the dense and ColBERT vectors. */
  get dim(): number {
    return this.nativeInfo.dim;
  }

  /** Layout, dims, files and limits of this model. */
  info(): ModelInfo {
    return {
      ...this.nativeInfo, dir: this.dir, name: this.name, tokenizer: this.tokenizer.file, vocabSize: this.tokenizer.vocabSize,
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
    if (tokens.offsets.length === 1) return { hidden: this.nativeInfo.hidden, rows: new Float32Array(0) };
    const raw = await this.runNative(tokens, textLengths(tokens), limits, OUTPUT_HIDDEN, signal, callerStack);
    return { hidden: this.nativeInfo.hidden, rows: raw.hidden };
  }

  /** Encode's output and batching options, checked. */
  private runOptions(options: Omit<EncodeOptions, 'maxLength' | 'truncate'>): RunOptions {
    return checkRunOptions(options, this.device, this.attentionHeads);
  }

  /** Encodes tokenized texts with checked options. */
  private async run(tokens: TokenizedBatch, options: RunOptions, callerStack: string | undefined): Promise<EncodeOutput> {
    const { flags, signal } = options;
    const { dense, sparse, colbert } = outputsOf(flags);
    this.checkUsable();
    if (tokens.offsets.length === 1) {
      return new EncodeOutput(0, this.dim,
        dense ? new Float32Array(0) : undefined,
        sparse ? { offsets: new Uint32Array(1), ids: new Uint32Array(0), weights: new Float32Array(0) } : undefined,
        colbert ? { offsets: new Uint32Array(1), data: new Float32Array(0) } : undefined, undefined, new Uint32Array(0));
    }
    const lengths = textLengths(tokens);
    const raw = await this.runNative(tokens, lengths, options.limits, flags, signal, callerStack);
    return new EncodeOutput(raw.count, raw.dim,
      dense ? raw.dense : undefined,
      sparse ? { offsets: raw.sparseOffsets, ids: raw.sparseIds, weights: raw.sparseWeights } : undefined,
      colbert ? { offsets: raw.colbertOffsets, data: raw.colbert } : undefined, raw.stats, lengths);
  }

  /**
   * Runs tokenized texts through the native encoder in length-sorted batches, as one job that
   * `signal` cancels (queued batches are dropped, the running one is stopped).
   */
  private async runNative(tokens: TokenizedBatch, lengths: Uint32Array, limits: BatchLimits, flags: number,
    signal: AbortSignal | undefined, callerStack: string | undefined): Promise<NativeEncodeResult> {
    const plan = planBatches(lengths, limits);
    const jobId = this.nextJob++;
    const onAbort = () => this.encoder.cancel(jobId);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const raw = await this.tracked(this.encoder.encode(tokens.ids, tokens.offsets, plan.order, plan.batchEnds, outputNames(flags), jobId));
      if (signal?.aborted) throw abortedError();
      return raw;
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
    const list = normalizePairs(pairs);
    const weights = checkWeights(options.weights ?? DEFAULT_WEIGHTS, 'weights', { denseOrSparse: true });
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
    checkSparseRow(row);
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

/** The load's default truncation, or its `maxLength` option checked against the model's positions. */
function checkMaxLength(options: LoadOptions, modelMaxLength: number): number {
  return options.maxLength === undefined ? passageLength(modelMaxLength) : checkLength(options.maxLength, 'maxLength', modelMaxLength);
}
