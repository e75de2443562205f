/**
 * Batcher: coalesces concurrent encode requests (a server's, one or a few texts each) into large
 * batches for one model. Requests are tokenized as they arrive, wait in a bounded queue, and go
 * to the native encoder together once the oldest has waited `maxWaitMs` or a batch's worth of
 * tokens is waiting; each caller gets views of the batch's arrays (no copies).
 *
 * Requests with different outputs (dense / sparse / colbert) go to different batches; requests
 * with different `maxLength`s share batches, since truncation happens when they are tokenized.
 */
import { EventEmitter } from 'node:events';
import { DEFAULT_BATCH_LIMITS } from '../base/defaults';
import { M3Error, abortedError, inputError } from '../base/errors';
import { checkOptions, checkSignal, optionalInteger, optionalNumber } from '../base/validate';
import type { BGEM3 } from './model';
import { checkOutputs, outputsOf, type EncodeOutput } from './outputs';
import type { TokenizedBatch } from './tokenizer';

/** Options of {@link Batcher}. */
export interface BatcherOptions {
  /** Most tokens (summed over texts) in one coalesced batch (default 16384; 131072 for a model on a GPU). A larger request runs alone. */
  maxBatchTokens?: number;
  /** Most texts in one coalesced batch (default 256). */
  maxBatchTexts?: number;
  /**
   * How long the oldest waiting request may wait for company while the model is idle, in ms
   * (default 2; 0 sends at once). It waits only while requests tend to arrive with others
   * queued or running, so a lone client is not slowed down; under load, batches also form
   * while the previous batch runs.
   */
  maxWaitMs?: number;
  /** Most requests waiting, being tokenized included (default 1024); more reject with ERR_QUEUE_FULL. */
  maxQueue?: number;
  /** Most tokens waiting (default 8 x maxBatchTokens); more reject with ERR_QUEUE_FULL. */
  maxQueueTokens?: number;
  /** Batches handed to the model at once (default 1: the next batch gathers while one runs). */
  maxInFlight?: number;
  /** Texts per model run inside a batch (encode's batchSize; default 32, 256 on a GPU). */
  batchSize?: number;
  /** Padded tokens per model run inside a batch (encode's maxBatchTokens; default 16384, 131072 on a GPU). */
  runBatchTokens?: number;
}

/** Options of {@link Batcher.encode}: the outputs and truncation of encode. */
export interface BatcherEncodeOptions {
  dense?: boolean;
  sparse?: boolean;
  colbert?: boolean;
  maxLength?: number;
  /** Cut texts longer than maxLength (default true); false rejects them with ERR_TOO_LONG. */
  truncate?: boolean;
  /** Removes the request from the queue (or from its batch); rejects with ERR_ABORTED. */
  signal?: AbortSignal;
}

/** What happened to one batch: the `batch` event's argument. */
export interface BatchInfo {
  requests: number;
  texts: number;
  /** Tokens of the batch's texts (no padding). */
  tokens: number;
  /** Milliseconds the batch's requests waited in the queue: their mean and the longest. */
  meanWaitMs: number;
  maxWaitMs: number;
  /** Milliseconds the model took for the batch. */
  runMs: number;
  /** Set when the batch failed (its requests were rejected with it). */
  error?: Error;
}

/** Counters and gauges of a {@link Batcher} (see {@link Batcher.stats}). */
export interface BatcherStats {
  /** Requests waiting in the queue, their texts and tokens. */
  queued: number;
  queuedTexts: number;
  queuedTokens: number;
  /** Requests being tokenized (not yet queued). */
  tokenizing: number;
  /** Batches running in the model. */
  inFlight: number;
  /** Totals since creation, over completed batches. */
  batches: number;
  requests: number;
  texts: number;
  tokens: number;
  /** Requests refused or ended early. */
  rejectedQueueFull: number;
  aborted: number;
  failed: number;
  /** Tokens per second encoded over the last 10 seconds. */
  tokensPerSecond: number;
  /** Means over completed batches (0 before the first). */
  meanBatchTexts: number;
  meanBatchTokens: number;
  meanWaitMs: number;
  meanRunMs: number;
}

interface Request {
  tokens: TokenizedBatch;
  count: number;
  tokenCount: number;
  flags: number;
  enqueuedAt: number;
  resolve(out: EncodeOutput): void;
  reject(err: unknown): void;
  settled: boolean;
  batch?: Batch;
  detach(): void;
}

interface Batch {
  requests: Request[];
  live: number;
  controller: AbortController;
}

const RATE_WINDOW_MS = 10_000;
/** The largest count or size setting. */
const MAX_SETTING = 2 ** 31;

/**
 * Coalesces concurrent {@link Batcher.encode} calls into batches for one model. Events:
 * `batch` ({@link BatchInfo}) after every batch.
 */
export class Batcher extends EventEmitter {
  readonly maxBatchTokens: number;
  readonly maxBatchTexts: number;
  readonly maxWaitMs: number;
  readonly maxQueue: number;
  readonly maxQueueTokens: number;
  readonly maxInFlight: number;
  private readonly batchSize: number;
  private readonly runBatchTokens: number;

  private queue: Request[] = [];
  private queuedTexts = 0;
  private queuedTokens = 0;
  private tokenizing = 0;
  private inFlight = 0;
  private timer?: NodeJS.Timeout;
  private closing?: Promise<void>;
  private idle?: () => void;
  private readonly totals = { batches: 0, requests: 0, texts: 0, tokens: 0, waitMs: 0, runMs: 0, rejectedQueueFull: 0, aborted: 0, failed: 0 };
  /** Moving average of "other requests were queued or running when one arrived" (1 at first). */
  private company = 1;
  /** [end time, tokens] of recent batches, for tokensPerSecond. */
  private recent: Array<[number, number]> = [];

  constructor(private readonly model: BGEM3, options: BatcherOptions = {}) {
    super();
    if (!model || typeof (model as { encodeTokens?: unknown }).encodeTokens !== 'function') {
      throw inputError('a loaded BGEM3 model', 'model', model);
    }
    checkOptions(options);
    // A GPU model's batches are GPU-sized (base/defaults.ts).
    const defaults = DEFAULT_BATCH_LIMITS[model.device === 'cuda' ? 'cuda' : 'cpu'];
    this.maxBatchTokens = optionalInteger(options.maxBatchTokens, 'maxBatchTokens', defaults.maxBatchTokens, 1, MAX_SETTING);
    this.maxBatchTexts = optionalInteger(options.maxBatchTexts, 'maxBatchTexts', 256, 1, MAX_SETTING);
    this.maxWaitMs = optionalNumber(options.maxWaitMs, 'maxWaitMs', 2, 0, 60_000);
    this.maxQueue = optionalInteger(options.maxQueue, 'maxQueue', 1024, 1, MAX_SETTING);
    this.maxQueueTokens = optionalInteger(options.maxQueueTokens, 'maxQueueTokens', 8 * this.maxBatchTokens, 1, MAX_SETTING);
    this.maxInFlight = optionalInteger(options.maxInFlight, 'maxInFlight', 1, 1, 64);
    this.batchSize = optionalInteger(options.batchSize, 'batchSize', defaults.batchSize, 1, MAX_SETTING);
    this.runBatchTokens = optionalInteger(options.runBatchTokens, 'runBatchTokens', defaults.maxBatchTokens, 2, MAX_SETTING);
  }

  /**
   * Encodes texts as {@link BGEM3.encode} would (same results), sharing a batch with other
   * requests. Rejects with ERR_QUEUE_FULL when the queue is at its limit, ERR_ABORTED when
   * `signal` fires first, ERR_DISPOSED after close().
   */
  async encode(texts: string | readonly string[], options: BatcherEncodeOptions = {}): Promise<EncodeOutput> {
    checkOptions(options);
    const flags = checkOutputs(options);
    const signal = checkSignal(options.signal);
    this.checkOpen();
    if (signal?.aborted) throw abortedError();
    if (this.queue.length + this.tokenizing >= this.maxQueue) throw this.queueFull(`${this.maxQueue} requests are waiting`);

    // A request being tokenized when close() is called is still answered: close() waits for it.
    this.tokenizing++;
    let tokens: TokenizedBatch;
    try {
      tokens = await this.model.tokenize(texts, { maxLength: options.maxLength, truncate: options.truncate });
    } catch (err) {
      this.tokenizing--;
      this.checkIdle();
      throw err;
    }
    this.tokenizing--;
    const count = tokens.offsets.length - 1;
    const tokenCount = tokens.ids.length;
    // Each early exit below leaves nothing queued, so a pending close() may now be done.
    if (signal?.aborted) {
      this.totals.aborted++;
      this.checkIdle();
      throw abortedError();
    }
    if (count === 0) {
      this.checkIdle();
      return this.model.encodeTokens(tokens, outputsOf(flags));
    }
    // A request larger than the whole token allowance is still taken when nothing else waits.
    if (this.queue.length > 0 && this.queuedTokens + tokenCount > this.maxQueueTokens) {
      throw this.queueFull(`${this.queuedTokens} tokens are waiting and this request has ${tokenCount} (limit ${this.maxQueueTokens})`);
    }

    return new Promise<EncodeOutput>((resolve, reject) => {
      const onAbort = () => this.abort(request);
      const request: Request = {
        tokens, count, tokenCount, flags, enqueuedAt: performance.now(), resolve, reject, settled: false,
        detach: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.company = 0.8 * this.company + (this.queue.length + this.inFlight > 0 ? 0.2 : 0);
      this.queue.push(request);
      this.queuedTexts += count;
      this.queuedTokens += tokenCount;
      this.pump();
    });
  }

  /** Queue, throughput and timing figures (see {@link BatcherStats}). */
  stats(): BatcherStats {
    const t = this.totals;
    const now = performance.now();
    this.recent = this.recent.filter(([at]) => now - at <= RATE_WINDOW_MS);
    const windowTokens = this.recent.reduce((sum, [, tokens]) => sum + tokens, 0);
    const per = (x: number) => (t.batches === 0 ? 0 : x / t.batches);
    return {
      queued: this.queue.length, queuedTexts: this.queuedTexts, queuedTokens: this.queuedTokens, tokenizing: this.tokenizing,
      inFlight: this.inFlight, batches: t.batches, requests: t.requests, texts: t.texts, tokens: t.tokens,
      rejectedQueueFull: t.rejectedQueueFull, aborted: t.aborted, failed: t.failed,
      tokensPerSecond: windowTokens / (Math.min(RATE_WINDOW_MS, Math.max(now, 1)) / 1000),
      meanBatchTexts: per(t.texts), meanBatchTokens: per(t.tokens), meanWaitMs: t.requests === 0 ? 0 : t.waitMs / t.requests, meanRunMs: per(t.runMs),
    };
  }

  /**
   * Stops taking requests (new ones reject with ERR_DISPOSED) and resolves once every queued and
   * running request has been answered. The model stays loaded: dispose it afterwards. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = new Promise<void>((resolve) => {
        this.idle = resolve;
      });
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.pump();
      this.checkIdle();
    }
    return this.closing;
  }

  private checkOpen(): void {
    if (this.closing) throw new M3Error('ERR_DISPOSED', 'This batcher is closed; create a new one to encode more.');
  }

  private queueFull(why: string): M3Error {
    this.totals.rejectedQueueFull++;
    return new M3Error('ERR_QUEUE_FULL', `The encode queue is full (${why}); retry later.`);
  }

  private checkIdle(): void {
    if (this.closing && this.queue.length === 0 && this.inFlight === 0 && this.tokenizing === 0) this.idle?.();
  }

  /** Starts batches while the model has room and a batch is due. */
  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const now = performance.now();
      const due = this.queue[0].enqueuedAt + this.maxWaitMs;
      const full = this.queuedTokens >= this.maxBatchTokens || this.queuedTexts >= this.maxBatchTexts;
      if (!full && now < due && this.company >= 0.25 && !this.closing) {
        if (!this.timer) {
          this.timer = setTimeout(() => {
            this.timer = undefined;
            this.pump();
          }, Math.max(1, Math.ceil(due - now)));
        }
        return;
      }
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
      this.dispatch(now);
    }
  }

  /** Takes the oldest request and the queued ones with the same outputs that fit, and runs them. */
  private dispatch(now: number): void {
    const flags = this.queue[0].flags;
    const { taken, texts, tokens } = this.take(flags);
    const batch: Batch = { requests: taken, live: taken.length, controller: new AbortController() };
    let waitSum = 0;
    let waitMax = 0;
    for (const r of taken) {
      r.batch = batch;
      const wait = now - r.enqueuedAt;
      waitSum += wait;
      waitMax = Math.max(waitMax, wait);
    }
    const { ids, offsets } = joinTokens(taken, texts, tokens);

    this.inFlight++;
    const started = performance.now();
    const finish = (error?: Error) => {
      const ended = performance.now();
      this.inFlight--;
      const info: BatchInfo = {
        requests: taken.length, texts, tokens, meanWaitMs: waitSum / taken.length, maxWaitMs: waitMax, runMs: ended - started, error,
      };
      if (!error) {
        const t = this.totals;
        t.batches++;
        t.requests += taken.length;
        t.texts += texts;
        t.tokens += tokens;
        t.waitMs += waitSum;
        t.runMs += info.runMs;
        this.recent.push([ended, tokens]);
      }
      this.emit('batch', info);
      this.pump();
      this.checkIdle();
    };
    this.model.encodeTokens({ ids, offsets }, {
      ...outputsOf(flags),
      batchSize: this.batchSize, maxBatchTokens: this.runBatchTokens, signal: batch.controller.signal,
    }).then((out) => {
      let first = 0;
      for (const r of taken) {
        if (!r.settled) this.settle(r, () => r.resolve(out.slice(first, first + r.count)));
        first += r.count;
      }
      finish();
    }, (err: Error) => {
      for (const r of taken) {
        if (!r.settled) {
          this.totals.failed++;
          this.settle(r, () => r.reject(err));
        }
      }
      finish(err);
    });
  }

  /** Out of the queue: the oldest request and those after it with the same outputs, while they fit in a batch. */
  private take(flags: number): { taken: Request[]; texts: number; tokens: number } {
    const taken: Request[] = [];
    const rest: Request[] = [];
    let texts = 0;
    let tokens = 0;
    for (const r of this.queue) {
      const fits = taken.length === 0 || (texts + r.count <= this.maxBatchTexts && tokens + r.tokenCount <= this.maxBatchTokens);
      if (r.flags === flags && fits) {
        taken.push(r);
        texts += r.count;
        tokens += r.tokenCount;
      } else {
        rest.push(r);
      }
    }
    this.queue = rest;
    this.queuedTexts -= texts;
    this.queuedTokens -= tokens;
    return { taken, texts, tokens };
  }

  private settle(r: Request, answer: () => void): void {
    r.settled = true;
    r.detach();
    answer();
  }

  /** A request's signal fired: out of the queue, or out of its batch (cancelling a batch left empty). */
  private abort(r: Request): void {
    if (r.settled) return;
    this.totals.aborted++;
    if (r.batch) {
      if (--r.batch.live === 0) r.batch.controller.abort();
    } else {
      this.queue = this.queue.filter((q) => q !== r);
      this.queuedTexts -= r.count;
      this.queuedTokens -= r.tokenCount;
    }
    this.settle(r, () => r.reject(abortedError()));
    this.checkIdle();
  }
}

/** The tokens of several requests as one batch (`texts` texts, `tokens` ids in all), in request order. */
function joinTokens(requests: readonly Request[], texts: number, tokens: number): TokenizedBatch {
  const ids = new Int32Array(tokens);
  const offsets = new Uint32Array(texts + 1);
  let at = 0;
  let row = 0;
  for (const r of requests) {
    ids.set(r.tokens.ids, at);
    for (let i = 1; i <= r.count; i++) offsets[row + i] = at + r.tokens.offsets[i];
    at += r.tokenCount;
    row += r.count;
  }
  return { ids, offsets };
}
