/**
 * One encoder engine on every workload, in this process (the harness starts one process per
 * engine and thread count). Engines:
 *   bge-m3        this package (length-sorted, padding-aware batches; heads in C++)
 *   ort-js        onnxruntime-node used directly from JavaScript the naive way: `tokenizers`,
 *                 fixed batches in the given order padded to the longest, CLS pooling, sparse
 *                 and ColBERT heads in plain JS loops (weights from the .safetensors)
 *   ort-js-careful the same runtime as a careful user writes it: texts sorted by length into
 *                 batches under a token budget (this package's defaults: 32 texts, 16,384
 *                 padded tokens), heads over typed arrays with unrolled dot products
 *   transformers  @huggingface/transformers: its tokenizer and model, CLS pooling (dense only),
 *                 fp32, batches sorted by length
 * The PyTorch peer runs in Python (bench/torch_peer.py). With --outputs, every engine also
 * records what it computed on each workload (bench/agreement.ts), for the harness to compare.
 *
 *   node dist/bench/encode_peers.js --engine ort-js --model DIR --threads 1 [--mode quick|full]
 *        [--runs 5] [--batch-size 32] [--batch-sizes 8,32,128] [--workloads mixed,...] [--texts N] [--out FILE]
 *        [--outputs 1]   (records each workload's outputs in the result, for bench/agreement.ts)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, type EncodeOutput } from '../lib';
import { machineInfo, median, parseFlags, writeResult } from './common';
import { workloads, type Workload } from './workloads';
import { type EngineOutputs, type RecordedOutputs, recordOutputs } from './agreement';

type Outputs = 'dense' | 'all';

interface Engine {
  /**
   * Encodes the texts (truncated to maxLength) and returns the real tokens processed; with
   * `collect`, also every output it computed, in the texts' order.
   */
  encode(texts: string[], maxLength: number, outputs: Outputs, batchSize: number, collect?: boolean): Promise<{ tokens: number; collected?: EngineOutputs }>;
  outputs: Outputs[];
  dispose(): Promise<void>;
  version: string;
}

function packageVersion(name: string): string {
  try {
    return (JSON.parse(fs.readFileSync(require.resolve(`${name}/package.json`), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

async function bgeM3(dir: string, threads: number): Promise<Engine> {
  const model = await BGEM3.load(dir, { threads });
  return {
    outputs: ['dense', 'all'],
    version: packageVersion('../..'),
    async encode(texts, maxLength, outputs, batchSize, collect) {
      const all = outputs === 'all';
      const out: EncodeOutput = await model.encode(texts, { dense: true, sparse: all, colbert: all, maxLength, batchSize });
      if (!collect) return { tokens: out.tokenCount };
      const rows = texts.map((_, i) => out.row(i));
      return {
        tokens: out.tokenCount,
        collected: {
          dense: rows.map((r) => Float32Array.from(r.dense!)),
          ...(all ? {
            sparse: rows.map((r) => new Map(Array.from(r.sparse!.ids, (id, k) => [id, r.sparse!.weights[k]]))),
            colbert: rows.map((r) => Float32Array.from(r.colbert!)),
          } : {}),
        },
      };
    },
    dispose: () => model.dispose(),
  };
}

/** A .safetensors file's F16 / F32 tensors as Float32Arrays. */
function readSafetensors(file: string): Record<string, { shape: number[]; data: Float32Array }> {
  const buf = fs.readFileSync(file);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const raw = buf.subarray(8 + headerLength + t.data_offsets[0], 8 + headerLength + t.data_offsets[1]);
    const n = t.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (t.dtype === 'F32') for (let i = 0; i < n; i++) data[i] = raw.readFloatLE(4 * i);
    else if (t.dtype === 'F16') for (let i = 0; i < n; i++) data[i] = halfToFloat(raw.readUInt16LE(2 * i));
    else throw new Error(`${file}: tensor ${name} has dtype ${t.dtype}`);
    out[name] = { shape: t.shape, data };
  }
  return out;
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

async function ortJs(dir: string, threads: number): Promise<Engine> {
  const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
  const { Tokenizer } = require('tokenizers') as typeof import('tokenizers');
  const session = await ort.InferenceSession.create(path.join(dir, 'onnx', 'model.onnx'), {
    intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
  });
  const tokenizer = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const colbertHead = readSafetensors(path.join(dir, 'colbert_linear.safetensors'));
  const sparseHead = readSafetensors(path.join(dir, 'sparse_linear.safetensors'));
  const cw = colbertHead.weight.data;
  const cb = colbertHead.bias.data;
  const sw = sparseHead.weight.data;
  const sb = sparseHead.bias.data[0];
  const special = new Set([0, 1, 2, 3]);
  return {
    outputs: ['dense', 'all'],
    version: packageVersion('onnxruntime-node'),
    async encode(texts, maxLength, outputs, batchSize, collect) {
      tokenizer.setTruncation(maxLength);
      let tokens = 0;
      const collected: Required<EngineOutputs> = { dense: [], sparse: [], colbert: [] };
      for (let start = 0; start < texts.length; start += batchSize) {
        const batch = texts.slice(start, start + batchSize);
        const encodings = await tokenizer.encodeBatch(batch);
        const idsOf = encodings.map((e) => e.getIds());
        const len = Math.max(...idsOf.map((x) => x.length));
        const ids = new BigInt64Array(batch.length * len).fill(1n);
        const mask = new BigInt64Array(batch.length * len);
        idsOf.forEach((row, b) => row.forEach((id, j) => {
          ids[b * len + j] = BigInt(id);
          mask[b * len + j] = 1n;
        }));
        const out = await session.run({
          input_ids: new ort.Tensor('int64', ids, [batch.length, len]), attention_mask: new ort.Tensor('int64', mask, [batch.length, len]),
        });
        const hidden = out.last_hidden_state.data as Float32Array;
        const h = out.last_hidden_state.dims[2];
        idsOf.forEach((row, b) => {
          tokens += row.length;
          const base = b * len * h;
          // Dense: the normalised <s> vector.
          const dense = hidden.slice(base, base + h);
          let norm = 0;
          for (let k = 0; k < h; k++) norm += dense[k] * dense[k];
          norm = Math.sqrt(norm);
          for (let k = 0; k < h; k++) dense[k] /= norm;
          if (collect) collected.dense.push(dense);
          if (outputs === 'dense') return;
          // Sparse: ReLU(h . w + b) per token, the max per id, special tokens dropped.
          const weights = new Map<number, number>();
          for (let j = 0; j < row.length; j++) {
            if (special.has(row[j])) continue;
            let s = sb;
            for (let k = 0; k < h; k++) s += hidden[base + j * h + k] * sw[k];
            if (s > 0 && s > (weights.get(row[j]) ?? 0)) weights.set(row[j], s);
          }
          // ColBERT: rows after <s> through the linear head, each normalised.
          const dim = cb.length;
          const colbert = new Float32Array((row.length - 1) * dim);
          for (let j = 1; j < row.length; j++) {
            const o = (j - 1) * dim;
            let n2 = 0;
            for (let d = 0; d < dim; d++) {
              let s = cb[d];
              for (let k = 0; k < h; k++) s += cw[d * h + k] * hidden[base + j * h + k];
              colbert[o + d] = s;
              n2 += s * s;
            }
            const inv = 1 / Math.sqrt(n2);
            for (let d = 0; d < dim; d++) colbert[o + d] *= inv;
          }
          if (collect) {
            collected.sparse.push(weights);
            collected.colbert.push(colbert);
          }
        });
      }
      if (!collect) return { tokens };
      return { tokens, collected: outputs === 'all' ? collected : { dense: collected.dense } };
    },
    dispose: () => session.release(),
  };
}

/** The heads over one text's hidden rows (typed arrays, four accumulators per dot product). */
function typedHeads(hidden: Float32Array, base: number, h: number, ids: number[], outputs: Outputs,
  head: { sw: Float32Array; sb: number; cw: Float32Array; cb: Float32Array; special: Set<number> }) {
  const dot = (w: Float32Array, wo: number, x: number) => {
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    let k = 0;
    for (; k + 4 <= h; k += 4) {
      a0 += w[wo + k] * hidden[x + k];
      a1 += w[wo + k + 1] * hidden[x + k + 1];
      a2 += w[wo + k + 2] * hidden[x + k + 2];
      a3 += w[wo + k + 3] * hidden[x + k + 3];
    }
    for (; k < h; k++) a0 += w[wo + k] * hidden[x + k];
    return (a0 + a1) + (a2 + a3);
  };
  const dense = hidden.slice(base, base + h);
  let norm = 0;
  for (let k = 0; k < h; k++) norm += dense[k] * dense[k];
  const inv = 1 / Math.sqrt(norm);
  for (let k = 0; k < h; k++) dense[k] *= inv;
  if (outputs === 'dense') return { dense };
  const sparse = new Map<number, number>();
  for (let j = 0; j < ids.length; j++) {
    if (head.special.has(ids[j])) continue;
    const s = dot(head.sw, 0, base + j * h) + head.sb;
    if (s > 0 && s > (sparse.get(ids[j]) ?? 0)) sparse.set(ids[j], s);
  }
  const dim = head.cb.length;
  const colbert = new Float32Array((ids.length - 1) * dim);
  for (let j = 1; j < ids.length; j++) {
    const o = (j - 1) * dim;
    const x = base + j * h;
    let n2 = 0;
    for (let d = 0; d < dim; d++) {
      const v = dot(head.cw, d * h, x) + head.cb[d];
      colbert[o + d] = v;
      n2 += v * v;
    }
    const r = 1 / Math.sqrt(n2);
    for (let d = 0; d < dim; d++) colbert[o + d] *= r;
  }
  return { dense, sparse, colbert };
}

/** Text indices sorted longest first, cut into batches of at most `batchSize` texts and `budget` padded tokens. */
function lengthBatches(lengths: number[], batchSize: number, budget: number): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b);
  const batches: number[][] = [];
  let current: number[] = [];
  for (const i of order) {
    // Sorted longest first: the batch's padded width is its first text's length.
    const width = current.length ? lengths[current[0]] : lengths[i];
    if (current.length && (current.length >= batchSize || (current.length + 1) * width > budget)) {
      batches.push(current);
      current = [];
    }
    current.push(i);
  }
  if (current.length) batches.push(current);
  return batches;
}

async function ortJsCareful(dir: string, threads: number): Promise<Engine> {
  const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
  const { Tokenizer } = require('tokenizers') as typeof import('tokenizers');
  const session = await ort.InferenceSession.create(path.join(dir, 'onnx', 'model.onnx'), {
    intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
  });
  const tokenizer = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
  const colbertHead = readSafetensors(path.join(dir, 'colbert_linear.safetensors'));
  const sparseHead = readSafetensors(path.join(dir, 'sparse_linear.safetensors'));
  const head = { sw: sparseHead.weight.data, sb: sparseHead.bias.data[0], cw: colbertHead.weight.data, cb: colbertHead.bias.data, special: new Set([0, 1, 2, 3]) };
  return {
    outputs: ['dense', 'all'],
    version: packageVersion('onnxruntime-node'),
    async encode(texts, maxLength, outputs, batchSize, collect) {
      tokenizer.setTruncation(maxLength);
      const idsOf = (await tokenizer.encodeBatch(texts)).map((e) => e.getIds());
      const collected: Required<EngineOutputs> = { dense: new Array(texts.length), sparse: new Array(texts.length), colbert: new Array(texts.length) };
      let tokens = 0;
      for (const batch of lengthBatches(idsOf.map((x) => x.length), batchSize, 16384)) {
        const len = idsOf[batch[0]].length;
        const ids = new BigInt64Array(batch.length * len).fill(1n);
        const mask = new BigInt64Array(batch.length * len);
        batch.forEach((t, b) => {
          const row = idsOf[t];
          for (let j = 0; j < row.length; j++) {
            ids[b * len + j] = BigInt(row[j]);
            mask[b * len + j] = 1n;
          }
        });
        const out = await session.run({
          input_ids: new ort.Tensor('int64', ids, [batch.length, len]), attention_mask: new ort.Tensor('int64', mask, [batch.length, len]),
        });
        const hidden = out.last_hidden_state.data as Float32Array;
        const h = out.last_hidden_state.dims[2];
        batch.forEach((t, b) => {
          tokens += idsOf[t].length;
          const r = typedHeads(hidden, b * len * h, h, idsOf[t], outputs, head);
          if (!collect) return;
          collected.dense[t] = r.dense;
          if (r.sparse) collected.sparse[t] = r.sparse;
          if (r.colbert) collected.colbert[t] = r.colbert;
        });
      }
      if (!collect) return { tokens };
      return { tokens, collected: outputs === 'all' ? collected : { dense: collected.dense } };
    },
    dispose: () => session.release(),
  };
}

async function transformers(dir: string, threads: number): Promise<Engine> {
  const t = require('@huggingface/transformers') as typeof import('@huggingface/transformers');
  t.env.allowRemoteModels = false;
  t.env.localModelPath = `${path.dirname(path.resolve(dir))}/`;
  const name = path.basename(path.resolve(dir));
  // The tokenizer from tokenizer.json, with XLM-R's special tokens (what tokenizer_config.json
  // says in the BAAI snapshot; generated models may not ship that file).
  const tokenizer = new t.XLMRobertaTokenizer(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')), {
    bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', pad_token: '<pad>', cls_token: '<s>', sep_token: '</s>', mask_token: '<mask>',
  });
  const model = await t.AutoModel.from_pretrained(name, {
    dtype: 'fp32', device: 'cpu', use_external_data_format: true,
    session_options: { intraOpNumThreads: threads, interOpNumThreads: 1 },
  } as Parameters<typeof t.AutoModel.from_pretrained>[1]);
  return {
    outputs: ['dense'],
    version: packageVersion('@huggingface/transformers'),
    async encode(texts, maxLength, _outputs, batchSize, collect) {
      let tokens = 0;
      const dense: Float32Array[] = new Array(texts.length);
      // Longest first by characters (its tokenizer runs per batch), so each batch pads little.
      const order = texts.map((_, i) => i).sort((a, b) => texts[b].length - texts[a].length || a - b);
      for (let start = 0; start < texts.length; start += batchSize) {
        const members = order.slice(start, start + batchSize);
        const batch = members.map((i) => texts[i]);
        const inputs = await tokenizer(batch, { padding: true, truncation: true, max_length: maxLength });
        // transformers.js truncates after adding </s> and so drops it; HF's Python tokenizers
        // (and FlagEmbedding) keep it. Put it back so every engine encodes the same ids.
        const ids = inputs.input_ids.data as BigInt64Array;
        const width = inputs.input_ids.dims[1];
        for (let b = 0; b < batch.length; b++) {
          const last = ids[b * width + width - 1];
          if (width === maxLength && last !== 1n && last !== 2n) ids[b * width + width - 1] = 2n;
        }
        const mask = inputs.attention_mask.data as BigInt64Array;
        for (const m of mask) tokens += Number(m);
        const out = await model(inputs);
        // CLS pooling and L2 normalisation, as the feature-extraction pipeline does.
        const cls = out.last_hidden_state.slice(null, 0, null).normalize(2, -1);
        const dim = cls.dims[1];
        if (collect) members.forEach((t, b) => { dense[t] = (cls.data as Float32Array).slice(b * dim, (b + 1) * dim); });
      }
      return collect ? { tokens, collected: { dense } } : { tokens };
    },
    dispose: async () => {
      await model.dispose();
    },
  };
}

const ENGINES: Record<string, (dir: string, threads: number) => Promise<Engine>> = {
  'bge-m3': bgeM3, 'ort-js': ortJs, 'ort-js-careful': ortJsCareful, transformers,
};

function modelShape(dir: string): Record<string, unknown> {
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, number>;
  return { layers: cfg.num_hidden_layers, hidden: cfg.hidden_size, vocab: cfg.vocab_size, positions: cfg.max_position_embeddings };
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), {
    engine: 'bge-m3', model: '.cache/bench-model', threads: '1', mode: 'full', runs: '5', 'batch-size': '32', out: '', workloads: '',
    'batch-sizes': '', texts: '', outputs: '',
  });
  const make = ENGINES[flags.engine];
  if (!make) throw new Error(`unknown engine ${flags.engine}; known: ${Object.keys(ENGINES).join(', ')}`);
  const dir = path.resolve(flags.model);
  const threads = Number(flags.threads);
  const runs = Math.max(1, Number(flags.runs));
  const batchSize = Number(flags['batch-size']);
  const cfg = modelShape(dir);
  const modelMaxLength = Number(cfg.positions) - 2;

  const loadStart = performance.now();
  const engine = await make(dir, threads);
  const loadMs = performance.now() - loadStart;
  const firstStart = performance.now();
  await engine.encode(['the first text after loading'], 32, 'dense', 1);
  const firstResultMs = performance.now() - firstStart;

  const selected = flags.workloads ? flags.workloads.split(',') : undefined;
  const list: Workload[] = workloads(flags.mode === 'quick' ? 'quick' : 'full', modelMaxLength, selected)
    .map((w) => (flags.texts ? { ...w, texts: w.texts.slice(0, Number(flags.texts)) } : w));
  const batchSizes = flags['batch-sizes'] ? flags['batch-sizes'].split(',').map(Number) : [batchSize];
  const rows: Record<string, unknown>[] = [];
  const recorded: Record<string, RecordedOutputs> = {};
  for (const w of list) {
    for (const outputs of engine.outputs) {
      for (const bs of outputs === 'dense' ? batchSizes : [batchSize]) {
        // The warm-up run records the outputs: all of them where the engine computes them.
        const record = bs === batchSize && outputs === engine.outputs[engine.outputs.length - 1];
        const warm = await engine.encode(w.texts, w.maxLength, outputs, bs, record);
        if (record && warm.collected) recorded[w.name] = recordOutputs(warm.collected);
        const seconds: number[] = [];
        for (let r = 0; r < runs; r++) {
          const t = performance.now();
          await engine.encode(w.texts, w.maxLength, outputs, bs);
          seconds.push((performance.now() - t) / 1000);
        }
        const med = median(seconds);
        const best = Math.min(...seconds);
        const row = {
          workload: w.name, maxLength: w.maxLength, texts: w.texts.length, tokens: warm.tokens, outputs, batchSize: bs,
          tokensPerSecMedian: warm.tokens / med, tokensPerSecBest: warm.tokens / best, docsPerSecMedian: w.texts.length / med,
          secondsMedian: med, secondsBest: best, runs,
        };
        rows.push(row);
        console.log(`${flags.engine.padEnd(12)} t${threads} ${w.name.padEnd(11)} ${outputs.padEnd(5)} bs ${String(bs).padStart(3)}  ` +
          `${row.tokensPerSecMedian.toFixed(0).padStart(7)} tok/s median  ${row.tokensPerSecBest.toFixed(0).padStart(7)} best  ${row.docsPerSecMedian.toFixed(1)} docs/s`);
      }
    }
  }
  await engine.dispose();
  const result = {
    benchmark: 'encode-peers', engine: flags.engine, engineVersion: engine.version, threads, mode: flags.mode, model: { dir, ...cfg },
    machine: machineInfo(), loadMs, firstResultMs, peakRssMiB: process.resourceUsage().maxRSS / 1024,
    units: { tokensPerSec: 'real tokens (no padding) per second', docsPerSec: 'texts per second', loadMs: 'ms', firstResultMs: 'ms', peakRssMiB: 'MiB' },
    rows,
    ...(flags.outputs ? { outputs: recorded } : {}),
  };
  if (flags.out) fs.writeFileSync(flags.out, `${JSON.stringify(result, null, 2)}\n`);
  else console.log(`wrote ${writeResult(`encode-${flags.engine}-t${threads}`, result)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
