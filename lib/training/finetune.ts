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
 * As in FlagEmbedding, a text that is the positive of one query of a step and also appears
 * among the step's other passages (a shared positive, a negative equal to a positive) counts
 * as a negative there too: deduplicate such rows when it matters.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { M3Error, fromNative, inputError } from '../base/errors';
import { assertRegularFile, readRegularFile, writeFileSynced } from '../base/files';
import { passageLength, queryLength } from '../base/defaults';
import { mulberry32, shuffle } from '../base/rng';
import { checkBoolean, checkOptions, checkNonEmptyString, checkChoice, optionalInteger, optionalNumber } from '../base/validate';
import { readEvalRows, type EvalRow } from './evaluate';
import { BGEM3, type LoadOptions } from '../engine/model';
import { native, type NativeHeadTrainer } from '../addon/native';
import { checkLossOptions, nativeLossOptions, type M3LossOptions } from './train';

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
export interface StepLosses {
  loss: number;
  dense: number;
  lex: number;
  colbert: number;
  inter: number;
  distillDense: number;
  distillLex: number;
  distillColbert: number;
}

export type FinetuneEvent =
  | { phase: 'encode'; done: number; total: number }
  | { phase: 'train'; epoch: number; epochs: number; step: number; steps: number; examples: number;
      losses: StepLosses; gradNorm: number; examplesPerSecond: number }
  | { phase: 'checkpoint'; step: number; dir: string }
  | { phase: 'done'; out: string };

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

const CACHE_VERSION = 1;
const CHECKPOINT_VERSION = 1;
/** Tokens per encode call while building the cache (bounds its memory). */
const CACHE_CHUNK_TOKENS = 1 << 15;

// ---------------------------------------------------------------------------------------------
// Options, data and determinism

interface Config {
  lr: number; weightDecay: number; groupSize: number; batchSize: number; seed: number;
  temperature: number; weights: [number, number, number]; teacherWeights: [number, number, number]; selfDistill: boolean;
  trainSparse: boolean; trainColbert: boolean; maxQueryLength: number; maxPassageLength: number;
}

/** A training row with its texts as cache indices. */
interface Example { query: number; pos: number[]; neg: number[] }

/** One step: query indices, passage indices, and each query's positive (an index into passages). */
interface Step { queries: Int32Array; passages: Int32Array; target: Int32Array }

/**
 * The steps of one epoch: rows shuffled, then for each row one positive and groupSize - 1
 * negatives sampled (with repetition only when the row has too few, as FlagEmbedding does).
 */
function planEpoch(examples: readonly Example[], config: Pick<Config, 'seed' | 'groupSize' | 'batchSize'>, epoch: number): Step[] {
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

/** Reads and checks the training rows: every row needs a query and at least one positive. */
function readRows(data: string | EvalRow[]): EvalRow[] {
  const check = (row: EvalRow, where: string) => {
    if (row.query.length === 0) throw new M3Error('ERR_INPUT', `${where}: "query" is empty`);
    if (row.pos.length === 0) throw new M3Error('ERR_INPUT', `${where}: "pos" is empty; each training row needs at least one positive passage`);
  };
  if (typeof data === 'string') return readEvalRows(data, check);
  if (!Array.isArray(data)) throw inputError('a JSONL path or an array of {query, pos, neg} rows', 'data', data);
  data.forEach((row, i) => {
    const where = `data[${i}]`;
    if (!row || typeof row.query !== 'string' || !Array.isArray(row.pos) || row.pos.some((p) => typeof p !== 'string') ||
        (row.neg !== undefined && (!Array.isArray(row.neg) || row.neg.some((p) => typeof p !== 'string')))) {
      throw new M3Error('ERR_INPUT', `${where}: expected {"query": string, "pos": [string], "neg": [string]}`);
    }
    check(row, where);
  });
  return data;
}

function sha256(...parts: (string | Buffer)[]): string {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** What identifies the source model: its graph's size and time, and the heads' bytes. */
function modelFingerprint(info: ReturnType<BGEM3['info']>): string {
  const graph = fs.statSync(info.onnx);
  return sha256(path.resolve(info.onnx), String(graph.size), String(graph.mtimeMs),
    readRegularFile(info.colbertHead, 'Model file'), readRegularFile(info.sparseHead, 'Model file'));
}

// ---------------------------------------------------------------------------------------------
// Files: safetensors, atomic directories

/** Writes fp32 tensors as a .safetensors file (what the model loader reads). */
export function writeSafetensors(file: string, tensors: Record<string, { shape: number[]; data: Float32Array }>,
  metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = t.data.length * 4;
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  writeFileSynced(file, [head, Buffer.from(json, 'utf8'),
    ...Object.values(tensors).map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))], { replace: true });
}

/**
 * Replaces directory `to` with `from` (both on one file system): `to` is never half-written.
 * Between the two renames the previous version is at `old`.
 */
function swapDirectory(from: string, to: string, old = `${to}.old-${process.pid}`): void {
  fs.rmSync(old, { recursive: true, force: true });
  const hadOld = fs.existsSync(to);
  if (hadOld) fs.renameSync(to, old);
  fs.renameSync(from, to);
  if (hadOld) fs.rmSync(old, { recursive: true, force: true });
}

/** Whether `inner` is `outer` or lies inside it (both real paths). */
function within(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The real path of `p`, or of its nearest existing ancestor joined with the rest. */
function realPath(p: string): string {
  const abs = path.resolve(p);
  if (fs.existsSync(abs)) return fs.realpathSync(abs);
  const parent = path.dirname(abs);
  return parent === abs ? abs : path.join(realPath(parent), path.basename(abs));
}

/** Hard-links (or copies) the encoder's files from the source model into `dest`, heads excluded. */
function placeEncoderFiles(src: string, dest: string, mode: 'link' | 'copy'): string[] {
  const placed: string[] = [];
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(fs.realpathSync(path.join(src, rel)), { withFileTypes: true })) {
      const name = path.join(rel, entry.name);
      if (entry.name.startsWith('.')) continue;
      if (rel === '' && /^(colbert|sparse)_linear\.(pt|safetensors)$/.test(entry.name)) continue;
      if (rel === '' && entry.name === 'finetune.json') continue;
      // A symlink (a Hugging Face cache snapshot links every file to a blob) is followed: the
      // output gets the file it points to, never a relative link that would dangle there.
      const from = fs.realpathSync(path.join(src, name));
      const to = path.join(dest, name);
      const stat = fs.statSync(from);
      if (stat.isDirectory()) {
        fs.mkdirSync(to, { recursive: true });
        walk(name);
      } else if (stat.isFile()) {
        let linked = false;
        if (mode === 'link') {
          try {
            fs.linkSync(from, to);
            linked = true;
          } catch { /* another file system or no permission: copy */ }
        }
        if (!linked) fs.copyFileSync(from, to);
        placed.push(name);
      }
    }
  };
  walk('');
  return placed;
}

// ---------------------------------------------------------------------------------------------
// The hidden-state cache

interface CacheIndex {
  version: number;
  model: string;
  hidden: number;
  maxQueryLength: number;
  maxPassageLength: number;
  keysHash: string;
  texts: number;
  tokens: number;
}

interface Cache { dir: string; ids: Int32Array; offsets: Uint32Array; hidden: number; index: Map<string, number>; encoded: number; seconds: number }

/**
 * Encodes every distinct text (keyed by role and content) once, longest first in chunks, and
 * appends its hidden rows to cache/hidden.f32. An existing cache for the same model, texts and
 * truncation is reused.
 */
async function buildCache(model: BGEM3, keys: string[], texts: Map<string, { text: string; query: boolean }>, config: Config,
  dir: string, fingerprint: string, signal: AbortSignal | undefined, progress: (done: number, total: number) => void): Promise<Cache> {
  const keysHash = sha256(JSON.stringify(keys));
  const metaFile = path.join(dir, 'index.json');
  const hidden = model.info().hidden;
  if (fs.existsSync(metaFile)) {
    try {
      const meta = JSON.parse(readRegularFile(metaFile, 'Cache file').toString('utf8')) as CacheIndex;
      if (meta.version === CACHE_VERSION && meta.model === fingerprint && meta.keysHash === keysHash && meta.hidden === hidden &&
          meta.maxQueryLength === config.maxQueryLength && meta.maxPassageLength === config.maxPassageLength) {
        const order = JSON.parse(readRegularFile(path.join(dir, 'keys.json'), 'Cache file').toString('utf8')) as string[];
        const ids = new Int32Array(new Uint8Array(readRegularFile(path.join(dir, 'ids.i32'), 'Cache file')).buffer);
        const offsets = new Uint32Array(new Uint8Array(readRegularFile(path.join(dir, 'offsets.u32'), 'Cache file')).buffer);
        const size = assertRegularFile(path.join(dir, 'hidden.f32'), 'Cache file').size;
        if (order.length === meta.texts && offsets.length === meta.texts + 1 && ids.length === meta.tokens && size === meta.tokens * hidden * 4) {
          return { dir, ids, offsets, hidden, index: new Map(order.map((k, i) => [k, i])), encoded: 0, seconds: 0 };
        }
      }
    } catch { /* unreadable: rebuild */ }
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const started = performance.now();
  const queries = keys.filter((k) => texts.get(k)!.query);
  const passages = keys.filter((k) => !texts.get(k)!.query);
  const tq = await model.tokenize(queries.map((k) => texts.get(k)!.text), { maxLength: config.maxQueryLength });
  const tp = await model.tokenize(passages.map((k) => texts.get(k)!.text), { maxLength: config.maxPassageLength });
  const all = [...queries.map((k, i) => ({ key: k, ids: tq.ids.subarray(tq.offsets[i], tq.offsets[i + 1]) })),
    ...passages.map((k, i) => ({ key: k, ids: tp.ids.subarray(tp.offsets[i], tp.offsets[i + 1]) }))];
  all.sort((a, b) => b.ids.length - a.ids.length || (a.key < b.key ? -1 : 1));
  const tokens = all.reduce((n, t) => n + t.ids.length, 0);
  const ids = new Int32Array(tokens);
  const offsets = new Uint32Array(all.length + 1);
  all.forEach((t, i) => {
    ids.set(t.ids, offsets[i]);
    offsets[i + 1] = offsets[i] + t.ids.length;
  });
  const partial = path.join(dir, 'hidden.f32.partial');
  const fd = fs.openSync(partial, 'w');
  try {
    for (let start = 0; start < all.length;) {
      let end = start + 1;
      while (end < all.length && offsets[end + 1] - offsets[start] <= CACHE_CHUNK_TOKENS) end++;
      const chunk = { ids: ids.subarray(offsets[start], offsets[end]), offsets: offsets.slice(start, end + 1).map((o) => o - offsets[start]) };
      const { rows } = await model.hiddenStates(chunk, { signal });
      fs.writeSync(fd, Buffer.from(rows.buffer, rows.byteOffset, rows.byteLength), 0, rows.byteLength, offsets[start] * hidden * 4);
      progress(end, all.length);
      start = end;
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.writeFileSync(path.join(dir, 'ids.i32'), Buffer.from(ids.buffer));
  fs.writeFileSync(path.join(dir, 'offsets.u32'), Buffer.from(offsets.buffer));
  fs.writeFileSync(path.join(dir, 'keys.json'), JSON.stringify(all.map((t) => t.key)));
  fs.renameSync(partial, path.join(dir, 'hidden.f32'));
  const meta: CacheIndex = { version: CACHE_VERSION, model: fingerprint, hidden, maxQueryLength: config.maxQueryLength,
    maxPassageLength: config.maxPassageLength, keysHash, texts: all.length, tokens };
  fs.writeFileSync(metaFile, JSON.stringify(meta));  // last: its presence marks a complete cache
  return { dir, ids, offsets, hidden, index: new Map(all.map((t, i) => [t.key, i])), encoded: all.length,
    seconds: (performance.now() - started) / 1000 };
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

interface CheckpointState {
  version: number;
  config: Config;
  dataHash: string;
  model: string;
  /** Where training resumes: epoch (0-based) and step within it. */
  epoch: number;
  stepInEpoch: number;
  globalStep: number;
  adamSteps: number;
}

function saveCheckpoint(workDir: string, trainer: NativeHeadTrainer, state: CheckpointState): string {
  const dir = path.join(workDir, 'checkpoint');
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const s = trainer.state();
  writeSafetensors(path.join(tmp, 'trainer.safetensors'), {
    params: { shape: [s.params.length], data: s.params }, m: { shape: [s.m.length], data: s.m }, v: { shape: [s.v.length], data: s.v },
  });
  writeFileSynced(path.join(tmp, 'state.json'), JSON.stringify({ ...state, adamSteps: s.t }, null, 2));
  swapDirectory(tmp, dir, `${dir}.old`);  // loadCheckpoint falls back to checkpoint.old
  return dir;
}

/** Removes every checkpoint of the work directory (current, previous and half-written). */
function removeCheckpoints(workDir: string): void {
  for (const name of ['checkpoint', 'checkpoint.old', 'checkpoint.tmp']) fs.rmSync(path.join(workDir, name), { recursive: true, force: true });
}

/**
 * The work directory's checkpoint: `checkpoint/`, or `checkpoint.old/` when a save was cut off
 * between its two renames. A checkpoint that cannot be read is an ERR_INPUT naming it.
 */
function loadCheckpoint(workDir: string): { state: CheckpointState; params: Float32Array; m: Float32Array; v: Float32Array } | undefined {
  const dir = [path.join(workDir, 'checkpoint'), path.join(workDir, 'checkpoint.old')]
    .find((d) => fs.existsSync(path.join(d, 'state.json')));
  if (!dir) return undefined;
  const unreadable = (why: string) => new M3Error('ERR_INPUT', `the checkpoint in '${dir}' cannot be used (${why}); ` +
    'pass force (--force) without resume to start over');
  let state: CheckpointState;
  try {
    state = JSON.parse(readRegularFile(path.join(dir, 'state.json'), 'Checkpoint file').toString('utf8')) as CheckpointState;
  } catch (err) {
    throw unreadable(`state.json: ${(err as Error).message}`);
  }
  if (!state || state.version !== CHECKPOINT_VERSION) throw unreadable(`version ${state?.version}, not ${CHECKPOINT_VERSION}`);
  let tensors;
  try {
    tensors = native().readTensorFile(path.join(dir, 'trainer.safetensors'));
  } catch (err) {
    throw unreadable(fromNative(err).message);
  }
  if (!tensors.params || !tensors.m || !tensors.v) throw unreadable('trainer.safetensors lacks params, m or v');
  return { state, params: tensors.params.data, m: tensors.m.data, v: tensors.v.data };
}

// ---------------------------------------------------------------------------------------------
// Training

function meanLosses(list: StepLosses[]): StepLosses {
  const out: StepLosses = { loss: 0, dense: 0, lex: 0, colbert: 0, inter: 0, distillDense: 0, distillLex: 0, distillColbert: 0 };
  for (const l of list) for (const k of Object.keys(out) as (keyof StepLosses)[]) out[k] += l[k] / list.length;
  return out;
}

/** Reads a head file's weight and bias as fp32, checking the shapes against the encoder. */
function readHead(file: string, out: number, hidden: number): { weight: Float32Array; bias: Float32Array } {
  let dict;
  try {
    dict = native().readTensorFile(file);
  } catch (err) {
    throw fromNative(err);
  }
  const w = dict.weight, b = dict.bias;
  if (!w || !b || w.data.length !== out * hidden || b.data.length !== out) {
    throw new M3Error('ERR_MODEL_LAYOUT', `'${file}' should hold weight [${out}, ${hidden}] and bias [${out}]`);
  }
  return { weight: w.data, bias: b.data };
}

/**
 * Fine-tunes the sparse and ColBERT heads of `options.model` on `options.data` and writes the
 * result to `options.out` (see the module comment).
 */
export async function finetuneHeads(options: FinetuneOptions): Promise<FinetuneResult> {
  checkOptions(options);
  for (const key of ['model', 'out'] as const) checkNonEmptyString(options[key], key, 'a directory path');
  const src = path.resolve(options.model);
  const out = path.resolve(options.out);
  const workDir = path.resolve(options.workDir ?? `${out}.partial`);
  // Real paths, so that no symlink lets --force replace (delete) the source or a folder holding it.
  const realSrc = realPath(src);
  for (const [what, dir] of [['output directory', out], ['work directory', workDir]] as const) {
    const real = realPath(dir);
    if (within(real, realSrc) || within(realSrc, real)) {
      throw new M3Error('ERR_INPUT', `the ${what} '${dir}' ${within(real, realSrc) ? 'is or lies inside' : 'contains'} the source model ` +
        `'${src}', which is never changed; choose another`);
    }
  }
  const force = checkBoolean(options.force, 'force', false);
  const resume = checkBoolean(options.resume, 'resume', false);
  if (fs.existsSync(out) && !force) {
    throw new M3Error('ERR_INPUT', `the output directory '${out}' already exists; choose another or pass force (--force) to replace it`);
  }
  const epochs = optionalInteger(options.epochs, 'epochs', 1, 1, 1e6);
  const checkpointEvery = optionalInteger(options.checkpointEvery, 'checkpointEvery', 500, 0, 1e12);
  const threads = optionalInteger(options.threads, 'threads', os.availableParallelism(), 1, 1024);
  const encoderFiles = checkChoice(options.encoderFiles, 'encoderFiles', ['link', 'copy'] as const, 'link');
  const signal = options.signal;
  const emit = options.onProgress ?? (() => {});
  const rows = readRows(options.data);
  if (rows.length === 0) throw new M3Error('ERR_INPUT', 'the training data has no rows');

  const model = await BGEM3.load(src, options.load ?? {});
  let trainer: NativeHeadTrainer | undefined;
  try {
    const info = model.info();
    if (info.layout !== 'bge-m3-snapshot') {
      throw new M3Error('ERR_MODEL_LAYOUT', `'${info.onnx}' has the heads baked into the graph; fine-tuning the heads needs the BAAI ` +
        'layout (a graph that outputs last_hidden_state, with colbert_linear and sparse_linear files beside it)');
    }
    const config: Config = {
      lr: optionalNumber(options.lr, 'lr', 1e-4, Number.MIN_VALUE, 10),
      weightDecay: optionalNumber(options.weightDecay, 'weightDecay', 0, 0, 10),
      groupSize: optionalInteger(options.groupSize, 'groupSize', 8, 1, 4096),
      batchSize: optionalInteger(options.batchSize, 'batchSize', 8, 1, 1 << 16),
      seed: optionalInteger(options.seed, 'seed', 0, 0, 2 ** 31 - 1),
      ...checkLossOptions(options),
      trainSparse: checkBoolean(options.trainSparse, 'trainSparse', true),
      trainColbert: checkBoolean(options.trainColbert, 'trainColbert', true),
      maxQueryLength: optionalInteger(options.maxQueryLength, 'maxQueryLength', queryLength(info.modelMaxLength), 2, info.modelMaxLength),
      maxPassageLength: optionalInteger(options.maxPassageLength, 'maxPassageLength', passageLength(info.modelMaxLength), 2, info.modelMaxLength),
    };
    if (!config.trainSparse && !config.trainColbert) throw new M3Error('ERR_INPUT', 'trainSparse and trainColbert are both false: nothing to train');
    if (Math.min(config.batchSize, rows.length) === 1 && (config.groupSize === 1 || rows.every((r) => !r.neg || r.neg.length === 0))) {
      throw new M3Error('ERR_INPUT', 'no negatives: with one query per step (batchSize 1, or a single row) each query needs "neg" ' +
        'passages (and groupSize > 1); or give several rows and batchSize >= 2 so the other queries\' passages serve as in-batch negatives');
    }

    // Distinct texts by role; the cache order is decided by buildCache.
    const texts = new Map<string, { text: string; query: boolean }>();
    const key = (text: string, query: boolean) => `${query ? 'q' : 'p'}:${text}`;
    for (const r of rows) {
      texts.set(key(r.query, true), { text: r.query, query: true });
      for (const p of [...r.pos, ...(r.neg ?? [])]) texts.set(key(p, false), { text: p, query: false });
    }
    const keys = [...texts.keys()];
    const fingerprint = modelFingerprint(info);
    const dataHash = sha256(JSON.stringify(rows.map((r) => [r.query, r.pos, r.neg ?? []])));

    // A checkpoint from an earlier run: resume it, or discard it only when asked.
    fs.rmSync(path.join(workDir, 'checkpoint.tmp'), { recursive: true, force: true });  // a save cut off midway
    if (force && !resume) removeCheckpoints(workDir);
    const checkpoint = loadCheckpoint(workDir);
    if (checkpoint && !resume) {
      throw new M3Error('ERR_INPUT', `'${workDir}' holds a checkpoint of an interrupted run (step ${checkpoint.state.globalStep}); ` +
        'resume it with resume (--resume), or pass force (--force) to start over');
    }
    if (resume && !checkpoint) throw new M3Error('ERR_INPUT', `nothing to resume: no checkpoint in '${workDir}'`);
    if (checkpoint) {
      const c = checkpoint.state;
      const changed = (Object.keys(config) as (keyof Config)[]).filter((k) => JSON.stringify(c.config[k]) !== JSON.stringify(config[k]));
      if (c.dataHash !== dataHash) changed.push('data' as keyof Config);
      if (c.model !== fingerprint) changed.push('model' as keyof Config);
      if (changed.length > 0) {
        throw new M3Error('ERR_INPUT', `the checkpoint in '${workDir}' was made with different ${changed.join(', ')}; ` +
          'resume with the same settings, or pass force (--force) without resume to start over');
      }
      if (c.epoch > epochs || (c.epoch === epochs && c.stepInEpoch > 0)) {
        throw new M3Error('ERR_INPUT', `the checkpoint in '${workDir}' is already in epoch ${c.epoch + 1}; ` +
          `resume with epochs >= ${c.stepInEpoch > 0 ? c.epoch + 1 : c.epoch}`);
      }
    }

    fs.mkdirSync(workDir, { recursive: true });
    const interruptedEncoding = () => new M3Error('ERR_ABORTED', 'fine-tuning was interrupted while encoding the texts, before ' +
      'any training; nothing to resume (the next run encodes them again)');
    let cache: Cache;
    try {
      cache = await buildCache(model, keys, texts, config, path.join(workDir, 'cache'), fingerprint, signal,
        (done, total) => emit({ phase: 'encode', done, total }));
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_ABORTED' && signal?.aborted) throw interruptedEncoding();
      throw err;
    }
    if (signal?.aborted) throw interruptedEncoding();
    const examples: Example[] = rows.map((r) => ({
      query: cache.index.get(key(r.query, true))!,
      pos: r.pos.map((p) => cache.index.get(key(p, false))!),
      neg: (r.neg ?? []).map((p) => cache.index.get(key(p, false))!),
    }));

    // Heads: from the source model, or the checkpoint.
    const hidden = cache.hidden;
    const dim = info.dim;
    const colbert = readHead(info.colbertHead, dim, hidden);
    const sparse = readHead(info.sparseHead, 1, hidden);
    const params = new Float32Array(hidden + 1 + dim * hidden + dim);
    params.set(sparse.weight, 0);
    params[hidden] = sparse.bias[0];
    params.set(colbert.weight, hidden + 1);
    params.set(colbert.bias, hidden + 1 + dim * hidden);
    try {
      trainer = new (native().HeadTrainerNative)(path.join(cache.dir, 'hidden.f32'), hidden, cache.ids, cache.offsets, dim, params, threads);
      if (checkpoint) trainer.setState(checkpoint.params, checkpoint.m, checkpoint.v, checkpoint.state.adamSteps);
    } catch (err) {
      throw fromNative(err);
    }

    const stepOptions = {
      ...nativeLossOptions(config), trainSparse: config.trainSparse, trainColbert: config.trainColbert,
      lr: config.lr, weightDecay: config.weightDecay, update: true,
    };
    const stepsPerEpoch = Math.ceil(examples.length / config.batchSize);
    let epoch = checkpoint?.state.epoch ?? 0;
    let stepInEpoch = checkpoint?.state.stepInEpoch ?? 0;
    let globalStep = checkpoint?.state.globalStep ?? 0;
    /** The checkpoint that continues at step `at` of epoch `atEpoch`. */
    const state = (atEpoch: number, at: number): CheckpointState =>
      ({ version: CHECKPOINT_VERSION, config, dataHash, model: fingerprint, epoch: atEpoch, stepInEpoch: at, globalStep, adamSteps: 0 });
    let processed = 0;
    let epochLosses: StepLosses[] = [];
    let lastEpoch: StepLosses | undefined;
    const trainStart = performance.now();
    let trainMs = 0;
    for (; epoch < epochs; epoch++, stepInEpoch = 0) {
      const plan = planEpoch(examples, config, epoch);
      epochLosses = [];
      for (; stepInEpoch < plan.length; stepInEpoch++) {
        if (signal?.aborted) {
          const dir = saveCheckpoint(workDir, trainer, state(epoch, stepInEpoch));
          emit({ phase: 'checkpoint', step: globalStep, dir });
          throw new M3Error('ERR_ABORTED', `fine-tuning was interrupted at step ${globalStep} of ${stepsPerEpoch * epochs}; ` +
            `the checkpoint in '${dir}' continues it with resume (--resume) and the same settings`);
        }
        const s = plan[stepInEpoch];
        const t0 = performance.now();
        let r;
        try {
          r = await trainer.step(s.queries, s.passages, s.target, stepOptions);
        } catch (err) {
          throw fromNative(err);
        }
        trainMs += performance.now() - t0;
        if (!Number.isFinite(r.loss)) {
          throw new M3Error('ERR_RUNTIME', `the loss became ${r.loss} at step ${globalStep}; lower the learning rate (lr, now ${config.lr})`);
        }
        globalStep++;
        processed += s.queries.length;
        const losses: StepLosses = { loss: r.loss, dense: r.dense, lex: r.lex, colbert: r.colbert, inter: r.inter,
          distillDense: r.distillDense, distillLex: r.distillLex, distillColbert: r.distillColbert };
        epochLosses.push(losses);
        emit({ phase: 'train', epoch, epochs, step: globalStep, steps: stepsPerEpoch * epochs, examples: processed, losses,
          gradNorm: r.gradNorm, examplesPerSecond: processed / Math.max(trainMs / 1000, 1e-9) });
        if (checkpointEvery > 0 && globalStep % checkpointEvery === 0 && stepInEpoch + 1 < plan.length) {
          emit({ phase: 'checkpoint', step: globalStep, dir: saveCheckpoint(workDir, trainer, state(epoch, stepInEpoch + 1)) });
        }
      }
      if (epochLosses.length > 0) lastEpoch = meanLosses(epochLosses);
      if (epoch + 1 < epochs) {
        emit({ phase: 'checkpoint', step: globalStep, dir: saveCheckpoint(workDir, trainer, state(epoch + 1, 0)) });
      }
    }
    const trainSeconds = (performance.now() - trainStart) / 1000;
    // The trained heads are kept until the output is in place: if writing it fails (a full
    // disk), resume writes it without training again.
    saveCheckpoint(workDir, trainer, state(epochs, 0));

    // The output directory: encoder files from the source, the new heads, a record of the run.
    const final = trainer.state().params;
    const tmp = `${out}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp, { recursive: true });
    try {
      const placed = placeEncoderFiles(src, tmp, encoderFiles);
      const meta = { format: 'pt', source: 'bge-m3 finetune-heads' };
      writeSafetensors(path.join(tmp, 'colbert_linear.safetensors'), {
        weight: { shape: [dim, hidden], data: final.slice(hidden + 1, hidden + 1 + dim * hidden) },
        bias: { shape: [dim], data: final.slice(hidden + 1 + dim * hidden) },
      }, meta);
      writeSafetensors(path.join(tmp, 'sparse_linear.safetensors'), {
        weight: { shape: [1, hidden], data: final.slice(0, hidden) }, bias: { shape: [1], data: final.slice(hidden, hidden + 1) },
      }, meta);
      fs.writeFileSync(path.join(tmp, 'finetune.json'), `${JSON.stringify({
        source: src, encoderFiles: { mode: encoderFiles, files: placed }, config, epochs, steps: globalStep, examples: rows.length,
        lastEpoch, dataHash,
      }, null, 2)}\n`);
      if (fs.existsSync(out) && !force) {
        throw new M3Error('ERR_INPUT', `the output directory '${out}' appeared while training; pass force (--force) to replace it, ` +
          'with resume (--resume) to keep the training done');
      }
      swapDirectory(tmp, out);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    if (!options.keepWorkDir) fs.rmSync(workDir, { recursive: true, force: true });
    else removeCheckpoints(workDir);
    emit({ phase: 'done', out });
    const zero: StepLosses = { loss: 0, dense: 0, lex: 0, colbert: 0, inter: 0, distillDense: 0, distillLex: 0, distillColbert: 0 };
    return {
      out, epochs, steps: globalStep, examples: processed, encodedTexts: cache.encoded, encodeSeconds: cache.seconds, trainSeconds,
      examplesPerSecond: processed / Math.max(trainMs / 1000, 1e-9), lastEpoch: lastEpoch ?? zero,
    };
  } finally {
    trainer?.close();
    await model.dispose();
  }
}
