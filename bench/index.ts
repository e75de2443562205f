/**
 * HybridIndex benchmark on synthetic corpora shaped like BGE-M3 output: 1024-d unit dense
 * vectors, ~100-id sparse rows over 250,002 ids (Zipf-like), and 64 to 256 ColBERT rows per
 * document (queries: 32). Index build rate, search latency p50/p99 per route and fused, and ColBERT bytes per
 * document per storage format. Not a test: JSON to bench/results/, a table on stdout.
 *
 *   npm run bench:index -- [--queries 200] [--sizes 10000,100000] [--clustered-sizes 10000,100000] [--colbert-docs 2000]
 *
 * Uniformly random unit vectors are the worst case for a graph index (every point nearly
 * equidistant from every other). The clustered corpora are closer to real embeddings: documents
 * around topic centres, each query a perturbed document, so each query has true near neighbours;
 * there the HNSW route's recall@10 against the exact route is measured too.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EncodeOutput, HybridIndex, type SearchOptions } from '../lib';
import { mulberry32 } from '../lib/base/rng';
import { machineInfo, parseFlags, writeResult } from './common';

const DIM = 1024;
const VOCAB = 250002;

/** count texts: dense + sparse (+ ColBERT vectors, rows per text in the given range). */
function corpus(seed: number, count: number, sparseIds: number, colbertRows: [number, number] | null): EncodeOutput {
  const next = mulberry32(seed);
  const dense = new Float32Array(count * DIM);
  for (let i = 0; i < count; i++) {
    let norm = 0;
    for (let k = 0; k < DIM; k++) norm += (dense[i * DIM + k] = next() - 0.5) ** 2;
    const inv = 1 / Math.sqrt(norm);
    for (let k = 0; k < DIM; k++) dense[i * DIM + k] *= inv;
  }
  const offsets = new Uint32Array(count + 1);
  const ids: number[] = [];
  const weights: number[] = [];
  for (let i = 0; i < count; i++) {
    const set = new Set<number>();
    const n = Math.max(1, Math.round(sparseIds * (0.5 + next())));
    // Zipf-like: small ids (frequent tokens) far more often than large ones.
    while (set.size < n) set.add(4 + Math.floor((VOCAB - 5) * next() ** 3));
    const sorted = [...set].sort((a, b) => a - b);
    for (const id of sorted) {
      ids.push(id);
      weights.push(next() * 0.3);
    }
    offsets[i + 1] = ids.length;
  }
  let colbert;
  if (colbertRows) {
    const [lo, hi] = colbertRows;
    const cOff = new Uint32Array(count + 1);
    for (let i = 0; i < count; i++) cOff[i + 1] = cOff[i] + lo + Math.floor(next() * (hi - lo + 1));
    const data = new Float32Array(cOff[count] * DIM);
    for (let r = 0; r < cOff[count]; r++) {
      let norm = 0;
      for (let k = 0; k < DIM; k++) norm += (data[r * DIM + k] = next() - 0.5) ** 2;
      const inv = 1 / Math.sqrt(norm);
      for (let k = 0; k < DIM; k++) data[r * DIM + k] *= inv;
    }
    colbert = { offsets: cOff, data };
  }
  return new EncodeOutput(count, DIM, dense, { offsets, ids: Uint32Array.from(ids), weights: Float32Array.from(weights) }, colbert);
}

/**
 * Dense unit vectors in `clusters` topics: document = centre + noise (cosine to its centre about
 * 0.7), query = a random document + noise (cosine to it about 0.9). Sparse rows: one id each.
 */
function clusteredCorpus(seed: number, count: number, clusters: number, queries: number): { docs: EncodeOutput; queries: EncodeOutput } {
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
    // base (unit) + isotropic noise of norm tan(acos(cosine)): the result's cosine to base ~ cosine.
    const scale = Math.tan(Math.acos(cosine)) / Math.sqrt(DIM);
    return unit(Float32Array.from(base, (x) => x + scale * gauss()));
  };
  const centres = Array.from({ length: clusters }, () => unit(Float32Array.from({ length: DIM }, gauss)));
  const make = (rows: Float32Array[]) => {
    const dense = new Float32Array(rows.length * DIM);
    rows.forEach((r, i) => dense.set(r, i * DIM));
    const offsets = Uint32Array.from({ length: rows.length + 1 }, (_, i) => i);
    const ids = Uint32Array.from({ length: rows.length }, () => 4 + Math.floor(next() * (VOCAB - 5)));
    return new EncodeOutput(rows.length, DIM, dense, { offsets, ids, weights: new Float32Array(rows.length).fill(0.1) });
  };
  const docRows = Array.from({ length: count }, () => noisy(centres[Math.floor(next() * clusters)], 0.7));
  const queryRows = Array.from({ length: queries }, () => noisy(docRows[Math.floor(next() * count)], 0.9));
  return { docs: make(docRows), queries: make(queryRows) };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function latency(index: HybridIndex, queries: EncodeOutput, options: SearchOptions) {
  index.search(queries.row(0), options);
  const ms: number[] = [];
  for (let i = 0; i < queries.count; i++) {
    const t = performance.now();
    index.search(queries.row(i), options);
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  return { p50: percentile(ms, 0.5), p99: percentile(ms, 0.99) };
}

function main(): void {
  const flags = parseFlags(process.argv.slice(2), {
    queries: '200', sizes: '10000,100000', 'clustered-sizes': '10000,100000', 'colbert-docs': '2000',
  });
  const nq = Number(flags.queries);
  const rows: Record<string, unknown>[] = [];
  const log = (r: Record<string, unknown>) => {
    rows.push(r);
    console.log(JSON.stringify(r));
  };
  for (const size of flags.sizes.split(',').filter(Boolean).map(Number)) {
    const docs = corpus(1, size, 100, null);
    const queries = corpus(2, nq, 40, null);
    const index = HybridIndex.create({ dim: DIM });
    const t = performance.now();
    const step = 5000;
    for (let start = 0; start < size; start += step) {
      const end = Math.min(size, start + step);
      const part = new EncodeOutput(end - start, DIM, docs.dense!.subarray(start * DIM, end * DIM), {
        offsets: docs.sparse!.offsets.slice(start, end + 1).map((o) => o - docs.sparse!.offsets[start]),
        ids: docs.sparse!.ids.subarray(docs.sparse!.offsets[start], docs.sparse!.offsets[end]),
        weights: docs.sparse!.weights.subarray(docs.sparse!.offsets[start], docs.sparse!.offsets[end]),
      });
      index.add(Array.from({ length: end - start }, (_, i) => start + i), part);
    }
    const buildSeconds = (performance.now() - t) / 1000;
    log({ documents: size, colbert: 'none', buildDocsPerSecond: size / buildSeconds });
    for (const [route, options] of [
      ['dense route', { routes: ['dense'], weights: [1, 0, 0] }], ['sparse route', { routes: ['sparse'], weights: [0, 1, 0] }],
      ['dense+sparse fused', { weights: [1, 0.3, 0] }],
    ] as Array<[string, SearchOptions]>) {
      log({ documents: size, search: route, k: 10, ...latency(index, queries, { k: 10, ...options }) });
    }
    // The default multi-route recall (200 dense + 200 sparse candidates) against exhaustive.
    let agree = 0;
    for (let q = 0; q < queries.count; q++) {
      const want = index.search(queries.row(q), { k: 10, weights: [1, 0.3, 0], exhaustive: true }).map((h) => h.id);
      agree += index.search(queries.row(q), { k: 10, weights: [1, 0.3, 0] }).filter((h) => want.includes(h.id)).length;
    }
    log({ documents: size, search: 'dense+sparse fused vs exhaustive', recallAt10: agree / (10 * queries.count) });
    // The approximate dense route (HNSW through usearch): build rate, latency, recall@10 vs exact.
    const hnsw = HybridIndex.create({ dim: DIM, dense: 'hnsw' });
    const th = performance.now();
    hnsw.add(Array.from({ length: size }, (_, i) => i), docs);
    const hnswBuild = (performance.now() - th) / 1000;
    const denseOnly: SearchOptions = { k: 10, routes: ['dense'], weights: [1, 0, 0], denseCandidates: 100 };
    let found = 0;
    for (let q = 0; q < queries.count; q++) {
      const want = index.search(queries.row(q), denseOnly).map((h) => h.id);
      found += hnsw.search(queries.row(q), denseOnly).filter((h) => want.includes(h.id)).length;
    }
    log({ documents: size, search: 'dense route (hnsw, 100 candidates)', buildDocsPerSecond: size / hnswBuild,
      recallAt10VsExact: found / (10 * queries.count), ...latency(hnsw, queries, denseOnly) });
    // Persistence: save writes the graph with the vectors; load reads it instead of rebuilding.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-bench-index-'));
    try {
      const ts = performance.now();
      hnsw.save(dir);
      const saveSeconds = (performance.now() - ts) / 1000;
      const tl = performance.now();
      const loaded = HybridIndex.load(dir);
      const loadSeconds = (performance.now() - tl) / 1000;
      if (loaded.denseRoute !== 'hnsw' || loaded.size !== size) throw new Error('the saved HNSW index did not load as saved');
      log({ documents: size, search: 'hnsw index save / load (graph read, not rebuilt)', saveSeconds, loadSeconds,
        loadVsRebuild: hnswBuild / loadSeconds });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  for (const size of flags['clustered-sizes'].split(',').filter(Boolean).map(Number)) {
    const { docs, queries } = clusteredCorpus(5, size, Math.max(10, Math.round(size / 100)), nq);
    const exact = HybridIndex.create({ dim: DIM });
    exact.add(Array.from({ length: size }, (_, i) => i), docs);
    const hnsw = HybridIndex.create({ dim: DIM, dense: 'hnsw' });
    const th = performance.now();
    hnsw.add(Array.from({ length: size }, (_, i) => i), docs);
    const hnswBuild = (performance.now() - th) / 1000;
    for (const candidates of [100, 200]) {
      const denseOnly: SearchOptions = { k: 10, routes: ['dense'], weights: [1, 0, 0], denseCandidates: candidates };
      let found = 0;
      for (let q = 0; q < queries.count; q++) {
        const want = exact.search(queries.row(q), denseOnly).map((h) => h.id);
        found += hnsw.search(queries.row(q), denseOnly).filter((h) => want.includes(h.id)).length;
      }
      log({ documents: size, corpus: 'clustered', search: `dense route (hnsw, ${candidates} candidates)`,
        buildDocsPerSecond: size / hnswBuild, recallAt10VsExact: found / (10 * queries.count), ...latency(hnsw, queries, denseOnly),
        exact: latency(exact, queries, denseOnly) });
    }
  }
  const cdocs = Number(flags['colbert-docs']);
  const docs = corpus(3, cdocs, 100, [64, 256]);
  const queries = corpus(4, Math.min(nq, 50), 40, [32, 32]);
  for (const format of ['f32', 'bf16', 'i8'] as const) {
    const index = HybridIndex.create({ dim: DIM, colbert: format });
    const t = performance.now();
    index.add(Array.from({ length: cdocs }, (_, i) => i), docs);
    const buildSeconds = (performance.now() - t) / 1000;
    log({
      documents: cdocs, colbert: format, colbertBytesPerDocument: Math.round(index.colbertBytesPerDocument), buildDocsPerSecond: cdocs / buildSeconds,
      search: 'all three, 200+200 candidates', ...latency(index, queries, { k: 10 }),
    });
  }
  console.log(`wrote ${writeResult('index', { benchmark: 'index', machine: machineInfo(), rows })}`);
}

main();
