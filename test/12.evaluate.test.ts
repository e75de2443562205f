/** evaluate() against metrics computed here from brute-force scores, and the index/search/eval CLI. */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BGEM3, EVAL_MODES, EncodeOutput, denseScore, evaluate, lexicalScore, readEvalRows, type EvalRow } from '../lib';
import { DEMO_MODEL, ROOT, colbertReference } from './helpers';

const SEED = path.join(ROOT, 'data', 'seed-examples.jsonl');
const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-eval-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('evaluate', () => {
  let model: BGEM3;
  let rows: EvalRow[];
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
    rows = readEvalRows(SEED);
  });
  after(() => model.dispose());

  it('matches MRR@10, nDCG@10 and Recall@k computed from brute-force scores', async () => {
    const result = await evaluate(model, rows);
    const passages = [...new Set(rows.flatMap((r) => [...r.pos, ...(r.neg ?? [])]))];
    assert.equal(result.passages, passages.length);
    assert.equal(result.queries, rows.length);
    const docs = await model.encode(passages, { colbert: true });
    const qs = await model.encode(rows.map((r) => r.query), { colbert: true, maxLength: 64 });
    for (const [mode, [wd, ws, wc]] of Object.entries(EVAL_MODES)) {
      let mrr = 0, ndcg = 0, r1 = 0, r10 = 0;
      rows.forEach((row, qi) => {
        const q = qs.row(qi);
        const scored = passages.map((p, i) => {
          const d = docs.row(i);
          return { p, i, s: (wd * denseScore(q.dense!, d.dense!) + ws * lexicalScore(q.sparse!, d.sparse!) + wc * colbertReference(q.colbert!, d.colbert!, docs.dim)) / (wd + ws + wc) };
        });
        // A positive's rank: how many other passages score at least as high (ties count against it).
        const ranks = scored.filter((x) => row.pos.includes(x.p))
          .map((x) => scored.filter((y) => y.i !== x.i && y.s >= x.s).length).sort((a, b) => a - b);
        mrr += ranks[0] < 10 ? 1 / (ranks[0] + 1) : 0;
        let dcg = 0;
        for (const r of ranks) if (r < 10) dcg += 1 / Math.log2(r + 2);
        let ideal = 0;
        for (let i = 0; i < Math.min(row.pos.length, 10); i++) ideal += 1 / Math.log2(i + 2);
        ndcg += dcg / ideal;
        r1 += ranks.filter((r) => r < 1).length / row.pos.length;
        r10 += ranks.filter((r) => r < 10).length / row.pos.length;
      });
      const m = result.modes[mode];
      const n = rows.length;
      assert.ok(Math.abs(m.mrr10 - mrr / n) < 1e-9, `${mode} MRR@10 ${m.mrr10} vs ${mrr / n}`);
      assert.ok(Math.abs(m.ndcg10 - ndcg / n) < 1e-9, `${mode} nDCG@10`);
      assert.ok(Math.abs(m.recall1 - r1 / n) < 1e-9, `${mode} R@1`);
      assert.ok(Math.abs(m.recall10 - r10 / n) < 1e-9, `${mode} R@10`);
      assert.equal(m.recall100, 1, 'every positive is within the 80 passages');
    }
  });

  it('does not let ties flatter the positives (all-zero scores give no credit)', async () => {
    const zero = { dim: 4, modelMaxLength: 64, info: () => ({ dim: 4, vocabSize: 10, layout: 'test' }),
      encode: async (texts: string[]) => new EncodeOutput(texts.length, 4, new Float32Array(texts.length * 4),
        { offsets: new Uint32Array(texts.length + 1), ids: new Uint32Array(0), weights: new Float32Array(0) },
        { offsets: Uint32Array.from({ length: texts.length + 1 }, (_, i) => i), data: new Float32Array(texts.length * 4) }) };
    const result = await evaluate(zero as unknown as BGEM3, [{ query: 'q', pos: ['the answer'], neg: Array.from({ length: 30 }, (_, i) => `n${i}`) }]);
    for (const m of Object.values(result.modes)) {
      assert.equal(m.recall1, 0);
      assert.equal(m.recall10, 0);
      assert.equal(m.mrr10, 0);
    }
  });

  it('names the line of a malformed row', () => {
    const bad = path.join(tmp, 'bad.jsonl');
    fs.writeFileSync(bad, '{"query": "q", "pos": ["p"]}\n{"query": 3}\n');
    assert.throws(() => readEvalRows(bad), (e: { code?: string; message?: string }) => e.code === 'ERR_INPUT' && /bad\.jsonl:2/.test(e.message ?? ''));
  });
});

describe('index, search and eval CLI', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

  it('builds an index from a corpus, searches it and evaluates the seed data', () => {
    const rows = readEvalRows(SEED);
    const passages = [...new Set(rows.flatMap((r) => [...r.pos, ...(r.neg ?? [])]))];
    const corpus = path.join(tmp, 'corpus.jsonl');
    fs.writeFileSync(corpus, passages.map((text, i) => JSON.stringify({ id: `doc${i}`, text })).join('\n'));
    const out = path.join(tmp, 'index');
    const built = run(['index', 'build', '--in', corpus, '--out', out, '--colbert', 'bf16', '--json']);
    assert.equal(built.status, 0, built.stderr);
    const summary = JSON.parse(built.stdout);
    assert.equal(summary.documents, passages.length);
    assert.equal(summary.colbert, 'bf16');
    const found = run(['search', '--index', out, rows[0].query, '--k', '3', '--json']);
    assert.equal(found.status, 0, found.stderr);
    const hits = JSON.parse(found.stdout).hits;
    assert.equal(hits.length, 3);
    assert.match(hits[0].id, /^doc\d+$/);
    for (const key of ['score', 'dense', 'sparse', 'colbert']) assert.equal(typeof hits[0][key], 'number');
    const evaluated = run(['eval', '--data', SEED, '--json']);
    assert.equal(evaluated.status, 0, evaluated.stderr);
    assert.deepEqual(Object.keys(JSON.parse(evaluated.stdout).modes), Object.keys(EVAL_MODES));
    const demo = run(['demo']);
    assert.equal(demo.status, 0, demo.stderr);
    assert.match(demo.stdout, /MRR@10/);
    // --dense hnsw: the graph is saved with the index and search uses it; the same top hit here.
    const hnswOut = path.join(tmp, 'index-hnsw');
    const hnsw = run(['index', 'build', '--in', corpus, '--out', hnswOut, '--dense', 'hnsw', '--json']);
    assert.equal(hnsw.status, 0, hnsw.stderr);
    assert.equal(JSON.parse(hnsw.stdout).dense, 'hnsw');
    assert.ok(fs.readdirSync(hnswOut).some((f) => /^graph-.*\.usearch$/.test(f)));
    const viaGraph = run(['search', '--index', hnswOut, rows[0].query, '--k', '3', '--json']);
    assert.equal(viaGraph.status, 0, viaGraph.stderr);
    assert.equal(JSON.parse(viaGraph.stdout).hits[0].id, hits[0].id);
    const badRoute = run(['index', 'build', '--in', corpus, '--out', hnswOut, '--dense', 'ivf']);
    assert.equal(badRoute.status, 1);
    assert.match(badRoute.stderr, /--dense must be exact or hnsw, not ivf/);
    const missing = run(['search', '--index', path.join(tmp, 'nope'), 'q']);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /ERR_MODEL_FILES: .*no MANIFEST/);
  });
});
