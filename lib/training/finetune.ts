/**
 * Fine-tuning BGE-M3's sparse and ColBERT heads on {query, pos, neg} data with the paper's
 * objective (self-knowledge distillation, lib/training/train.ts), the encoder frozen:
 *
 *   1. every distinct text is encoded once and its last_hidden_state rows are cached on disk
 *      (memory-mapped by the native trainer where the platform allows, so the cache may exceed
 *      memory; read into memory on Windows);
 *   2. each step takes `batchSize` rows, each a group of 1 positive + (groupSize - 1) negatives,
 *      scores every query against every passage of the step (in-batch negatives), and updates the
 *      heads with AdamW on analytic gradients computed natively (native/train/head_trainer.cc);
 *   3. the result is a model directory BGEM3.load reads: the encoder's files linked (or copied)
 *      from the source and the new heads as fp32 colbert_linear / sparse_linear .safetensors,
 *      written atomically. The source directory is never changed.
 *
 * Work in progress lives in `<out>.partial/` (the cache and checkpoints); an interrupted run
 * (AbortSignal, Ctrl-C in the CLI) saves a consistent checkpoint there and `resume` continues it
 * to the same heads as an uninterrupted run.
 *
 * The parts: options.ts (what is asked, checked), rows.ts (the data), hidden_cache.ts (step 1),
 * sampling.ts and loop.ts (step 2), checkpoint.ts, heads.ts, safetensors.ts and directories.ts
 * (step 3); this file runs them in order.
 *
 * As in FlagEmbedding, a text that is the positive of one query of a step and also appears
 * among the step's other passages (a shared positive, a negative equal to a positive) counts
 * as a negative there too: deduplicate such rows when it matters.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native, type NativeHeadTrainer } from '../addon/native';
import { M3Error, fromNative } from '../base/errors';
import { resolveHubModel } from '../engine/hub';
import { BGEM3 } from '../engine/model';
import { checkpointToResume, removeCheckpoints, type Checkpoint, type RunIdentity } from './checkpoint';
import { placeEncoderFiles, swapDirectory } from './directories';
import { readHeadParams, writeHeadFiles } from './heads';
import { buildCache, distinctTexts, textKey, type Cache } from './hidden_cache';
import { dataHash, modelFingerprint } from './identity';
import { ZERO_LOSSES, trainEpochs, type LoopResult } from './loop';
import { checkConfig, checkRunSettings, type FinetuneOptions, type RunSettings, type StepLosses } from './options';
import type { Example } from './sampling';

export type { FinetuneOptions, FinetuneEvent, StepLosses } from './options';

export interface FinetuneResult {
  out: string;
  epochs: number;
  steps: number;
  /** Training rows processed by the steps of this run (a resumed run counts only its own). */
  examples: number;
  /** Texts encoded into the cache (0 when an existing cache was reused) and the seconds it took. */
  encodedTexts: number;
  encodeSeconds: number;
  trainSeconds: number;
  examplesPerSecond: number;
  /** Mean losses of the last epoch's steps run by this call (a resumed run counts only its own). */
  lastEpoch: StepLosses;
}

/**
 * Fine-tunes the sparse and ColBERT heads of `options.model` on `options.data` and writes the
 * result to `options.out` (see the module comment).
 */
export async function finetuneHeads(options: FinetuneOptions): Promise<FinetuneResult> {
  // A hub id downloads (or finds in the cache) the source model first.
  const source = typeof options.model === 'string' && options.model.length > 0
    ? await resolveHubModel(options.model, options.load ?? {}) : undefined;
  const run = checkRunSettings(source ? { ...options, model: source } : options);
  const { revision: _revision, ...load } = options.load ?? {};  // the revision is in the resolved directory
  const model = await BGEM3.load(run.src, load);
  let trainer: NativeHeadTrainer | undefined;
  try {
    const info = model.info();
    if (info.layout !== 'bge-m3-snapshot') {
      throw new M3Error('ERR_MODEL_LAYOUT', `'${info.onnx}' has the heads baked into the graph; fine-tuning the heads needs the BAAI ` +
        'layout (a graph that outputs last_hidden_state, with colbert_linear and sparse_linear files beside it)');
    }
    const config = checkConfig(options, info.modelMaxLength, run.rows);
    const texts = distinctTexts(run.rows);
    const identity: RunIdentity = { config, dataHash: dataHash(run.rows), model: modelFingerprint(info) };
    const checkpoint = checkpointToResume(run.workDir, identity, run);
    fs.mkdirSync(run.workDir, { recursive: true });
    const cache = await cacheTexts(model, texts, run, identity);
    const examples: Example[] = run.rows.map((r) => ({
      query: cache.index.get(textKey(r.query, true))!,
      pos: r.pos.map((p) => cache.index.get(textKey(p, false))!),
      neg: (r.neg ?? []).map((p) => cache.index.get(textKey(p, false))!),
    }));
    trainer = createTrainer(cache, info, run.threads, checkpoint);
    const loop = await trainEpochs(trainer, examples, {
      run: identity, epochs: run.epochs, checkpointEvery: run.checkpointEvery, workDir: run.workDir, signal: run.signal, emit: run.emit,
      from: checkpoint,
    });
    writeOutputModel(run, trainer.state().params, info.dim, cache.hidden, identity, loop);
    if (!run.keepWorkDir) fs.rmSync(run.workDir, { recursive: true, force: true });
    else removeCheckpoints(run.workDir);
    run.emit({ phase: 'done', out: run.out });
    return {
      out: run.out, epochs: run.epochs, steps: loop.steps, examples: loop.examples, encodedTexts: cache.encoded, encodeSeconds: cache.seconds,
      trainSeconds: loop.trainSeconds, examplesPerSecond: loop.examplesPerSecond, lastEpoch: loop.lastEpoch ?? { ...ZERO_LOSSES },
    };
  } finally {
    trainer?.close();
    await model.dispose();
  }
}

/** The hidden-state cache of the texts in the work directory; an interrupt while encoding leaves nothing to resume. */
async function cacheTexts(model: BGEM3, texts: ReturnType<typeof distinctTexts>, run: RunSettings, identity: RunIdentity): Promise<Cache> {
  const interruptedEncoding = () => new M3Error('ERR_ABORTED', 'fine-tuning was interrupted while encoding the texts, before ' +
    'any training; nothing to resume (the next run encodes them again)');
  let cache: Cache;
  try {
    cache = await buildCache(model, texts, identity.config, path.join(run.workDir, 'cache'), identity.model, run.signal,
      (done, total) => run.emit({ phase: 'encode', done, total }));
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_ABORTED' && run.signal?.aborted) throw interruptedEncoding();
    throw err;
  }
  if (run.signal?.aborted) throw interruptedEncoding();
  return cache;
}

/** The native trainer over the cache, its heads from the source model or the checkpoint. */
function createTrainer(cache: Cache, info: ReturnType<BGEM3['info']>, threads: number, checkpoint: Checkpoint | undefined): NativeHeadTrainer {
  const params = readHeadParams(info, cache.hidden);
  try {
    const trainer = new (native().HeadTrainerNative)(path.join(cache.dir, 'hidden.f32'), cache.hidden, cache.ids, cache.offsets, info.dim,
      params, threads);
    if (checkpoint) trainer.setState(checkpoint.params, checkpoint.m, checkpoint.v, checkpoint.state.adamSteps);
    return trainer;
  } catch (err) {
    throw fromNative(err);
  }
}

/** The output directory, swapped into place whole: encoder files from the source, the new heads, a record of the run. */
function writeOutputModel(run: RunSettings, params: Float32Array, dim: number, hidden: number, identity: RunIdentity, loop: LoopResult): void {
  const { src, out } = run;
  const tmp = `${out}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    const placed = placeEncoderFiles(src, tmp, run.encoderFiles);
    writeHeadFiles(tmp, params, dim, hidden);
    fs.writeFileSync(path.join(tmp, 'finetune.json'), `${JSON.stringify({
      source: src, encoderFiles: { mode: run.encoderFiles, files: placed }, config: identity.config, epochs: run.epochs, steps: loop.steps,
      examples: run.rows.length, lastEpoch: loop.lastEpoch, dataHash: identity.dataHash,
    }, null, 2)}\n`);
    if (fs.existsSync(out) && !run.force) {
      throw new M3Error('ERR_INPUT', `the output directory '${out}' appeared while training; pass force (--force) to replace it, ` +
        'with resume (--resume) to keep the training done');
    }
    swapDirectory(tmp, out);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
