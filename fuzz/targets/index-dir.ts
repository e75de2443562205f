/**
 * index-dir: a saved HybridIndex (synthetic vectors, no model) with MANIFEST, the segment or the
 * HNSW graph mutated, or replaced by a directory, a FIFO or a link. Half of the cases then fix
 * every checksum up, so that the mutation reaches the parsers behind them. The case loads the
 * index, searches it, saves it elsewhere and loads and searches that copy: each step either
 * works, with finite scores and the same hits from the copy, or fails with a coded M3Error.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { HybridIndex, type SearchHit } from '../../lib/retrieval/hybrid_index';
import { verifyGraph } from '../../lib/retrieval/index_load';
import type { EncodeOutput } from '../../lib/engine/outputs';
import { syntheticEncoded } from '../../test/index_synthetic';
import { applyFileSteps, copyFixture } from '../apply';
import { graphHotSpots, readSegmentSections, segmentHotSpots } from '../formats';
import { FILE_KINDS, randomByteOps, randomJsonOps } from '../mutate';
import type { ByteOp, CaseResult, HnswField, Recipe, Step } from '../recipe';
import type { Random } from '../rng';
import { fromRecipe, misleading, type Target } from '../target';

const DIM = 16;
const COUNT = 40;
const VOCAB = 1000;
const SEGMENT = 'segment-fixture.bin';
const GRAPH = 'graph-fixture.usearch';
/** Changes whenever the fixtures below would come out differently, so that older ones are rebuilt. */
const FIXTURE_VERSION = 2;

/** Every dense route with every ColBERT storage. */
export const INDEX_BASES = ['exact-f32', 'exact-bf16', 'exact-i8', 'exact-none', 'hnsw-f32', 'hnsw-bf16', 'hnsw-i8'] as const;
type IndexBase = (typeof INDEX_BASES)[number];

function settingsOf(base: string): { dense: 'exact' | 'hnsw'; colbert: 'f32' | 'bf16' | 'i8' | false } {
  const [dense, colbert] = base.split('-');
  if ((dense !== 'exact' && dense !== 'hnsw') || !['f32', 'bf16', 'i8', 'none'].includes(colbert)) throw new Error(`index-dir has no base '${base}'`);
  return { dense, colbert: colbert === 'none' ? false : (colbert as 'f32' | 'bf16' | 'i8') };
}

function fixtureDir(fixtures: string, base: string): string {
  return path.join(fixtures, `index-v${FIXTURE_VERSION}`, base);
}

/**
 * Builds one base index with fixed file names and an HNSW graph built on one thread: both make
 * the files the same bytes on every build, so that a recipe's offsets mean the same bytes.
 */
function buildBase(dir: string, base: IndexBase): void {
  const { dense, colbert } = settingsOf(base);
  const index = HybridIndex.create({ dim: DIM, vocabSize: VOCAB, colbert, dense, model: { dim: DIM, vocabSize: VOCAB, layout: 'synthetic' } });
  const encoded = syntheticEncoded(11, COUNT, DIM);
  // Texts and metadata on some documents (none on document 0: its lines are "null").
  index.add(Array.from({ length: COUNT }, (_, i) => (i % 3 ? `doc-${i}` : i)), encoded, {
    texts: Array.from({ length: COUNT }, (_, i) => (i % 3 ? `text ${i}: "quoted"\nü` : undefined)),
    metadata: Array.from({ length: COUNT }, (_, i) => (i % 4 ? { lang: i % 2 ? 'en' : 'de', year: 2000 + i, tags: ['a', i] } : undefined)),
  });
  // Built aside and renamed into place: runs started at the same time may build the same base.
  const aside = `${dir}.${process.pid}.tmp`;
  const saved = path.join(aside, 'saved');
  fs.rmSync(aside, { recursive: true, force: true });
  index.save(saved);
  const manifest = JSON.parse(fs.readFileSync(path.join(saved, 'MANIFEST'), 'utf8'));
  const built = path.join(aside, 'built');
  fs.mkdirSync(built);
  fs.renameSync(path.join(saved, manifest.segment), path.join(built, SEGMENT));
  const fixed: Record<string, unknown> = { format: manifest.format, version: manifest.version, segment: SEGMENT, bytes: manifest.bytes, crc32: manifest.crc32 };
  if (dense === 'hnsw') {
    const { Index } = require('usearch') as { Index: new (o: Record<string, unknown>) => { add(k: BigUint64Array, v: Float32Array, threads: number): void; save(f: string): void } };
    // The settings of createGraph in lib/retrieval/hnsw_route.ts.
    const graph = new Index({ dimensions: DIM, metric: 'ip', connectivity: 16, expansion_add: 128, expansion_search: 128 });
    graph.add(BigUint64Array.from({ length: COUNT }, (_, i) => BigInt(i)), encoded.dense!, 1);
    graph.save(path.join(built, GRAPH));
    const bytes = fs.readFileSync(path.join(built, GRAPH));
    fixed.graph = { file: GRAPH, bytes: bytes.length, crc32: zlib.crc32(bytes) };
    const verified = verifyGraph(built, fixed.graph as { file: string; bytes: number; crc32: number }, { dimensions: DIM, count: COUNT });
    if (verified.why !== undefined) throw new Error(`the fixture graph does not pass the index's own check: ${verified.why}`);
    fs.closeSync(verified.fd);
  }
  fs.writeFileSync(path.join(built, 'MANIFEST'), `${JSON.stringify(fixed, null, 2)}\n`);
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  try {
    fs.renameSync(built, dir);
  } catch (err) {
    if (!fs.existsSync(path.join(dir, 'MANIFEST'))) throw err;
  } finally {
    fs.rmSync(aside, { recursive: true, force: true });
  }
}

const MANIFEST_WORDS = ['bge-m3-hybrid-index', SEGMENT, GRAPH, 'segment-other.bin', 'graph-other.usearch', 'MANIFEST', 'LOCK', '../MANIFEST', 'segment-.bin'];
const META_WORDS = ['f32', 'bf16', 'i8', 'exact', 'hnsw', 'synthetic', 'bge-m3-snapshot'];
/** The JSON Lines sections (index_store.ts): one value per line. */
const LINE_SECTIONS = ['texts', 'metadata'];
const ARRAY_SECTIONS: Record<string, 1 | 2 | 4> = {
  dense: 4, sparseOffsets: 4, sparseIds: 4, sparseWeights: 4, colbertOffsets: 4, colbertF32: 4, colbertBf16: 2, colbertI8: 1, colbertScales: 4,
};
const GRAPH_FIELDS: HnswField[] = ['rows', 'rowBytes', 'present', 'dimensions', 'nodes', 'connectivity', 'connectivityBase', 'maxLevel', 'entry',
  'levelsTable', 'nodeKey', 'nodeLevel', 'neighbourCount', 'neighbour', 'neighbour', 'neighbour', 'vector'];
const GRAPH_VALUES = ['0', '1', '2', '-1', String(COUNT - 1), String(COUNT), String(COUNT + 1), '16', '17', '32', '33', '4294967295', '65536', '32767',
  '-32768', '18446744073709551615'];
const VECTOR_VALUES = ['NaN', 'Infinity', '-Infinity', '3.4e38', '0'];

const bytesCache = new Map<string, Buffer>();
function fixtureFile(fixtures: string, base: string, file: string): Buffer {
  const key = `${base}/${file}`;
  let bytes = bytesCache.get(key);
  if (!bytes) bytesCache.set(key, bytes = fs.readFileSync(path.join(fixtureDir(fixtures, base), file)));
  return bytes;
}

function segmentSteps(rng: Random, segment: Buffer): Step[] {
  if (rng.chance(0.45)) {
    const sections = readSegmentSections(segment).map((s) => s.name);
    const section = rng.pick(sections);
    const data = readSegmentSections(segment).find((s) => s.name === section)!.data;
    if (section === 'meta' || section === 'ids') {
      const doc = JSON.parse(data.toString('utf8'));
      const focus = section === 'meta'
        ? [[['count'], 2], [['dim'], 2], [['vocabSize'], 1], [['colbert'], 2], [['dense'], 2], [['model'], 1], [[], 1]] as const
        : [[[], 1]] as const;
      const ops = rng.chance(0.85) ? randomJsonOps(rng, doc, focus.map(([p, w]) => [[...p], w] as const), META_WORDS) : randomByteOps(rng, data.length);
      return [{ op: 'section', section, ops, file: SEGMENT }];
    }
    if (LINE_SECTIONS.includes(section)) {
      // Line starts and ends are where the parser decides what a value is and how many there are.
      const hot = [0, data.length];
      for (let at = data.indexOf(0x0a); at >= 0; at = data.indexOf(0x0a, at + 1)) hot.push(at, at + 1);
      return [{ op: 'section', section, ops: randomByteOps(rng, data.length, { hot }), file: SEGMENT }];
    }
    const width = ARRAY_SECTIONS[section] ?? 4;
    const ops = randomByteOps(rng, data.length, { floats: width === 4 ? { start: 0, end: data.length } : undefined, hot: [0, Math.max(0, data.length - width)] })
      .map((op): ByteOp => (op.op === 'set-int' && rng.chance(0.7) ? { ...op, width, at: op.at - (op.at % width) } : op));
    return [{ op: 'section', section, ops, file: SEGMENT }];
  }
  return randomByteOps(rng, segment.length, { hot: segmentHotSpots(segment) }).map((op) => ({ ...op, file: SEGMENT }));
}

function graphSteps(rng: Random, graph: Buffer): Step[] {
  if (rng.chance(0.45)) {
    return Array.from({ length: rng.smallCount(2) }, () => {
      const field = rng.pick(GRAPH_FIELDS);
      return {
        op: 'hnsw-set' as const, field, node: rng.below(COUNT), level: rng.pick([0, 0, 0, 1, 2]), k: rng.below(field === 'vector' ? COUNT * DIM : 18),
        value: rng.pick(field === 'vector' ? VECTOR_VALUES : GRAPH_VALUES), file: GRAPH,
      };
    });
  }
  return randomByteOps(rng, graph.length, { hot: graphHotSpots(graph) }).map((op) => ({ ...op, file: GRAPH }));
}

function checkHits(hits: SearchHit[], what: string): CaseResult | undefined {
  const seen = new Set<unknown>();
  for (const [i, hit] of hits.entries()) {
    for (const field of ['score', 'dense', 'sparse', 'colbert'] as const) {
      if (!Number.isFinite(hit[field])) return misleading(`${what}: hit ${i} has ${field} ${hit[field]}`);
    }
    if (seen.has(hit.id)) return misleading(`${what}: id ${JSON.stringify(hit.id)} is a hit twice`);
    seen.add(hit.id);
  }
  return undefined;
}

function searchAll(index: HybridIndex, queries: EncodeOutput, what: string): { hits: SearchHit[][]; wrong?: CaseResult } {
  const hits = [index.search(queries.row(0), { k: 10 }), index.search(queries.row(1), { k: 5, exhaustive: true }), ...index.searchBatch(queries, { k: 7 }),
    index.search(queries.row(2), { k: 6, filter: { lang: 'en', year: { gte: 2010 } } })];
  for (const [i, list] of hits.entries()) {
    const wrong = checkHits(list, `${what} ${i}`);
    if (wrong) return { hits, wrong };
  }
  return { hits };
}

export const indexDirTarget: Target = {
  name: 'index-dir',
  caseTimeoutMs: 15_000,
  batchSize: 40,
  setupTimeoutMs: 30_000,

  prepare(fixtures: string): string {
    const digest = crypto.createHash('sha256');
    for (const base of INDEX_BASES) {
      const dir = fixtureDir(fixtures, base);
      if (!fs.existsSync(path.join(dir, 'MANIFEST'))) buildBase(dir, base);
      for (const name of fs.readdirSync(dir).sort()) digest.update(name).update(fs.readFileSync(path.join(dir, name)));
    }
    return digest.digest('hex').slice(0, 12);
  },

  generate(rng: Random, fixtures: string): Recipe {
    const base = rng.pick(INDEX_BASES);
    const hnsw = base.startsWith('hnsw');
    const file = rng.weighted([['MANIFEST', 3], [SEGMENT, 4.5], [GRAPH, hnsw ? 2.5 : 0]] as const);
    let ops: Step[];
    if (rng.chance(0.05)) {
      ops = [{ op: 'replace-with', kind: rng.pick(FILE_KINDS), file }];
    } else if (file === 'MANIFEST') {
      const bytes = fixtureFile(fixtures, base, 'MANIFEST');
      ops = (rng.chance(0.8)
        ? randomJsonOps(rng, JSON.parse(bytes.toString('utf8')), [[[], 2], [['graph'], hnsw ? 1 : 0]], MANIFEST_WORDS)
        : randomByteOps(rng, bytes.length)).map((op) => ({ ...op, file }));
    } else if (file === SEGMENT) {
      ops = segmentSteps(rng, fixtureFile(fixtures, base, SEGMENT));
    } else {
      ops = graphSteps(rng, fixtureFile(fixtures, base, GRAPH));
    }
    if (rng.chance(0.5)) ops.push({ op: 'fix-checksums' });
    return { target: 'index-dir', base, ops };
  },

  async open(fixtures: string) {
    const queries = syntheticEncoded(99, 3, DIM);
    return {
      async run(recipe: Recipe, scratch: string): Promise<CaseResult> {
        const dir = path.join(scratch, 'index');
        fromRecipe(() => {
          settingsOf(recipe.base);
          copyFixture(fixtureDir(fixtures, recipe.base), dir);
          applyFileSteps(dir, recipe.ops, scratch);
        });
        const index = HybridIndex.load(dir);
        const first = searchAll(index, queries, 'search');
        if (first.wrong) return first.wrong;
        // What was loaded must save and load back to the same index.
        const copy = path.join(scratch, 'resaved');
        index.save(copy);
        const again = searchAll(HybridIndex.load(copy), queries, 'search of the saved copy');
        if (again.wrong) return again.wrong;
        const ids = (lists: SearchHit[][]) => JSON.stringify(lists.map((l) => l.map((h) => [h.id, h.text, h.metadata])));
        if (ids(first.hits) !== ids(again.hits)) return misleading(`the saved copy finds other hits: ${ids(first.hits).slice(0, 200)} vs ${ids(again.hits).slice(0, 200)}`);
        return { outcome: 'clean-ok' };
      },
    };
  },
};
