/**
 * Loading edges. A model folder without config.json takes its position limit from the graph's
 * position table, so that an over-long text is truncated (or refused with ERR_TOO_LONG) by the
 * engine instead of failing inside ONNX Runtime; the reference is the same model with its
 * config.json. ONNX Runtime's own log is quiet by default and comes through our prefix when
 * BGE_M3_ORT_LOG_LEVEL raises it.
 */
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BGEM3 } from '../lib';
import { native } from '../lib/addon/native';
import { DEMO_MODEL, ROOT, rejectsWith } from './helpers';

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

describe("ONNX Runtime's log", () => {
  const load = (level?: string) => spawnSync(process.execPath, ['-e',
    `const { BGEM3 } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib'))});
     BGEM3.load(${JSON.stringify(DEMO_MODEL)}).then((m) => m.encode(['hello']).then(() => m.dispose()));`],
  { encoding: 'utf8', env: { ...process.env, BGE_M3_ORT_LOG_LEVEL: level ?? '' } });

  it('prints nothing by default, and its lines through our prefix at a chosen level', () => {
    const quiet = load();
    assert.equal(quiet.status, 0, quiet.stderr);
    assert.doesNotMatch(quiet.stderr, /onnxruntime/i);
    const loud = load('info');
    assert.equal(loud.status, 0, loud.stderr);
    assert.match(loud.stderr, /^bge-m3: onnxruntime info: /m);
    assert.doesNotMatch(loud.stderr, /^\S*\[[WIE]:onnxruntime/m, 'no raw ONNX Runtime log lines');
    const bad = load('loud');
    assert.match(bad.stderr, /BGE_M3_ORT_LOG_LEVEL='loud' is not verbose, info, warning, error or fatal/);
  });
});
