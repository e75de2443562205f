/**
 * What fine-tuning is told (FinetuneOptions) and tells (FinetuneEvent), and the checks of its
 * options: those that need no model first, then the training settings, which a checkpoint records
 * and a resumed run must repeat.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import type { NativeLossTerms } from '../addon/native';
import { passageLength, queryLength } from '../base/defaults';
import { M3Error } from '../base/errors';
import { checkBoolean, checkChoice, checkNonEmptyString, checkOptions, optionalInteger, optionalNumber } from '../base/validate';
import type { LoadOptions } from '../engine/model';
import { checkApartFromSource } from './directories';
import { readTrainingRows, type EvalRow } from './rows';
import { checkLossOptions, type M3LossOptions } from './train';

export interface FinetuneOptions extends M3LossOptions {
  /** Source model directory (BAAI layout: last_hidden_state graph + head files). Never modified. */
  model: string;
  /** Training data: a JSONL path or rows of {query, pos: [...], neg: [...]}. */
  data: string | EvalRow[];
  /** Output model directory; must not exist unless `force`. */
  out: string;
  /** Passes over the data (default 1). */
  epochs?: number;
  /** Adam's learning rate (default 1e-4). */
  lr?: number;
  /** AdamW's decoupled weight decay (default 0). */
  weightDecay?: number;
  /** Passages per query: 1 positive + groupSize - 1 negatives (default 8). */
  groupSize?: number;
  /** Queries per step; every query is scored against all passages of the step (default 8). */
  batchSize?: number;
  /** Seed of the shuffling and sampling (default 0). */
  seed?: number;
  /** Train the sparse head (default true). */
  trainSparse?: boolean;
  /** Train the ColBERT head (default true). */
  trainColbert?: boolean;
  /** Query truncation in tokens (default 512, capped by the model). */
  maxQueryLength?: number;
  /** Passage truncation in tokens (default 8192, capped by the model). */
  maxPassageLength?: number;
  /** Save a checkpoint every this many steps (default 500; 0: only at epoch ends and on interrupt). */
  checkpointEvery?: number;
  /** Continue from the checkpoint in the work directory. */
  resume?: boolean;
  /** Replace an existing output directory, and discard an old checkpoint when not resuming. */
  force?: boolean;
  /** 'link' (default: hard links, copies where they fail) or 'copy' for the encoder's files. */
  encoderFiles?: 'link' | 'copy';
  /** Where the cache and checkpoints go (default `<out>.partial`); removed on success unless keepWorkDir. */
  workDir?: string;
  keepWorkDir?: boolean;
  /** Threads for the heads' training step (default: all cores). */
  threads?: number;
  /** Options for loading the source model (ONNX Runtime threads, device). */
  load?: LoadOptions;
  /** Interrupts training: a checkpoint is saved and the promise rejects with ERR_ABORTED. */
  signal?: AbortSignal;
  onProgress?: (event: FinetuneEvent) => void;
}

/** Per-mode losses of a step (means over its queries). */
export type StepLosses = NativeLossTerms;

export type FinetuneEvent =
  | { phase: 'encode'; done: number; total: number }
  | { phase: 'train'; epoch: number; epochs: number; step: number; steps: number; examples: number;
      losses: StepLosses; gradNorm: number; examplesPerSecond: number }
  | { phase: 'checkpoint'; step: number; dir: string }
  | { phase: 'done'; out: string };

/** The training settings: what a checkpoint records, and a resumed run must repeat. */
export interface Config {
  lr: number; weightDecay: number; groupSize: number; batchSize: number; seed: number;
  temperature: number; weights: [number, number, number]; teacherWeights: [number, number, number]; selfDistill: boolean;
  trainSparse: boolean; trainColbert: boolean; maxQueryLength: number; maxPassageLength: number;
}

/** How a run goes about it: directories, length, and what to tell whom. */
export interface RunSettings {
  /** Absolute paths. */
  src: string;
  out: string;
  workDir: string;
  force: boolean;
  resume: boolean;
  keepWorkDir: boolean;
  epochs: number;
  checkpointEvery: number;
  threads: number;
  encoderFiles: 'link' | 'copy';
  signal?: AbortSignal;
  emit: (event: FinetuneEvent) => void;
  rows: EvalRow[];
}

/** The options that need no model, checked: directories (apart from the source), length, the data. */
export function checkRunSettings(options: FinetuneOptions): RunSettings {
  checkOptions(options);
  for (const key of ['model', 'out'] as const) checkNonEmptyString(options[key], key, 'a directory path');
  const src = path.resolve(options.model);
  const out = path.resolve(options.out);
  const workDir = path.resolve(options.workDir ?? `${out}.partial`);
  checkApartFromSource(src, [['output directory', out], ['work directory', workDir]]);
  const force = checkBoolean(options.force, 'force', false);
  const resume = checkBoolean(options.resume, 'resume', false);
  if (fs.existsSync(out) && !force) {
    throw new M3Error('ERR_INPUT', `the output directory '${out}' already exists; choose another or pass force (--force) to replace it`);
  }
  const epochs = optionalInteger(options.epochs, 'epochs', 1, 1, 1e6);
  const checkpointEvery = optionalInteger(options.checkpointEvery, 'checkpointEvery', 500, 0, 1e12);
  const threads = optionalInteger(options.threads, 'threads', os.availableParallelism(), 1, 1024);
  const encoderFiles = checkChoice(options.encoderFiles, 'encoderFiles', ['link', 'copy'] as const, 'link');
  const rows = readTrainingRows(options.data);
  if (rows.length === 0) throw new M3Error('ERR_INPUT', 'the training data has no rows');
  return {
    src, out, workDir, force, resume, keepWorkDir: !!options.keepWorkDir, epochs, checkpointEvery, threads, encoderFiles,
    signal: options.signal, emit: options.onProgress ?? (() => {}), rows,
  };
}

/** The training settings, checked against the model's positions and the data (some step must have negatives). */
export function checkConfig(options: FinetuneOptions, modelMaxLength: number, rows: readonly EvalRow[]): Config {
  const config: Config = {
    lr: optionalNumber(options.lr, 'lr', 1e-4, Number.MIN_VALUE, 10),
    weightDecay: optionalNumber(options.weightDecay, 'weightDecay', 0, 0, 10),
    groupSize: optionalInteger(options.groupSize, 'groupSize', 8, 1, 4096),
    batchSize: optionalInteger(options.batchSize, 'batchSize', 8, 1, 1 << 16),
    seed: optionalInteger(options.seed, 'seed', 0, 0, 2 ** 31 - 1),
    ...checkLossOptions(options),
    trainSparse: checkBoolean(options.trainSparse, 'trainSparse', true),
    trainColbert: checkBoolean(options.trainColbert, 'trainColbert', true),
    maxQueryLength: optionalInteger(options.maxQueryLength, 'maxQueryLength', queryLength(modelMaxLength), 2, modelMaxLength),
    maxPassageLength: optionalInteger(options.maxPassageLength, 'maxPassageLength', passageLength(modelMaxLength), 2, modelMaxLength),
  };
  if (!config.trainSparse && !config.trainColbert) throw new M3Error('ERR_INPUT', 'trainSparse and trainColbert are both false: nothing to train');
  if (Math.min(config.batchSize, rows.length) === 1 && (config.groupSize === 1 || rows.every((r) => !r.neg || r.neg.length === 0))) {
    throw new M3Error('ERR_INPUT', 'no negatives: with one query per step (batchSize 1, or a single row) each query needs "neg" ' +
      'passages (and groupSize > 1); or give several rows and batchSize >= 2 so the other queries\' passages serve as in-batch negatives');
  }
  return config;
}
