/**
 * A model folder without config.json takes its position limit from the graph's position table,
 * so that an over-long text is truncated (or refused with ERR_TOO_LONG) by the engine instead of
 * failing inside ONNX Runtime. The reference is the same model with its config.json.
 */
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3 } from '../lib';
import { native } from '../lib/addon/native';
import { DEMO_MODEL, rejectsWith } from './helpers';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-limits-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('model limits without config.json', () => {
  const bare = path.join(tmp, 'no-config');
  fs.cpSync(DEMO_MODEL, bare, { recursive: true });
  fs.rmSync(path.join(bare, 'config.json'));
  const config = JSON.parse(fs.readFileSync(path.join(DEMO_MODEL, 'config.json'), 'utf8')) as { max_position_embeddings: number };
  const longText = Array.from({ length: 400 }, (_, i) => `word${i % 50}`).join(' ');

  it('the graph\'s position table gives the rows config.json states', () => {
    assert.equal(native().graphPositionRows(path.join(DEMO_MODEL, 'onnx', 'model.onnx')), config.max_position_embeddings);
  });

  it('loads with the same limits as with config.json, and truncates long texts to them', async () => {
    const withConfig = await BGEM3.load(DEMO_MODEL);
    const without = await BGEM3.load(bare);
    try {
      assert.equal(without.info().modelMaxLength, withConfig.info().modelMaxLength);
      assert.ok(without.info().modelMaxLength < 8192, 'not the 8192 default');
      const a = await without.encode([longText]);
      const b = await withConfig.encode([longText]);
      assert.equal(a.tokens![0], without.info().modelMaxLength);
      assert.deepEqual(a.dense, b.dense);
      await rejectsWith(without.encode([longText], { truncate: false }), 'ERR_TOO_LONG', /tokens/);
      await rejectsWith(BGEM3.load(bare, { maxLength: 8192 }), 'ERR_INPUT', /exceeds this model's/);
    } finally {
      await without.dispose();
      await withConfig.dispose();
    }
  });
});
