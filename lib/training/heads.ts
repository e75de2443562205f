/**
 * The sparse and ColBERT heads as the native trainer holds them: one flat Float32Array of the
 * sparse weight [hidden], the sparse bias [1], the ColBERT weight [dim x hidden] and the ColBERT
 * bias [dim] (native/train/head_trainer.h, HeadLayout). Read from the source model's head files,
 * written as the output model's.
 */
import * as path from 'node:path';
import { native } from '../addon/native';
import { M3Error, fromNative } from '../base/errors';
import { writeSafetensors } from './safetensors';

/** Where the head files are and their shapes. */
export interface HeadFiles {
  colbertHead: string;
  sparseHead: string;
  dim: number;
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

/** The source model's heads, flat in the trainer's layout. */
export function readHeadParams(model: HeadFiles, hidden: number): Float32Array {
  const { dim } = model;
  const colbert = readHead(model.colbertHead, dim, hidden);
  const sparse = readHead(model.sparseHead, 1, hidden);
  const params = new Float32Array(hidden + 1 + dim * hidden + dim);
  params.set(sparse.weight, 0);
  params[hidden] = sparse.bias[0];
  params.set(colbert.weight, hidden + 1);
  params.set(colbert.bias, hidden + 1 + dim * hidden);
  return params;
}

/** Writes trained heads (flat, the trainer's layout) into `dir` as colbert_linear and sparse_linear .safetensors. */
export function writeHeadFiles(dir: string, params: Float32Array, dim: number, hidden: number): void {
  const meta = { format: 'pt', source: 'bge-m3 finetune-heads' };
  writeSafetensors(path.join(dir, 'colbert_linear.safetensors'), {
    weight: { shape: [dim, hidden], data: params.slice(hidden + 1, hidden + 1 + dim * hidden) },
    bias: { shape: [dim], data: params.slice(hidden + 1 + dim * hidden) },
  }, meta);
  writeSafetensors(path.join(dir, 'sparse_linear.safetensors'), {
    weight: { shape: [1, hidden], data: params.slice(0, hidden) }, bias: { shape: [1], data: params.slice(hidden, hidden + 1) },
  }, meta);
}
