/**
 * ColBERT late-interaction scoring (MaxSim) with the native SIMD kernels, and compact storage
 * formats for document vectors. score(q, d) = mean over query vectors of the best inner product
 * with any document vector (FlagEmbedding's ColBERT score).
 */
import { M3Error, fromNative, inputError } from '../base/errors';
import { checkChoice, checkInteger, checkOptions, optionalInteger } from '../base/validate';
import { native, type IsaTierName, type NativeCudaDocs, type NativeCudaInfo, type NativeMultiVectors } from '../addon/native';
import type { MultiVectors } from './vectors';

/** Storage formats: fp32, bfloat16 (round-to-nearest-even) and int8 with a per-row scale. */
export type VectorFormat = 'f32' | 'bf16' | 'i8';

/**
 * Document vectors in a compact format, from {@link quantize}. Error bounds for L2-normalised
 * vectors: bf16 changes each inner product (hence each MaxSim score) by at most 3.92e-3; int8 by
 * at most sqrt(dim) * (s_q + s_d) / 2 + dim * s_q * s_d / 4, where s = (largest |element| of the
 * row) / 127 (about 0.02 for 1024-d rows whose largest element is 0.1).
 */
export interface QuantizedMultiVectors {
  format: 'bf16' | 'i8';
  dim: number;
  offsets: Uint32Array;
  /** bf16 bits (Uint16Array) or int8 values (Int8Array), rows * dim. */
  data: Uint16Array | Int8Array;
  /** i8 only: per-row scale (value = scale * int8). */
  scales?: Float32Array;
}

/** Documents as {@link maxSim} takes them: encode()'s `colbert` output, or quantized. */
export type MaxSimDocuments = MultiVectors | QuantizedMultiVectors;

/** Options of {@link maxSim} and {@link maxSimSync}. */
export interface MaxSimOptions {
  /** Vector width (1024 for BGE-M3). Required for fp32 documents; quantized ones carry it. */
  dim?: number;
  /** Threads to split the documents over (default 1). Results do not depend on it. */
  threads?: number;
  /** The documents' storage format; checked against the data's type when given. */
  format?: VectorFormat;
}

/** A query is one text's vectors (Float32Array of rows * dim) or many texts' ({ offsets, data }). */
export type MaxSimQuery = Float32Array | MultiVectors;

/** Widest vectors accepted (BGE-M3's are 1024). */
const MAX_DIM = 65536;
/** Most threads one call may use. */
const MAX_THREADS = 256;

const FORMAT_OF_DATA = (data: unknown): VectorFormat | undefined =>
  data instanceof Float32Array ? 'f32' : data instanceof Uint16Array ? 'bf16' : data instanceof Int8Array ? 'i8' : undefined;

interface PreparedCall {
  queries: Float32Array;
  queryOffsets: Uint32Array;
  docs: NativeMultiVectors;
  threads: number;
  single: boolean;
}

/** Documents (host arrays) in the native layout, checked. */
function nativeDocs(docs: MaxSimDocuments, options: Pick<MaxSimOptions, 'dim' | 'format'>): NativeMultiVectors {
  if (!docs || typeof docs !== 'object' || !(docs.offsets instanceof Uint32Array)) {
    throw inputError('{ offsets: Uint32Array, data } (encode().colbert or quantize() output), or DeviceMultiVectors', 'docs', docs);
  }
  const format = FORMAT_OF_DATA(docs.data);
  if (!format) throw inputError('a Float32Array, Uint16Array (bf16) or Int8Array (i8)', 'docs.data', docs.data);
  if (options.format !== undefined && options.format !== format) {
    throw new M3Error('ERR_INPUT', `options.format is '${options.format}' but docs.data is a ${docs.data.constructor.name} ('${format}'); ` +
      "convert the documents with quantize() first");
  }
  const carried = 'dim' in docs ? (docs as QuantizedMultiVectors).dim : undefined;
  const dim = checkInteger(options.dim ?? carried, 'dim', 1, MAX_DIM);
  if (carried !== undefined && carried !== dim) {
    throw new M3Error('ERR_INPUT', `options.dim ${dim} differs from the documents' dim ${carried}`);
  }
  if (docs.offsets.length < 1) throw new M3Error('ERR_INPUT', 'docs.offsets needs count + 1 entries (at least [0])');
  const rows = docs.offsets[docs.offsets.length - 1];
  if (docs.data.length !== rows * dim) {
    throw new M3Error('ERR_INPUT', `docs.data has ${docs.data.length} values but docs.offsets end at ${rows} rows of dim ${dim} (${rows * dim} values)`);
  }
  const out: NativeMultiVectors = { format, dim, offsets: docs.offsets, data: docs.data };
  if (format === 'i8') {
    const q = docs as QuantizedMultiVectors;
    if (!(q.scales instanceof Float32Array)) throw inputError('scales: Float32Array (from quantize())', 'i8 docs', docs);
    out.scales = q.scales;
  }
  return out;
}

/** Queries as one Float32Array of rows and their offsets. */
function nativeQueries(query: MaxSimQuery, dim: number): { queries: Float32Array; queryOffsets: Uint32Array; single: boolean } {
  let queries: Float32Array;
  let queryOffsets: Uint32Array;
  let single = false;
  if (query instanceof Float32Array) {
    if (query.length % dim !== 0) throw new M3Error('ERR_INPUT', `query has ${query.length} floats, not a multiple of dim ${dim}`);
    queries = query;
    queryOffsets = Uint32Array.of(0, query.length / dim);
    single = true;
  } else if (query && query.data instanceof Float32Array && query.offsets instanceof Uint32Array) {
    const rowsQ = query.offsets[query.offsets.length - 1] ?? 0;
    if (query.offsets.length < 1 || query.data.length !== rowsQ * dim) {
      throw new M3Error('ERR_INPUT', `query.data has ${query.data.length} values but query.offsets end at ${rowsQ} rows of dim ${dim}`);
    }
    queries = query.data;
    queryOffsets = query.offsets;
  } else {
    throw inputError('a Float32Array (one query) or { offsets, data } (many)', 'query', query);
  }
  return { queries, queryOffsets, single };
}

function prepare(query: MaxSimQuery, docs: MaxSimDocuments, options: MaxSimOptions): PreparedCall {
  checkOptions(options);
  const docsNative = nativeDocs(docs, options);
  return { ...nativeQueries(query, docsNative.dim), docs: docsNative, threads: optionalInteger(options.threads, 'threads', 1, 1, MAX_THREADS) };
}

/**
 * MaxSim of a query against every document, off the JS thread. With one query (a Float32Array)
 * the result has one score per document; with many ({ offsets, data }) it is row-major
 * [queries x documents]. An empty document or query scores 0. Do not modify the arrays until
 * the promise settles.
 */
export async function maxSim(query: MaxSimQuery, docs: MaxSimDocuments | DeviceMultiVectors, options: MaxSimOptions = {}): Promise<Float32Array> {
  const callerStack = new Error().stack;
  if (docs instanceof DeviceMultiVectors) return docs.maxSim(query, callerStack);
  const call = prepare(query, docs, options);
  try {
    return await native().maxSim(call.queries, call.queryOffsets, call.docs, call.threads);
  } catch (err) {
    throw fromNative(err, callerStack);
  }
}

/** {@link maxSim} on the calling thread. `isa` forces a lower kernel tier (tests, benchmarks). */
export function maxSimSync(query: MaxSimQuery, docs: MaxSimDocuments, options: MaxSimOptions & { isa?: IsaTierName } = {}): Float32Array {
  if ((docs as unknown) instanceof DeviceMultiVectors) {
    throw new M3Error('ERR_INPUT', 'maxSimSync scores host documents; GPU documents (DeviceMultiVectors) are scored with maxSim, which is async');
  }
  const call = prepare(query, docs, options);
  try {
    return native().maxSimSync(call.queries, call.queryOffsets, call.docs, call.threads, options.isa);
  } catch (err) {
    throw fromNative(err);
  }
}

/** Converts ColBERT vectors (encode()'s `colbert`) to bf16 or int8 storage for {@link maxSim}. */
export function quantize(vectors: MultiVectors, dim: number, format: 'bf16' | 'i8'): QuantizedMultiVectors {
  if (!vectors || !(vectors.data instanceof Float32Array) || !(vectors.offsets instanceof Uint32Array)) {
    throw inputError('{ offsets: Uint32Array, data: Float32Array }', 'vectors', vectors);
  }
  checkInteger(dim, 'dim', 1, MAX_DIM);
  checkChoice(format, 'format', ['bf16', 'i8'] as const);
  const rows = vectors.offsets[vectors.offsets.length - 1] ?? 0;
  if (vectors.data.length !== rows * dim) {
    throw new M3Error('ERR_INPUT', `vectors.data has ${vectors.data.length} values but offsets end at ${rows} rows of dim ${dim}`);
  }
  try {
    const q = native().quantize(vectors.data, dim, format);
    return { format, dim, offsets: vectors.offsets, data: q.data, scales: q.scales };
  } catch (err) {
    throw fromNative(err);
  }
}

/** Whether this build has the CUDA MaxSim kernels, and the devices it can use. */
export function cudaInfo(): NativeCudaInfo {
  return native().cudaInfo();
}

/** Options of {@link DeviceMultiVectors.upload}. */
export interface DeviceUploadOptions {
  /** Only 'cuda' (default). */
  device?: 'cuda';
  /** CUDA device ordinal (default 0). */
  deviceId?: number;
  /** Storage on the device: 'bf16' (default: tensor cores, half the memory) or 'f32'. */
  format?: 'bf16' | 'f32';
  /** Vector width, for fp32 documents (quantized ones carry it). */
  dim?: number;
}

/**
 * Documents uploaded once to a GPU and kept there, scored by {@link maxSim} like host documents
 * (the same scores: bf16 rounds the query as the CPU bf16 kernels do). Needs a build with the
 * CUDA kernels (CMake found a CUDA toolkit) and an NVIDIA GPU of compute capability 8.0 or newer
 * for bf16; otherwise upload rejects with ERR_DEVICE saying which is missing.
 */
export class DeviceMultiVectors {
  private constructor(private handle: NativeCudaDocs | undefined, readonly count: number, readonly dim: number,
    readonly rows: number, readonly format: 'f32' | 'bf16', readonly deviceId: number, readonly bytes: number) {}

  static async upload(docs: MaxSimDocuments, options: DeviceUploadOptions = {}): Promise<DeviceMultiVectors> {
    const callerStack = new Error().stack;
    checkOptions(options);
    checkChoice(options.device, 'device', ['cuda'] as const, 'cuda');
    const deviceId = optionalInteger(options.deviceId, 'deviceId', 0, 0, 1024);
    const format = checkChoice(options.format, 'format', ['bf16', 'f32'] as const, 'bf16');
    const host = nativeDocs(docs, { dim: options.dim });
    if (host.format === 'i8') {
      throw new M3Error('ERR_INPUT', 'int8 documents have no GPU kernel; upload the fp32 (or bf16) vectors, stored as bf16 or f32');
    }
    try {
      const handle = await native().cudaUpload(host, format, deviceId);
      const i = native().cudaDocsInfo(handle);
      return new DeviceMultiVectors(handle, i.count, i.dim, i.rows, i.format, i.device, i.bytes);
    } catch (err) {
      throw fromNative(err, callerStack);
    }
  }

  /** @internal maxSim's GPU path. */
  async maxSim(query: MaxSimQuery, callerStack?: string): Promise<Float32Array> {
    if (!this.handle) throw new M3Error('ERR_DISPOSED', 'These GPU documents have been disposed; upload them again.');
    const { queries, queryOffsets } = nativeQueries(query, this.dim);
    try {
      return await native().cudaMaxSim(this.handle, queries, queryOffsets);
    } catch (err) {
      throw fromNative(err, callerStack);
    }
  }

  /** Frees the device memory (scoring calls in flight finish first). Idempotent. */
  dispose(): void {
    if (this.handle) native().cudaDispose(this.handle);
    this.handle = undefined;
  }
}
