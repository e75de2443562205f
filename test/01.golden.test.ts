/**
 * Parity with the independent PyTorch reference (scripts/gen_fixtures.py) for every layout:
 * dense values, lexical ids and weights, ColBERT rows and row counts, and all five
 * computeScore modes, at 1e-5.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3, DEFAULT_WEIGHTS } from '../lib';
import { MODEL_DIRS, assertClose, golden, type GoldenScores } from './helpers';

const dim = golden.dim;

for (const [layout, dir] of Object.entries(MODEL_DIRS)) {
  describe(`golden outputs: ${layout}`, () => {
    let model: BGEM3;
    before(async () => {
      model = await BGEM3.load(dir);
    });
    after(async () => {
      await model.dispose();
    });

    it('reports the layout and dims', () => {
      const info = model.info();
      assert.equal(info.dim, dim);
      assert.equal(info.layout, dir.includes('baked') ? 'heads-baked' : 'bge-m3-snapshot');
      assert.equal(info.modelMaxLength, golden.defaultMaxLength);
      assert.equal(info.headsDevice, 'cpu');  // a CPU session: the heads run where its outputs are
      assert.equal(info.headsDeviceWhy, '');
    });

    for (const c of golden.cases) {
      it(`case ${c.name}`, async () => {
        const out = await model.encode([c.text], { dense: true, sparse: true, colbert: true, maxLength: c.maxLength ?? undefined });
        assert.equal(out.count, 1);
        assert.equal(out.dim, dim);
        const row = out.row(0);
        assertClose(row.dense!, c.dense, `${c.name} dense`);
        const ids = Object.keys(c.sparse).map(Number).sort((a, b) => a - b);
        assert.deepEqual(Array.from(row.sparse!.ids), ids, `${c.name} sparse ids`);
        assertClose(row.sparse!.weights, ids.map((id) => c.sparse[String(id)]), `${c.name} sparse weights`);
        assert.equal(row.colbert!.length / dim, c.ids.length - 1, `${c.name} colbert rows = n_tokens - 1`);
        assertClose(row.colbert!, c.colbert.flat(), `${c.name} colbert`);
      });
    }

    const checkScores = async (expected: GoldenScores, useDefaultWeights: boolean) => {
      const scores = await model.computeScore(expected.pairs, {
        weights: useDefaultWeights ? undefined : expected.weights,
        maxQueryLength: expected.maxQueryLength,
        maxPassageLength: expected.maxPassageLength,
      });
      for (const key of ['dense', 'sparse', 'colbert', 'sparse+dense', 'colbert+sparse+dense'] as const) {
        assert.ok(scores[key] instanceof Float32Array);
        assertClose(scores[key], expected[key], `computeScore ${key}`);
      }
    };
    it('computeScore with weights [0.4, 0.2, 0.4]', () => checkScores(golden.scores, false));
    // FlagEmbedding's compute_score defaults to [1, 1, 1]; passed explicitly, the golden matches.
    it('computeScore with FlagEmbedding\'s default weights [1, 1, 1]', () => checkScores(golden.scoresDefault, false));
    it('computeScore by default fuses with the paper\'s [1, 0.3, 1] (recomputed from the golden components)', async () => {
      const g = golden.scoresDefault;
      const scores = await model.computeScore(g.pairs, { maxQueryLength: g.maxQueryLength, maxPassageLength: g.maxPassageLength });
      assert.deepEqual([...DEFAULT_WEIGHTS], [1, 0.3, 1]);
      const [wd, ws, wc] = [1, 0.3, 1];
      assertClose(scores['sparse+dense'], g.pairs.map((_, i) => (wd * g.dense[i] + ws * g.sparse[i]) / (wd + ws)), 'sparse+dense');
      assertClose(scores['colbert+sparse+dense'], g.pairs.map((_, i) => (wd * g.dense[i] + ws * g.sparse[i] + wc * g.colbert[i]) / (wd + ws + wc)), 'all');
    });
  });
}

describe('convertIdToToken', () => {
  it('keys lexical weights by the decoded piece', async () => {
    const model = await BGEM3.load(MODEL_DIRS['snapshot (.pt heads)']);
    try {
      const c = golden.cases.find((x) => x.name === 'english')!;
      const out = await model.encode([c.text]);
      const map = model.convertIdToToken(out.row(0).sparse!);
      const expected: Record<string, number> = {};
      c.ids.forEach((id, k) => {
        const w = c.sparse[String(id)];
        if (w === undefined) return;
        const piece = c.tokens[k].replace(/\u2581/g, ' ').trim();
        expected[piece] = Math.max(expected[piece] ?? 0, w);
      });
      assert.deepEqual(Object.keys(map).sort(), Object.keys(expected).sort());
      for (const key of Object.keys(expected)) assert.ok(Math.abs(map[key] - expected[key]) <= 1e-5, key);
    } finally {
      await model.dispose();
    }
  });

  it('keeps pieces named like Object built-ins as keys of their own', async () => {
    // A copy of the demo model whose tokenizer names five pieces after Object.prototype members.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-pieces-'));
    try {
      fs.cpSync(MODEL_DIRS['snapshot (.pt heads)'], dir, { recursive: true });
      const file = path.join(dir, 'tokenizer.json');
      const tok = JSON.parse(fs.readFileSync(file, 'utf8'));
      const names = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'];
      names.forEach((name, k) => { tok.model.vocab[100 + k][0] = `\u2581${name}`; });
      fs.writeFileSync(file, JSON.stringify(tok));
      const model = await BGEM3.load(dir);
      try {
        const map = model.convertIdToToken({ ids: Uint32Array.of(100, 101, 102, 103, 104), weights: Float32Array.of(0.1, 0.2, 0.3, 0.4, 0.5) });
        assert.deepEqual(Object.keys(map), names);
        names.forEach((name, k) => assert.equal(Object.getOwnPropertyDescriptor(map, name)?.value, Math.fround(0.1 * (k + 1))));
        assert.equal(Object.getPrototypeOf(map), Object.prototype);
      } finally {
        await model.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
