/**
 * What the commands share: argument parsers, the model and device flags, and opening the model
 * they name (the bundled demo model, with a warning, when they name none).
 */
import { Command, InvalidArgumentError } from 'commander';
import { DEVICES, type Device } from '../addon/native';
import { isIntegerIn, isNumberIn, isWeightTriple } from '../base/validate';
import { BGEM3, type LoadOptions } from '../engine/model';
import { DEMO_MODEL_DIR } from '../engine/runtime';

const DEMO_WARNING = 'bge-m3: using the bundled demo model, whose weights are RANDOM: its vectors and scores mean ' +
  'nothing. For real embeddings download BAAI/bge-m3 (huggingface-cli download BAAI/bge-m3 --local-dir ./bge-m3) ' +
  'and pass --model ./bge-m3.';

/** A parser of numeric arguments: the number, if `accept` takes it. */
function numberArg(accept: (n: number) => boolean, expected: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!accept(n)) throw new InvalidArgumentError(`expected ${expected}`);
    return n;
  };
}

export const positiveInt = numberArg((n) => isIntegerIn(n, 1, Infinity), 'a positive integer');
export const nonNegativeInt = numberArg((n) => isIntegerIn(n, 0, Infinity), 'a non-negative integer');
export const nonNegativeNumber = numberArg((n) => isNumberIn(n, 0, Infinity), 'a non-negative number');
export const positiveNumber = numberArg((n) => isNumberIn(n, Number.MIN_VALUE, Infinity), 'a positive number');

/** A byte count: a plain number, or with a binary unit (512M, 8G, 8GiB). */
export function byteSize(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?|B)?$/i.exec(value.trim());
  const power = m?.[2] ? 'KMGT'.indexOf(m[2].toUpperCase()) + 1 : 0;
  const n = m ? Math.round(Number(m[1]) * 1024 ** power) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a byte count such as 8G, 512M or 1073741824');
  return n;
}

export function weightList(value: string): [number, number, number] {
  const parts = value.split(',').map(Number);
  if (!isWeightTriple(parts)) throw new InvalidArgumentError('expected three non-negative numbers, e.g. 0.4,0.2,0.4');
  return parts;
}

export function precisionArg(value: string): 'fp32' | 'bf16' | 'fp16' {
  if (value !== 'fp32' && value !== 'bf16' && value !== 'fp16') throw new InvalidArgumentError("expected 'fp32', 'bf16' or 'fp16'");
  return value;
}

export interface ModelFlags {
  model?: string;
  revision?: string;
  threads?: number;
  device?: Device;
  deviceId?: number;
  gpuMemLimit?: number;
  allowTf32?: boolean;
  fusedAttention?: boolean;
  precision?: 'fp32' | 'bf16' | 'fp16';
  releaseMemoryAfterMs?: number;
}

/** The load options the model flags (addModelFlags, addDeviceFlags) give. */
export function loadOptions(flags: ModelFlags): LoadOptions {
  const options: LoadOptions = { device: flags.device ?? 'cpu' };
  if (flags.threads) options.threads = flags.threads;
  if (flags.revision !== undefined) options.revision = flags.revision;
  if (flags.deviceId !== undefined) options.deviceId = flags.deviceId;
  if (flags.gpuMemLimit !== undefined) options.gpuMemLimit = flags.gpuMemLimit;
  if (flags.allowTf32) options.allowTf32 = true;
  if (flags.fusedAttention === false) options.fusedAttention = false;
  if (flags.precision !== undefined) options.precision = flags.precision;
  if (flags.releaseMemoryAfterMs !== undefined) options.releaseMemoryAfterMs = flags.releaseMemoryAfterMs;
  return options;
}

export async function openModel(flags: ModelFlags): Promise<BGEM3> {
  const dir = flags.model ?? DEMO_MODEL_DIR;
  if (!flags.model) process.stderr.write(`${DEMO_WARNING}\n`);
  return BGEM3.load(dir, loadOptions(flags));
}

/** Runs `use` with the model the flags name, and disposes of it after. */
export async function withModel<T>(flags: ModelFlags, use: (model: BGEM3) => Promise<T>): Promise<T> {
  const model = await openModel(flags);
  try {
    return await use(model);
  } finally {
    await model.dispose();
  }
}

export function addDeviceFlags(cmd: Command): Command {
  return cmd
    .option('--device <device>', DEVICES.map((d) => `'${d}'`).join(' or '), 'cpu')
    .option('--device-id <n>', 'CUDA device (with --device cuda)', nonNegativeInt)
    .option('--gpu-mem-limit <bytes>', "ONNX Runtime's GPU arena limit, e.g. 8G (with --device cuda)", byteSize)
    .option('--allow-tf32', 'TF32 tensor-core math for fp32 products (with --device cuda; outputs move by about 1e-3)');
}

export function addModelFlags(cmd: Command): Command {
  return addDeviceFlags(cmd
    .option('-m, --model <dir|id>', 'model directory (BAAI/bge-m3 snapshot or ONNX export) or hub id (BAAI/bge-m3, ' +
      'downloaded into the Hugging Face cache); default: the demo model')
    .option('--revision <rev>', 'with a hub id: the branch, tag or commit (default main)')
    .option('-t, --threads <n>', 'ONNX Runtime threads', positiveInt)
    .option('--no-fused-attention', "run the graph's own attention ops instead of the fused CPU kernel")
    .option('--precision <p>', "the encoder's arithmetic: fp32, bf16 (a CPU with AVX-512 BF16; about 1e-3 from fp32) or fp16 (the GPU's tensor cores)", precisionArg));
}
