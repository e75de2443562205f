/**
 * The raw native module: its exact shape, and the loader. Everything here is internal; the
 * public API is in lib/index.ts.
 */
import * as path from 'node:path';
import { M3Error } from '../base/errors';

/** Options the native `Encoder.load` reads. */
export interface NativeLoadOptions {
  threads?: number;
  interOpThreads?: number;
  graphOptimization?: string;
  memoryArena?: boolean;
  allowSpinning?: boolean;
  fusedAttention?: boolean;
  precision?: string;
  device?: string;
  deviceId?: number;
  gpuMemLimit?: number;
  allowTf32?: boolean;
  onnxFile?: string;
  optimizedGraphPath?: string;
  vocabSize: number;
  concurrency?: number;
}

/** What one native encode returns, in the caller's order. */
export interface NativeEncodeResult {
  count: number;
  dim: number;
  dense: Float32Array;
  sparseOffsets: Uint32Array;
  sparseIds: Uint32Array;
  sparseWeights: Float32Array;
  colbertOffsets: Uint32Array;
  colbert: Float32Array;
  /** last_hidden_state rows of each text (the 'hidden' output), at the token offsets. */
  hidden: Float32Array;
  stats: EncodeStats;
}

/** Where one encode's time went. */
export interface EncodeStats {
  /** Wall-clock milliseconds inside ONNX Runtime. */
  sessionMs: number;
  /** Wall-clock milliseconds in pooling and the native heads. */
  headsMs: number;
  /** Tokens run through the model, padding included. */
  paddedTokens: number;
  batches: number;
}

/** Facts about a loaded native model. */
export interface NativeModelInfo {
  layout: 'bge-m3-snapshot' | 'heads-baked';
  dim: number;
  hidden: number;
  onnx: string;
  colbertHead: string;
  sparseHead: string;
  hasDense: boolean;
  hasSparse: boolean;
  hasColbert: boolean;
  graphOutputs: string[];
  workers: number;
  /** Where the BAAI layout's heads run: 'cuda' when a CUDA session keeps the hidden states on the GPU. */
  headsDevice: Device;
  /** For a CUDA session whose heads run on the CPU: why (empty otherwise). */
  headsDeviceWhy: string;
  /** Self-attention blocks running as the fused CPU kernel (0: the graph's own attention ops). */
  fusedAttentionBlocks: number;
  /** Why no block runs fused, when the fusion was looked for (empty otherwise). */
  attentionNote: string;
  /** What runs: 'bf16' when the graph's dense layers (and then the fused attention's products) run in bf16, 'fp16' when the graph was converted to fp16. */
  precision: 'fp32' | 'bf16' | 'fp16';
  /** With precision 'fp16': float tensors stored as fp16 (of their values, `clamped` held at
   * +-65504), decomposed LayerNorms whose statistics stay fp32, nodes kept in fp32 in all, and
   * the Cast nodes added at the edges. */
  fp16?: { tensors: number; clamped: number; layerNorms: number; fp32Nodes: number; casts: number };
  /** Dense layers (MatMul or Gemm by a weight) running on the bf16 kernel. */
  bf16Layers: number;
  /** Why the model runs in fp32 although bf16 was asked for (empty otherwise). */
  precisionNote: string;
}

export interface NativeEncoder {
  info(): NativeModelInfo;
  /** `outputs`: the output kinds to compute, by name (NATIVE_OUTPUT_KINDS). */
  encode(ids: Int32Array, offsets: Uint32Array, order: Uint32Array, batchEnds: Uint32Array,
         outputs: NativeOutputKind[], jobId: number): Promise<NativeEncodeResult>;
  cancel(jobId: number): boolean;
  /** Shrinks ONNX Runtime's CPU arena and trims the C heap; after the encodes queued before it. */
  releaseMemory(): Promise<void>;
  close(): Promise<void>;
}

export interface NativeEncoderClass {
  load(dir: string, options: NativeLoadOptions): Promise<NativeEncoder>;
}

export interface NativeRuntimeInfo {
  ortVersion: string;
  providers: string[];
  ortLibraryDir: string;
  cudaMissing: string[];
  cudaProviderError: string;
  hardwareThreads: number;
}

export type IsaTierName = 'serial' | 'avx2' | 'avx512';

export interface NativeCapabilities {
  detected: IsaTierName;
  active: IsaTierName;
  features: Record<string, boolean>;
}

export interface NativeTensor {
  shape: number[];
  data: Float32Array;
}

/** Document multi-vectors as the kernels take them (see lib/scoring/maxsim.ts). */
export interface NativeMultiVectors {
  format: 'f32' | 'bf16' | 'i8';
  dim: number;
  offsets: Uint32Array;
  data: Float32Array | Uint16Array | Int8Array;
  scales?: Float32Array;
}

/** Component and fused scores of a search, best first (index_wrap.cc). */
export interface NativeSearchResult {
  slots: Uint32Array;
  score: Float64Array;
  dense: Float64Array;
  sparse: Float64Array;
  colbert: Float64Array;
}

export interface NativeSearchParams {
  k: number;
  wDense: number;
  wSparse: number;
  wColbert: number;
  denseCandidates: number;
  sparseCandidates: number;
  denseRoute: boolean;
  sparseRoute: boolean;
  exhaustive: boolean;
  threads: number;
  /** Dense-route candidates from an approximate index (instead of the exact scan). */
  denseSlots?: Uint32Array;
  /** A filter: one byte per slot (stats().slots of them), nonzero where the slot may be returned. */
  allowed?: Uint8Array;
}

export interface NativeHybridIndex {
  add(dense: Float32Array, sparseOffsets: Uint32Array, ids: Uint32Array, weights: Float32Array,
      colbertOffsets: Uint32Array | null, colbert: Float32Array | null): Uint32Array;
  remove(slots: Uint32Array): void;
  compact(): Uint32Array;
  stats(): { slots: number; live: number; colbertBytesPerDocument: number };
  search(dense: Float32Array, ids: Uint32Array, weights: Float32Array, colbert: Float32Array | null,
         params: NativeSearchParams): NativeSearchResult;
  searchBatch(dense: Float32Array, sparseOffsets: Uint32Array, ids: Uint32Array, weights: Float32Array,
              colbertOffsets: Uint32Array | null, colbert: Float32Array | null,
              params: NativeSearchParams): NativeSearchResult & { offsets: Uint32Array };
  exportState(): NativeIndexState;
  importState(state: NativeIndexState): void;
}

/** The stored arrays of a compacted index (persistence). */
export interface NativeIndexState {
  dense: Float32Array;
  sparseOffsets: Uint32Array;
  sparseIds: Uint32Array;
  sparseWeights: Float32Array;
  colbertOffsets: Uint32Array;
  colbertF32: Float32Array;
  colbertBf16: Uint16Array;
  colbertI8: Int8Array;
  colbertScales: Float32Array;
}

/** The addon's `testing` object: single kernels on a chosen tier, their timings and the core's
 * peak rates (tests and benchmarks), and the names of the addon's tables. Not part of the API. */
export interface NativeTesting {
  /** The graph file as precision 'fp16' converts it (graph/fp16_rewrite.h); model is empty and problem says why when it is not converted. */
  fp16Graph(onnxPath: string): { model: Buffer; problem: string; tensors: number; clamped: number; layerNorms: number; fp32Nodes: number; casts: number };
  /** y = x · W + b on one tier (the f32 head kernel). */
  linearForward(w: Float32Array, b: Float32Array, out: number, inp: number, x: Float32Array,
                rows: number, isa: IsaTierName): Float32Array;
  /** The fused attention kernel on one tier: dims [batch, heads, qLen, kvLen, headDim, vDim]. */
  attentionForward(q: Float32Array, kt: Float32Array, v: Float32Array, mask: Float32Array | null,
                   dims: number[], maskStrides: number[], scale: number, isa: IsaTierName, bf16?: boolean): Float32Array;
  /** The attention kernel timed on the calling thread: ms per run (dims as attentionForward's). */
  attentionKernelTimes(dims: number[], isa: IsaTierName, runs: number, bf16?: boolean): Float64Array;
  /** y = x · W + b (W [inp][out]) in bf16: the AVX-512 BF16 kernel (`vector`) or the serial oracle. */
  linearBf16Forward(w: Float32Array, b: Float32Array | null, inp: number, out: number, x: Float32Array,
                    rows: number, vector: boolean): Float32Array;
  /** The bf16 kernel timed on the calling thread: ms per run. */
  linearBf16KernelTimes(dims: [number, number, number], runs: number): Float64Array;
  /** This core's `vdpbf16ps` rate in GFLOP/s (0 without AVX-512 BF16). */
  bf16Peak(seconds?: number): number;
  /** This core's measured fp32 FMA peak in GFLOP/s on a tier (benchmarks). */
  fmaPeak(isa?: IsaTierName, seconds?: number): number;
  /** The lexical score of one pair by the sorted merge (benchmarks). */
  lexicalScorePair(aIds: Uint32Array, aWeights: Float32Array, bIds: Uint32Array, bWeights: Float32Array): number;
  /** The output kinds of native/core/outputs.h, in table order. */
  outputKinds: string[];
  /** The registered execution providers (the `device` names), in registration order. */
  executionProviders: string[];
}

export interface NativeModule {
  Encoder: NativeEncoderClass;
  HybridIndexNative: new (dim: number, vocabSize: number, colbertFormat: 'f32' | 'bf16' | 'i8' | null) => NativeHybridIndex;
  /** An exclusive flock on `path` (created if missing): its descriptor, or -1 while another holds it. */
  tryLockFile(path: string): number;
  /** Releases tryLockFile's lock; with `remove`, deletes the file first. */
  unlockFile(fd: number, path: string, remove: boolean): void;
  runtimeInfo(): NativeRuntimeInfo;
  capabilities(): NativeCapabilities;
  setIsa(name: IsaTierName): IsaTierName;
  readTensorFile(path: string): Record<string, NativeTensor>;
  /** Rows of the ONNX graph's position-embedding table (0 when none is found). */
  graphPositionRows(onnxPath: string): number;
  /** Kernels, timings and tables for tests and benchmarks only. */
  testing: NativeTesting;

  // maxsim_wrap.cc
  /** scores[k * docs + i]: query k (rows queryOffsets[k]..[k+1]) against document i. */
  maxSimSync(queries: Float32Array, queryOffsets: Uint32Array, docs: NativeMultiVectors, threads: number,
             isa?: IsaTierName): Float32Array;
  maxSim(queries: Float32Array, queryOffsets: Uint32Array, docs: NativeMultiVectors, threads: number): Promise<Float32Array>;
  /** Converts fp32 rows to bf16 (Uint16Array) or int8 (+ per-row scales and row sums). */
  quantize(data: Float32Array, dim: number, format: 'bf16' | 'i8'): { data: Uint16Array | Int8Array; scales?: Float32Array };

  // maxsim_wrap.cc: CUDA (native/kernels/cuda)
  cudaInfo(): NativeCudaInfo;
  cudaUpload(docs: NativeMultiVectors, store: 'f32' | 'bf16', deviceId: number): Promise<NativeCudaDocs>;
  cudaMaxSim(docs: NativeCudaDocs, queries: Float32Array, queryOffsets: Uint32Array): Promise<Float32Array>;
  cudaDocsInfo(docs: NativeCudaDocs): { count: number; dim: number; rows: number; format: 'f32' | 'bf16'; device: number; bytes: number };
  cudaDispose(docs: NativeCudaDocs): void;

  // sparse_wrap.cc
  /** `isa` forces a tier, the AVX-512 table kernel ('avx512-gather') or the sorted merge ('merge'). */
  lexicalScoresSync(queryIds: Uint32Array, queryWeights: Float32Array, offsets: Uint32Array, ids: Uint32Array,
                    weights: Float32Array, vocabSize: number, threads: number, isa?: IsaTierName | 'avx512-gather' | 'merge'): Float32Array;
  lexicalScores(queryIds: Uint32Array, queryWeights: Float32Array, offsets: Uint32Array, ids: Uint32Array,
                weights: Float32Array, vocabSize: number, threads: number): Promise<Float32Array>;
  HeadTrainerNative: new (cachePath: string, hidden: number, ids: Int32Array, offsets: Uint32Array, dim: number,
    params: Float32Array, threads: number) => NativeHeadTrainer;
  m3Loss(dense: Float32Array, lex: Float32Array, colbert: Float32Array, target: Int32Array, queries: number, passages: number,
    options: Record<string, number | boolean>): NativeM3Loss;
}

/**
 * The output kinds NativeEncoder.encode takes, by the names of the addon's table
 * (native/core/outputs.h); 'hidden' is last_hidden_state, for fine-tuning the heads.
 */
export const NATIVE_OUTPUT_KINDS = ['dense', 'sparse', 'colbert', 'hidden'] as const;
export type NativeOutputKind = (typeof NATIVE_OUTPUT_KINDS)[number];

/** The execution providers the addon registers (native/core/providers.cc): the `device` names. */
export const DEVICES = ['cpu', 'cuda'] as const;
export type Device = (typeof DEVICES)[number];

/** The package root (dist/lib/addon/native.js -> ../../..). */
export const PACKAGE_ROOT = path.resolve(__dirname, '..', '..', '..');

let cached: NativeModule | undefined;

/**
 * Loads build/Release/bge_m3.node once, with a checklist of fixes when that fails. BGE_M3_ADDON
 * names another build (relative to the working directory); when it is set, only that one is
 * tried, so a copy that fails to load is never silently replaced by the default one.
 */
export function native(): NativeModule {
  if (cached) return cached;
  const chosen = process.env.BGE_M3_ADDON;
  const candidates = chosen ? [path.resolve(chosen)] : [
    path.join(PACKAGE_ROOT, 'build', 'Release', 'bge_m3.node'),
    path.join(PACKAGE_ROOT, 'build', 'Debug', 'bge_m3.node'),
  ];
  const errors: string[] = [];
  for (const file of candidates) {
    try {
      cached = require(file) as NativeModule;
      return cached;
    } catch (err) {
      errors.push(`  ${file}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new M3Error('ERR_NATIVE', [
    'The bge-m3 native addon could not be loaded. Tried:',
    ...errors,
    'Possible fixes:',
    '  - build it: npm install (or npm run build:native) in the package folder; it needs cmake and g++',
    '  - if libonnxruntime.so.1 is not found: reinstall onnxruntime-node, or rebuild with ORT_ROOT set',
    chosen ? '  - BGE_M3_ADDON names the build above; unset it to load the package\'s own build'
      : '  - set BGE_M3_ADDON to the path of a bge_m3.node built for this platform',
  ].join('\n'));
}

/** The loss of one group and its terms per mode (means over its queries). */
export interface NativeLossTerms {
  loss: number;
  dense: number;
  lex: number;
  colbert: number;
  inter: number;
  distillDense: number;
  distillLex: number;
  distillColbert: number;
}

/** What the native m3Loss returns. */
export interface NativeM3Loss extends NativeLossTerms {
  l: number;
  lDistill: number;
  gradDense: Float64Array;
  gradLex: Float64Array;
  gradColbert: Float64Array;
}

/** The native head trainer (native/train/head_trainer.h); parameters flat, HeadLayout order. */
export interface NativeHeadTrainer {
  step(queries: Int32Array, passages: Int32Array, target: Int32Array, options: Record<string, number | boolean>):
    Promise<Omit<NativeM3Loss, 'gradDense' | 'gradLex' | 'gradColbert'> & { gradNorm: number; grad?: Float32Array }>;
  state(): { params: Float32Array; m: Float32Array; v: Float32Array; t: number };
  setState(params: Float32Array, m: Float32Array, v: Float32Array, t: number): void;
  /** Releases the mapped cache and buffers; later calls fail with ERR_DISPOSED. */
  close(): void;
}

/** Whether this build has the CUDA kernels and which devices they can use. */
export interface NativeCudaInfo {
  built: boolean;
  devices: number;
  /** Why there is no usable device ('' when there is). */
  why: string;
  names: string[];
}

/** An opaque handle to documents resident on a GPU. */
export type NativeCudaDocs = { readonly __cudaDocs: unique symbol };
