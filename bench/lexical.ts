/**
 * Lexical (sparse) scoring, one query against many documents: ns per document for the native
 * kernels (each tier's, and the AVX-512 table kernel alone; 1 and 2 threads) against a JS Map-based loop, a JS sorted-merge loop
 * and the native sorted merge, all on the same data in the same run. Also one pair (query vs one
 * document): the JS merge against the native pair call, which decides lexicalScore's path.
 * Not a test: it writes JSON to bench/results/ and prints a table.
 *
 *   npm run bench:lexical -- [--runs 7] [--docs 100000] [--doc-ids 100] [--query-ids 40]
 *
 * Ids follow a Zipf law over a 250,002-id vocabulary (id = frequency rank, as in a SentencePiece
 * vocabulary ordered by score), so common tokens collide as they do in real text.
 */
import { BGE_M3_VOCAB_SIZE, capabilities, lexicalScoresSync, lexicalScores, runtimeInfo } from '../lib';
import type { LexicalKernel, SparseRow, SparseVectors } from '../lib';
import { native, type IsaTierName } from '../lib/addon/native';
import { mulberry32 } from '../lib/base/rng';
import { machineInfo, median, parseFlags, timeInterleaved, writeResult, type TimedCase } from './common';

/** Draws ids by rank with P(rank r) proportional to 1 / (r + 1)^exponent. */
function zipfSampler(vocab: number, exponent: number, random: () => number): () => number {
  const cdf = new Float64Array(vocab);
  let total = 0;
  for (let r = 0; r < vocab; r++) cdf[r] = total += 1 / Math.pow(r + 1, exponent);
  return () => {
    const u = random() * total;
    let lo = 0;
    let hi = vocab - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

/** A row of `n` distinct ids (ascending) with weights in (0, 0.3], like BGE-M3's ReLU'd weights. */
function makeRow(n: number, draw: () => number, random: () => number): { ids: number[]; weights: number[] } {
  const seen = new Set<number>();
  while (seen.size < n) seen.add(draw());
  const ids = [...seen].sort((a, b) => a - b);
  return { ids, weights: ids.map(() => 0.3 * (1 - random())) };
}

function makeData(docs: number, docIds: number, queryIds: number): { query: SparseRow; docs: SparseVectors } {
  const random = mulberry32(20240611);
  const draw = zipfSampler(BGE_M3_VOCAB_SIZE, 1.0, random);
  const q = makeRow(queryIds, draw, random);
  const offsets = new Uint32Array(docs + 1);
  const ids: number[] = [];
  const weights: number[] = [];
  for (let d = 0; d < docs; d++) {
    // Lengths spread over +-30% around the mean.
    const n = Math.max(1, Math.round(docIds * (0.7 + 0.6 * random())));
    const row = makeRow(n, draw, random);
    ids.push(...row.ids);
    weights.push(...row.weights);
    offsets[d + 1] = ids.length;
  }
  return {
    query: { ids: Uint32Array.from(q.ids), weights: Float32Array.from(q.weights) },
    docs: { offsets, ids: Uint32Array.from(ids), weights: Float32Array.from(weights) },
  };
}

/** The baseline most JS code would write: the query in a Map, one lookup per document id. */
function jsMap(query: SparseRow, docs: SparseVectors): Float32Array {
  const table = new Map<number, number>();
  for (let k = 0; k < query.ids.length; k++) table.set(query.ids[k], query.weights[k]);
  const { offsets, ids, weights } = docs;
  const out = new Float32Array(offsets.length - 1);
  for (let d = 0; d < out.length; d++) {
    let sum = 0;
    for (let j = offsets[d]; j < offsets[d + 1]; j++) {
      const w = table.get(ids[j]);
      if (w !== undefined) sum += w * weights[j];
    }
    out[d] = sum;
  }
  return out;
}

/** A sorted merge of the query with each document, in JS. */
function jsMerge(query: SparseRow, docs: SparseVectors): Float32Array {
  const { offsets, ids, weights } = docs;
  const qi = query.ids;
  const qw = query.weights;
  const out = new Float32Array(offsets.length - 1);
  for (let d = 0; d < out.length; d++) {
    let i = 0;
    let j = offsets[d];
    const end = offsets[d + 1];
    let sum = 0;
    while (i < qi.length && j < end) {
      const x = qi[i];
      const y = ids[j];
      if (x === y) sum += qw[i++] * weights[j++];
      else if (x < y) i++;
      else j++;
    }
    out[d] = sum;
  }
  return out;
}

/** A pair merge exactly like lib/scoring/scores.ts's loop (no validation), for the pair comparison. */
function jsPair(a: SparseRow, b: SparseRow): number {
  let i = 0;
  let j = 0;
  let sum = 0;
  while (i < a.ids.length && j < b.ids.length) {
    const x = a.ids[i];
    const y = b.ids[j];
    if (x === y) sum += a.weights[i++] * b.weights[j++];
    else if (x < y) i++;
    else j++;
  }
  return sum;
}

interface Row {
  method: string;
  threads: number;
  nsPerDocMedian: number;
  nsPerDocBest: number;
  runs: number;
  maxAbsDiff: number;
}

/** Rows for cases timed together (see timeInterleaved), each checked against `reference`. */
async function measureTogether(cases: Array<TimedCase<Float32Array> & { threads: number }>, runs: number, count: number,
  reference: Float32Array): Promise<Row[]> {
  const { seconds, first } = await timeInterleaved(cases, runs);
  return cases.map((c, i) => {
    let maxAbsDiff = 0;
    for (let d = 0; d < count; d++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(first[i][d] - reference[d]));
    const ns = seconds[i].map((s) => (s * 1e9) / count);
    const row = { method: c.name, threads: c.threads, nsPerDocMedian: median(ns), nsPerDocBest: Math.min(...ns), runs, maxAbsDiff };
    console.log(`${c.name.padEnd(26)} threads ${c.threads}  ${row.nsPerDocMedian.toFixed(1).padStart(8)} ns/doc median  ` +
      `${row.nsPerDocBest.toFixed(1).padStart(8)} best  max |diff| ${maxAbsDiff.toExponential(1)}`);
    return row;
  });
}

/** ns per pair for `pairs` (query, document) pairs through `fn`, median and best of `runs`. */
function measurePairs(runs: number, pairs: SparseRow[], query: SparseRow, fn: (a: SparseRow, b: SparseRow) => number): { median: number; best: number } {
  let sink = 0;
  for (const p of pairs) sink += fn(query, p);
  const times: number[] = [];
  for (let r = 0; r < runs; r++) {
    const start = process.hrtime.bigint();
    for (const p of pairs) sink += fn(query, p);
    times.push(Number(process.hrtime.bigint() - start) / pairs.length);
  }
  if (Number.isNaN(sink)) throw new Error('unreachable');
  return { median: median(times), best: Math.min(...times) };
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), { runs: '7', docs: '100000', 'doc-ids': '100', 'query-ids': '40' });
  const runs = Math.max(5, Number(flags.runs));
  const count = Number(flags.docs);
  const { query, docs } = makeData(count, Number(flags['doc-ids']), Number(flags['query-ids']));
  console.log(`${count} documents, ${(docs.ids.length / count).toFixed(1)} ids each on average; query ${query.ids.length} ids; ` +
    `vocabulary ${BGE_M3_VOCAB_SIZE}; ${runs} runs`);
  const reference = lexicalScoresSync(query, docs, { isa: 'merge' });
  const caps = capabilities();
  const detected = caps.detected;
  // Mirrors the native dispatch (sparse_dot.cc): AVX-512 intersects queries of at most 64 ids
  // where VP2INTERSECT runs natively, which the AVX512_BF16 bit tells apart from Tiger Lake's.
  const intersect = detected === 'avx512' && caps.features.avx512vp2intersect && caps.features.avx512bf16 && query.ids.length <= 64;
  const order: IsaTierName[] = ['serial', 'avx2', 'avx512'];
  const kernels: Array<[string, LexicalKernel]> = order.slice(0, order.indexOf(detected) + 1).reverse()
    .map((isa) => [isa === 'avx512' && intersect ? 'native avx512 (intersect)' : `native ${isa} (table)`, isa]);
  if (intersect) kernels.splice(1, 0, ['native avx512 (table)', 'avx512-gather']);
  // Every method runs in the same rounds, so the ratios below compare like with like.
  const cases: Array<TimedCase<Float32Array> & { threads: number }> = [];
  for (const threads of [1, 2]) {
    for (const [label, isa] of kernels) cases.push({ name: label, threads, fn: () => lexicalScoresSync(query, docs, { threads, isa }) });
    cases.push({ name: 'native default, async', threads, fn: () => lexicalScores(query, docs, { threads }) });
    cases.push({ name: 'native sorted merge', threads, fn: () => lexicalScoresSync(query, docs, { threads, isa: 'merge' }) });
  }
  cases.push({ name: 'JS Map loop', threads: 1, fn: () => jsMap(query, docs) });
  cases.push({ name: 'JS sorted merge', threads: 1, fn: () => jsMerge(query, docs) });
  const rows = await measureTogether(cases, runs, count, reference);

  const find = (method: string, threads: number) => rows.find((r) => r.method === method && r.threads === threads)!;
  const fastest = kernels[0][0];
  const ratiosOf = (key: 'nsPerDocMedian' | 'nsPerDocBest') => {
    const one = find(fastest, 1)[key];
    return {
      vsJsMap: find('JS Map loop', 1)[key] / one,
      vsJsMerge: find('JS sorted merge', 1)[key] / one,
      vsNativeMerge: find('native sorted merge', 1)[key] / one,
      twoThreadsVsOne: one / find(fastest, 2)[key],
    };
  };
  const ratios = { kernel: fastest, ...ratiosOf('nsPerDocMedian'), best: ratiosOf('nsPerDocBest') };
  console.log(`ratios (1 thread, ${fastest}): ${ratios.vsJsMap.toFixed(1)}x JS Map, ` +
    `${ratios.vsJsMerge.toFixed(1)}x JS merge, ${ratios.vsNativeMerge.toFixed(1)}x native merge; ` +
    `2 threads ${ratios.twoThreadsVsOne.toFixed(2)}x 1 thread (medians); best runs: ${ratios.best.vsJsMap.toFixed(1)}x JS Map, ` +
    `2 threads ${ratios.best.twoThreadsVsOne.toFixed(2)}x`);

  // One pair at a time: lexicalScore's choice between the JS merge and a native call.
  const pairs: SparseRow[] = [];
  for (let d = 0; d < Math.min(count, 20000); d++) {
    pairs.push({ ids: docs.ids.subarray(docs.offsets[d], docs.offsets[d + 1]), weights: docs.weights.subarray(docs.offsets[d], docs.offsets[d + 1]) });
  }
  const pairJs = measurePairs(runs, pairs, query, jsPair);
  const addon = native();
  const pairNative = measurePairs(runs, pairs, query, (a, b) => addon.testing.lexicalScorePair(a.ids, a.weights, b.ids, b.weights));
  console.log(`one pair: JS merge ${pairJs.median.toFixed(1)} ns, native call ${pairNative.median.toFixed(1)} ns (median)`);

  const file = writeResult('lexical', {
    benchmark: 'lexical', machine: machineInfo(), cpu: caps, onnxruntime: runtimeInfo().ortVersion,
    data: { documents: count, meanDocIds: docs.ids.length / count, queryIds: query.ids.length, vocabSize: BGE_M3_VOCAB_SIZE, zipfExponent: 1.0 },
    rows, ratios,
    targets: { nsPerDocOneThread: 100, vsJsMap: 30, vsSortedMerge: 5 },
    pair: { jsMergeNsMedian: pairJs.median, jsMergeNsBest: pairJs.best, nativeNsMedian: pairNative.median, nativeNsBest: pairNative.best },
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
