/**
 * PgStore (PostgreSQL + pgvector, here PGlite in process) against HybridIndex on the same
 * corpus, in the same run: ingest passages/s (database writes and the HNSW build; the vectors
 * are precomputed, so encoding is not timed), search latency p50/p99, and recall@10 of each
 * against HybridIndex's exhaustive top-10 (all three scores, default weights).
 *
 *   npm run bench:store -- [--sizes 20000,100000] [--dim 384] [--colbert-rows 8] [--queries 200]
 *                          [--store pglite:DIR | postgres://...] [--runs 5]
 *
 * The corpus is shaped like BGE-M3 output but synthetic: dense unit vectors around topic centres
 * (queries are perturbed documents, so each has true neighbours), Zipf-like sparse rows of about
 * 60 token ids over 250,002 (queries share some of their document's ids), and a few ColBERT rows
 * per document near its dense vector. PGlite's pgvector is compiled to WebAssembly without SIMD,
 * so its absolute speed is a floor for what a native PostgreSQL server does with the same SQL.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EncodeOutput, HybridIndex, type SearchOptions } from '../lib';
import { mulberry32 } from '../lib/base/rng';
import { PgStore } from '../lib/store/pg_store';
import { ingest } from '../lib/store/ingest';
import { machineInfo, median, parseFlags, writeResult } from './common';

const VOCAB = 250002;

interface Shaped {
  docs: EncodeOutput;
  queries: EncodeOutput;
}

function corpus(seed: number, count: number, nq: number, dim: number, colbertRows: number): Shaped {
  const next = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
  const unit = (v: Float32Array) => {
    let n = 0;
    for (const x of v) n += x * x;
    const inv = 1 / Math.sqrt(n);
    for (let k = 0; k < v.length; k++) v[k] *= inv;
    return v;
  };
  const noisy = (base: Float32Array, cosine: number) => {
    const scale = Math.tan(Math.acos(cosine)) / Math.sqrt(dim);
    return unit(Float32Array.from(base, (x) => x + scale * gauss()));
  };
  const centres = Array.from({ length: Math.max(10, Math.round(count / 100)) }, () => unit(Float32Array.from({ length: dim }, gauss)));
  const sparseRow = (n: number) => {
    const set = new Set<number>();
    while (set.size < n) set.add(4 + Math.floor((VOCAB - 5) * next() ** 3));
    return [...set].sort((a, b) => a - b);
  };
  const make = (dense: Float32Array[], sparse: number[][], rows: number) => {
    const d = new Float32Array(dense.length * dim);
    dense.forEach((r, i) => d.set(r, i * dim));
    const offsets = new Uint32Array(dense.length + 1);
    sparse.forEach((s, i) => (offsets[i + 1] = offsets[i] + s.length));
    const ids = Uint32Array.from(sparse.flat());
    const weights = Float32Array.from(ids, () => 0.05 + 0.3 * next());
    const cOff = Uint32Array.from({ length: dense.length + 1 }, (_, i) => i * rows);
    const c = new Float32Array(dense.length * rows * dim);
    dense.forEach((r, i) => {
      for (let j = 0; j < rows; j++) c.set(noisy(r, 0.8), (i * rows + j) * dim);
    });
    return new EncodeOutput(dense.length, dim, d, { offsets, ids, weights }, rows ? { offsets: cOff, data: c } : undefined);
  };
  const docDense = Array.from({ length: count }, () => noisy(centres[Math.floor(next() * centres.length)], 0.7));
  const docSparse = Array.from({ length: count }, () => sparseRow(30 + Math.floor(next() * 60)));
  const picks = Array.from({ length: nq }, () => Math.floor(next() * count));
  const qDense = picks.map((i) => noisy(docDense[i], 0.85));
  const qSparse = picks.map((i) => [...new Set([...docSparse[i].filter(() => next() < 0.15), ...sparseRow(4)])].sort((a, b) => a - b));
  return { docs: make(docDense, docSparse, colbertRows), queries: make(qDense, qSparse, colbertRows ? 8 : 0) };
}

function slice(out: EncodeOutput, start: number, end: number): EncodeOutput {
  const s = out.sparse!;
  const c = out.colbert;
  return new EncodeOutput(end - start, out.dim, out.dense!.subarray(start * out.dim, end * out.dim), {
    offsets: s.offsets.slice(start, end + 1).map((o) => o - s.offsets[start]),
    ids: s.ids.subarray(s.offsets[start], s.offsets[end]),
    weights: s.weights.subarray(s.offsets[start], s.offsets[end]),
  }, c && {
    offsets: c.offsets.slice(start, end + 1).map((o) => o - c.offsets[start]),
    data: c.data.subarray(c.offsets[start] * out.dim, c.offsets[end] * out.dim),
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** p50 and p99 over the queries of each run; the median and best of those over the runs. */
async function latency(runs: number, nq: number, search: (q: number) => unknown) {
  await search(0);
  const p50: number[] = [];
  const p99: number[] = [];
  for (let r = 0; r < runs; r++) {
    const ms: number[] = [];
    for (let q = 0; q < nq; q++) {
      const t = performance.now();
      await search(q);
      ms.push(performance.now() - t);
    }
    ms.sort((a, b) => a - b);
    p50.push(percentile(ms, 0.5));
    p99.push(percentile(ms, 0.99));
  }
  return { p50Ms: { median: median(p50), best: Math.min(...p50) }, p99Ms: { median: median(p99), best: Math.min(...p99) }, runs };
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), {
    sizes: '20000,100000', dim: '384', 'colbert-rows': '8', queries: '200', store: '', runs: '5', batch: '500',
  });
  const dim = Number(flags.dim);
  const nq = Number(flags.queries);
  const runs = Number(flags.runs);
  const rows: Record<string, unknown>[] = [];
  const log = (r: Record<string, unknown>) => {
    rows.push(r);
    console.log(JSON.stringify(r));
  };
  for (const size of flags.sizes.split(',').filter(Boolean).map(Number)) {
    const { docs, queries } = corpus(size, size, nq, dim, Number(flags['colbert-rows']));
    const ids = Array.from({ length: size }, (_, i) => i);
    const format = docs.colbert ? 'bf16' : false;
    const index = HybridIndex.create({ dim, vocabSize: VOCAB, colbert: format });
    let t = performance.now();
    for (let at = 0; at < size; at += 5000) index.add(ids.slice(at, at + 5000), slice(docs, at, Math.min(size, at + 5000)));
    const indexSeconds = (performance.now() - t) / 1000;
    const truth = Array.from({ length: nq }, (_, q) => index.search(queries.row(q), { k: 10, exhaustive: true }).map((h) => h.id));
    const recall = (hits: Array<Array<{ id: unknown }>>) =>
      hits.reduce((n, h, q) => n + h.filter((x) => truth[q].includes(x.id as number)).length, 0) / (10 * nq);

    const dir = flags.store ? undefined : fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-bench-store-'));
    const url = flags.store || `pglite:${dir}`;
    const table = `bench_${size}`;
    const store = await PgStore.open(url, { dim, vocabSize: VOCAB, colbert: format, table });
    try {
      if ((await store.count()) !== 0) throw new Error(`table ${table} at ${store.url} is not empty; drop it or use another database`);
      // Ingest: batches of precomputed vectors, HNSW indexes built after the load (the default).
      const batch = Number(flags.batch);
      let at = 0;
      t = performance.now();
      const result = await ingest(store, ids.map((id) => ({ id, text: `passage ${id}`, metadata: { shard: id % 10 } })), {
        batchSize: batch,
        encode: async (texts) => {
          const out = slice(docs, at, at + texts.length);
          at += texts.length;
          return out;
        },
      });
      const ingestSeconds = (performance.now() - t) / 1000;
      const sizes = await store.storageBytes();
      log({ documents: size, dim, colbertRowsPerDocument: Number(flags['colbert-rows']), engine: 'HybridIndex (in process)', buildDocsPerSecond: size / indexSeconds });
      log({ documents: size, dim, engine: `PgStore (${store.url.startsWith('pglite:') ? 'PGlite' : 'PostgreSQL'})`, ingestDocsPerSecond: size / ingestSeconds, ingestSeconds, builtIndexes: result.builtIndexes,
        bytesPerDocument: Object.fromEntries(Object.entries(sizes).map(([k, v]) => [k, Math.round(v / size)])) });

      const defaults: SearchOptions = { k: 10 };
      const indexHits = Array.from({ length: nq }, (_, q) => index.search(queries.row(q), defaults));
      log({ documents: size, engine: 'HybridIndex (in process)', search: 'default (200 + 200 candidates)', recallAt10: recall(indexHits),
        ...(await latency(runs, nq, (q) => index.search(queries.row(q), defaults))) });
      for (const [label, extra] of [['', {}], [', ef_search 400', { efSearch: 400 }], [', ColBERT on the best 50', { colbertCandidates: 50 }]] as const) {
        const options = { k: 10, ...extra };
        const storeHits = [];
        for (let q = 0; q < nq; q++) storeHits.push(await store.search(queries.row(q), options));
        log({ documents: size, engine: 'PgStore', search: `default (200 + 200 candidates${label})`,
          recallAt10: recall(storeHits), ...(await latency(Math.min(runs, 3), nq, (q) => store.search(queries.row(q), options))) });
      }
      const filtered = { k: 10, filter: { shard: { in: [1, 2] } } };
      const filteredHits = [];
      for (let q = 0; q < nq; q++) filteredHits.push(await store.search(queries.row(q), filtered));
      log({ documents: size, engine: 'PgStore', search: 'filtered to 20% of documents', fullResults: filteredHits.filter((h) => h.length === 10).length / nq,
        ...(await latency(Math.min(runs, 3), nq, (q) => store.search(queries.row(q), filtered))) });
    } finally {
      await store.close();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log(`wrote ${writeResult('store', { benchmark: 'store', machine: machineInfo(), flags, rows })}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
