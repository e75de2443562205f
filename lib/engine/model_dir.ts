/**
 * A model directory as BGEM3.load reads it, before ONNX Runtime does: a directory with nothing in
 * it that would block a read (a FIFO, a device), and its config.json: the usable positions, the
 * attention heads and the vocabulary size, with BGE-M3's values where it has none.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_MAX_LENGTH } from '../base/defaults';
import { M3Error, describe } from '../base/errors';
import { describeFileKind, readRegularFile, regularFileStats } from '../base/files';

/** BGE-M3's (XLM-RoBERTa large's) attention heads, for a model directory without config.json. */
const DEFAULT_ATTENTION_HEADS = 16;

/** What config.json tells about the model (usable positions, heads, vocabulary). */
export interface ModelDirectory {
  /** The absolute path. */
  dir: string;
  config: ModelConfig;
  /** Usable positions: max_position_embeddings minus the padding offset. */
  modelMaxLength: number;
  /** Whether config.json states the positions (else modelMaxLength is a default until the graph tells). */
  positionsStated: boolean;
  attentionHeads: number;
}

/** Throws unless `abs` is a directory, saying what to pass instead. */
export function checkModelDirectory(abs: string): void {
  const dirStats = fs.statSync(abs, { throwIfNoEntry: false });
  if (dirStats && !dirStats.isDirectory()) {
    throw new M3Error('ERR_MODEL_FILES', `'${abs}' is ${describeFileKind(dirStats)}, not a model directory; pass the folder that holds ` +
      'the model (config.json, tokenizer.json, onnx/model.onnx).');
  }
  if (!dirStats) {
    throw new M3Error('ERR_MODEL_FILES', `Model directory '${abs}' does not exist. Pass a model directory, or a hub id ` +
      "such as BAAI/bge-m3 (downloaded into the Hugging Face cache on first use).");
  }
}

/** Reads the directory's config.json (BGE-M3's defaults without one) and checks its entries. */
export function readModelDirectory(dir: string): ModelDirectory {
  checkModelEntries(dir);
  const config = readModelConfig(dir);
  const positions = config.max_position_embeddings;
  return { dir, config, modelMaxLength: readModelMaxLength(dir, config), positionsStated: positions !== undefined && positions !== null,
    attentionHeads: readAttentionHeads(dir, config) };
}

/**
 * Usable positions from the rows of the graph's position table (XLM-R: ids pad+1 .. rows-1),
 * for a directory whose config.json does not state them; the default when the graph has no
 * table the engine recognises.
 */
export function graphMaxLength(model: ModelDirectory, rows: number): number {
  const pad = typeof model.config.pad_token_id === 'number' ? model.config.pad_token_id : 1;
  return rows - pad - 1 >= 2 ? rows - pad - 1 : model.modelMaxLength;
}

/** The fields of config.json that the engine reads. */
export interface ModelConfig {
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
export function checkVocabulary(dir: string, config: ModelConfig, tokenizerIds: number): void {
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
