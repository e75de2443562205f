/**
 * EncodeOutput.toJSON() and row(i).toJSON(): plain arrays, sparse rows as {indices, values} by
 * token id, so that JSON.stringify writes what vector databases take. Checked element by element
 * against the typed arrays the encode returned.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { BGEM3, type EncodeOutput, type EncodeOutputJSON } from '../lib';
import { DEMO_MODEL } from './helpers';

describe('encode outputs as JSON', () => {
  let model: BGEM3;
  let out: EncodeOutput;
  const texts = ['What is BGE M3?', 'Defination of BM25', 'BGE M3 supports dense, lexical and multi-vector retrieval in one model.'];
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
    out = await model.encode(texts, { dense: true, sparse: true, colbert: true });
  });
  after(() => model.dispose());

  it('JSON.stringify(output) writes every text\'s dense vector, {indices, values} and ColBERT rows', () => {
    const json = JSON.parse(JSON.stringify(out)) as EncodeOutputJSON;
    assert.equal(json.count, texts.length);
    assert.equal(json.dim, out.dim);
    const dim = out.dim;
    for (let i = 0; i < texts.length; i++) {
      assert.equal(json.dense![i].length, dim);
      for (let k = 0; k < dim; k++) assert.equal(json.dense![i][k], out.dense![i * dim + k]);
      const { offsets, ids, weights } = out.sparse!;
      assert.deepEqual(json.sparse![i].indices, Array.from(ids.slice(offsets[i], offsets[i + 1])));
      assert.deepEqual(json.sparse![i].values, Array.from(weights.slice(offsets[i], offsets[i + 1])));
      const c = out.colbert!;
      const rows = c.offsets[i + 1] - c.offsets[i];
      assert.equal(rows, out.tokens![i] - 1, 'one ColBERT row per token after <s>');
      assert.equal(json.colbert![i].length, rows);
      for (let r = 0; r < rows; r++) {
        for (let k = 0; k < dim; k++) assert.equal(json.colbert![i][r][k], c.data[(c.offsets[i] + r) * dim + k]);
      }
    }
    assert.deepEqual(json.tokens, Array.from(out.tokens!));
  });

  it('row(i).toJSON() gives the same entry, and is not an enumerable key of the row', () => {
    const whole = out.toJSON();
    for (let i = 0; i < texts.length; i++) {
      const row = out.row(i);
      assert.deepEqual(Object.keys(row).sort(), ['colbert', 'dense', 'sparse']);
      assert.deepEqual(JSON.parse(JSON.stringify(row)), { dense: whole.dense![i], sparse: whole.sparse![i], colbert: whole.colbert![i] });
    }
  });

  it('only the requested outputs appear, and a slice converts like the rows it holds', async () => {
    const dense = await model.encode(texts, { dense: true, sparse: false });
    const json = dense.toJSON();
    assert.deepEqual(Object.keys(json).sort(), ['count', 'dense', 'dim', 'tokens']);
    const part = out.slice(1, 3).toJSON();
    const whole = out.toJSON();
    assert.deepEqual(part.dense, whole.dense!.slice(1, 3));
    assert.deepEqual(part.sparse, whole.sparse!.slice(1, 3));
    assert.deepEqual(part.colbert, whole.colbert!.slice(1, 3));
  });
});
