/**
 * Encode throughput (tokens/s) on the generated benchmark model (random weights, 6 layers,
 * hidden 384, the BAAI/bge-m3 snapshot layout), with the native heads' share of the time.
 * Not a test: it writes JSON to bench/results/ and prints a table.
 *
 *   scripts/gen-bench-model.sh            # once: writes .cache/bench-model
 *   npm run bench:encode -- [--runs 7] [--texts 256] [--model DIR]
 *
 * Each configuration runs `runs` times (after one warm-up); the median and best are reported,
 * for 1 and 2 ONNX Runtime threads separately.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, capabilities, runtimeInfo } from '../lib';
import { machineInfo, median, parseFlags, writeResult } from './common';

interface Row {
  threads: number;
  outputs: string;
  texts: number;
  tokens: number;
  runs: number;
  tokensPerSecMedian: number;
  tokensPerSecBest: number;
  headsSharePercentMedian: number;
  headsMsMedian: number;
  sessionMsMedian: number;
}

/** Passages of varied length (about 60 to 400 tokens) built from a fixed word list. */
function makeTexts(count: number): string[] {
  const words = ('retrieval dense sparse lexical matching multi vector interaction embedding model supports ' +
    'more than one hundred languages and long documents up to eight thousand tokens the encoder produces ' +
    'three representations from a single forward pass which are combined for hybrid search').split(' ');
  const out: string[] = [];
  let seed = 12345;
  for (let i = 0; i < count; i++) {
    const n = 40 + (i * 37) % 260;
    const parts: string[] = [];
    for (let k = 0; k < n; k++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      parts.push(words[seed % words.length]);
    }
    out.push(parts.join(' '));
  }
  return out;
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), { runs: '7', texts: '256', model: '.cache/bench-model' });
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
  for (const threads of [1, 2]) {
    const model = await BGEM3.load(dir, { threads });
    try {
      for (const [label, outputs] of outputSets) {
        await model.encode(texts.slice(0, 16), outputs);
        const rates: number[] = [];
        const shares: number[] = [];
        const heads: number[] = [];
        const sessions: number[] = [];
        const tokenized = await model.tokenize(texts);
        const tokens = tokenized.offsets[texts.length];
        for (let r = 0; r < runs; r++) {
          const start = performance.now();
          const out = await model.encode(texts, { ...outputs, batchSize: 32 });
          const ms = performance.now() - start;
          // Real (unpadded) tokens: what a user's texts cost.
          rates.push(tokens / (ms / 1000));
          shares.push((100 * out.stats!.headsMs) / ms);
          heads.push(out.stats!.headsMs);
          sessions.push(out.stats!.sessionMs);
        }
        const row: Row = {
          threads, outputs: label, texts: texts.length, tokens, runs,
          tokensPerSecMedian: median(rates), tokensPerSecBest: Math.max(...rates),
          headsSharePercentMedian: median(shares), headsMsMedian: median(heads), sessionMsMedian: median(sessions),
        };
        rows.push(row);
        console.log(`threads ${threads}  ${label.padEnd(22)} ${row.tokensPerSecMedian.toFixed(0).padStart(8)} tok/s median  ` +
          `${row.tokensPerSecBest.toFixed(0).padStart(8)} best  heads ${row.headsSharePercentMedian.toFixed(2)}% of encode time`);
      }
    } finally {
      await model.dispose();
    }
  }
  const file = writeResult('encode', {
    benchmark: 'encode', model: dir, modelInfo: await describeModel(dir), machine: machineInfo(),
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
