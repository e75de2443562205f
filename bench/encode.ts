/**
 * Encode throughput (tokens/s) on the generated benchmark model (random weights, 6 layers,
 * hidden 384, the BAAI/bge-m3 snapshot layout), with the native heads' share of the time.
 * Not a test: it writes JSON to bench/results/ and prints a table.
 *
 *   scripts/gen-bench-model.sh            # once: writes .cache/bench-model
 *   npm run bench:encode -- [--runs 7] [--texts 256] [--model DIR] [--batch 32]
 *   npm run bench:encode -- --device cuda [--device-id 0] [--batch 64] [--attainable TOKENS_PER_S]
 *
 * Each configuration runs `runs` times (after one warm-up); the median and best are reported,
 * for 1 and 2 ONNX Runtime threads separately on the CPU, once on a GPU. The model's useful
 * FLOP rate comes with each row (bench/common.ts encoderFlops); --attainable (tokens/s, e.g.
 * scripts/gpu_peers.py's PyTorch figure for the same model shape and lengths) adds the share of it
 * reached.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, capabilities, runtimeInfo } from '../lib';
import { mulberry32 } from '../lib/base/rng';
import { type EncoderShape, encoderFlops, machineInfo, median, parseFlags, writeResult } from './common';

interface Row {
  device: string;
  threads: number | null;  // ONNX Runtime's intra-op threads (CPU); null on a GPU
  batch: number;
  outputs: string;
  texts: number;
  tokens: number;
  runs: number;
  tokensPerSecMedian: number;
  tokensPerSecBest: number;
  headsSharePercentMedian: number;
  headsMsMedian: number;
  sessionMsMedian: number;
  /** Useful model TFLOP/s at the median rate (encoderFlops); null without config.json's dimensions. */
  tflopsMedian: number | null;
  /** Share of --attainable reached at the median rate, when given. */
  attainablePercent?: number;
}

/** Passages of varied length (about 60 to 400 tokens) built from a fixed word list. */
function makeTexts(count: number): string[] {
  const words = ('retrieval dense sparse lexical matching multi vector interaction embedding model supports ' +
    'more than one hundred languages and long documents up to eight thousand tokens the encoder produces ' +
    'three representations from a single forward pass which are combined for hybrid search').split(' ');
  const out: string[] = [];
  const next = mulberry32(12345);
  for (let i = 0; i < count; i++) {
    const n = 40 + (i * 37) % 260;
    const parts: string[] = [];
    for (let k = 0; k < n; k++) {
      parts.push(words[Math.floor(next() * words.length)]);
    }
    out.push(parts.join(' '));
  }
  return out;
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), {
    runs: '7', texts: '256', model: '.cache/bench-model', device: 'cpu', 'device-id': '0', batch: '', attainable: '',
  });
  const device = flags.device;
  if (device !== 'cpu' && device !== 'cuda') throw new Error(`--device must be cpu or cuda, got ${device}`);
  const batch = Number(flags.batch || (device === 'cuda' ? 64 : 32));
  const attainable = flags.attainable ? Number(flags.attainable) : undefined;
  for (const [name, v] of Object.entries({ batch, 'device-id': Number(flags['device-id']) }))
    if (!Number.isInteger(v) || v < 0 || (name === 'batch' && v < 1)) throw new Error(`--${name} must be a ${name === 'batch' ? 'positive' : 'non-negative'} integer`);
  if (attainable !== undefined && !(attainable > 0)) throw new Error('--attainable must be a positive rate in tokens/s');
  const dir = path.resolve(flags.model);
  if (!fs.existsSync(path.join(dir, 'onnx', 'model.onnx'))) {
    console.error(`No benchmark model in ${dir}. Generate it with scripts/gen-bench-model.sh ` +
      '(needs python3-torch, python3-onnx, python3-numpy), or pass --model DIR (e.g. a real BAAI/bge-m3 snapshot).');
    process.exit(2);
  }
  const runs = Math.max(5, Number(flags.runs));
  const texts = makeTexts(Number(flags.texts));
  const rows: Row[] = [];
  const outputSets: Array<[string, { dense: boolean; sparse: boolean; colbert: boolean }]> = [
    ['dense', { dense: true, sparse: false, colbert: false }],
    ['dense+sparse+colbert', { dense: true, sparse: true, colbert: true }],
  ];
  const modelInfo = await describeModel(dir);
  for (const threads of device === 'cuda' ? [undefined] : [1, 2]) {
    let model: BGEM3;
    try {
      model = await BGEM3.load(dir, { threads, device, deviceId: Number(flags['device-id']) });
    } catch (err) {
      // ERR_DEVICE names the provider libraries looked for and how to get them.
      console.error(`cannot load the model on ${device}: ${(err as Error).message}`);
      process.exit(2);
    }
    try {
      for (const [label, outputs] of outputSets) {
        await model.encode(texts.slice(0, 16), outputs);
        const rates: number[] = [];
        const shares: number[] = [];
        const heads: number[] = [];
        const sessions: number[] = [];
        const tokenized = await model.tokenize(texts);
        const tokens = tokenized.offsets[texts.length];
        const lengths = texts.map((_, i) => tokenized.offsets[i + 1] - tokenized.offsets[i]);
        // A model without config.json's dimensions (a baked export) gets no FLOP rate.
        const shape = modelInfo as Partial<EncoderShape>;
        const flops = shape.num_hidden_layers && shape.hidden_size && shape.intermediate_size
          ? encoderFlops(shape as EncoderShape, lengths) : null;
        for (let r = 0; r < runs; r++) {
          const start = performance.now();
          const out = await model.encode(texts, { ...outputs, batchSize: batch });
          const ms = performance.now() - start;
          // Real (unpadded) tokens: what a user's texts cost.
          rates.push(tokens / (ms / 1000));
          shares.push((100 * out.stats!.headsMs) / ms);
          heads.push(out.stats!.headsMs);
          sessions.push(out.stats!.sessionMs);
        }
        const rate = median(rates);
        const row: Row = {
          device, threads: threads ?? null, batch, outputs: label, texts: texts.length, tokens, runs,
          tokensPerSecMedian: rate, tokensPerSecBest: Math.max(...rates),
          headsSharePercentMedian: median(shares), headsMsMedian: median(heads), sessionMsMedian: median(sessions),
          tflopsMedian: flops === null ? null : (flops * rate) / tokens / 1e12,
          ...(attainable ? { attainablePercent: (100 * rate) / attainable } : {}),
        };
        rows.push(row);
        const where = threads === undefined ? device : `threads ${threads}`;
        console.log(`${where}  ${label.padEnd(22)} ${row.tokensPerSecMedian.toFixed(0).padStart(8)} tok/s median  ` +
          `${row.tokensPerSecBest.toFixed(0).padStart(8)} best  ${row.tflopsMedian === null ? '' : `${row.tflopsMedian.toFixed(3)} TFLOP/s  `}` +
          `heads ${row.headsSharePercentMedian.toFixed(2)}% of encode time` +
          (row.attainablePercent !== undefined ? `  ${row.attainablePercent.toFixed(1)}% of the attainable ${attainable} tok/s` : ''));
      }
    } finally {
      await model.dispose();
    }
  }
  const file = writeResult('encode', {
    benchmark: 'encode', model: dir, modelInfo, machine: machineInfo(), device, attainableTokensPerSec: attainable ?? null,
    onnxruntime: runtimeInfo().ortVersion, cpu: capabilities(), rows,
  });
  console.log(`wrote ${file}`);
}

async function describeModel(dir: string): Promise<Record<string, unknown>> {
  const config = path.join(dir, 'config.json');
  return fs.existsSync(config) ? JSON.parse(fs.readFileSync(config, 'utf8')) : {};
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
