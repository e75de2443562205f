/**
 * HybridIndex persistence: round trips in every ColBERT format, clear failures for damaged,
 * wrong-version and wrong-model directories, and a save killed at random moments (SIGKILL)
 * leaving the old or the new index, never a broken one.
 */
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { HybridIndex } from '../lib';
import { FIXTURES, ROOT } from './helpers';
import { SYNTH_DIM, buildSynthetic, syntheticEncoded } from './index_synthetic';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-index-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const freshDir = () => path.join(tmp, `ix-${n++}`);

const queries = syntheticEncoded(7, 3);
function fingerprint(index: HybridIndex) {
  return [0, 1, 2].map((i) => index.search(queries.row(i), { k: 5, exhaustive: true }));
}

describe('HybridIndex save/load', () => {
  for (const format of ['f32', 'bf16', 'i8'] as const) {
    it(`round-trips (${format} ColBERT) with identical search results`, () => {
      const index = buildSynthetic(1, format);
      index.remove([100001, 'doc-1-3']);
      const dir = freshDir();
      index.save(dir);
      const loaded = HybridIndex.load(dir);
      assert.equal(loaded.size, index.size);
      assert.equal(loaded.colbert, format);
      assert.deepEqual(fingerprint(loaded), fingerprint(index));
      const segments = () => fs.readdirSync(dir).filter((f) => f.startsWith('segment-')).length;
      assert.equal(segments(), 1);
      index.save(dir);
      index.save(dir);
      assert.equal(segments(), 2, 'the current and the previous segment are kept, older ones removed');
      assert.ok(!fs.existsSync(path.join(dir, 'LOCK')), 'the lock is released');
    });
  }

  it('refuses damaged, wrong-version and wrong-model directories with messages naming the file', () => {
    const dir = freshDir();
    buildSynthetic(1).save(dir);
    const manifest = path.join(dir, 'MANIFEST');
    const segment = path.join(dir, JSON.parse(fs.readFileSync(manifest, 'utf8')).segment);
    const original = fs.readFileSync(segment);
    const fails = (code: string, pattern: RegExp, options = {}) =>
      assert.throws(() => HybridIndex.load(dir, options), (e: { code?: string; message?: string }) => e.code === code && pattern.test(e.message ?? ''));

    fs.writeFileSync(segment, original.subarray(0, original.length - 100));
    fails('ERR_MODEL_FILES', /segment-.*truncated/);
    const flipped = Buffer.from(original);
    flipped[original.length >> 1] ^= 0x40;
    fs.writeFileSync(segment, flipped);
    fails('ERR_MODEL_FILES', /segment-.*corrupted/);
    fs.writeFileSync(segment, original);
    const m = JSON.parse(fs.readFileSync(manifest, 'utf8'));
    fs.writeFileSync(manifest, JSON.stringify({ ...m, version: 99 }));
    fails('ERR_MODEL_FILES', /MANIFEST.*version 99.*version 1/);
    fs.writeFileSync(manifest, '{ broken');
    fails('ERR_MODEL_FILES', /MANIFEST.*not valid JSON/);
    fs.writeFileSync(manifest, JSON.stringify(m));
    fails('ERR_MODEL_LAYOUT', /built with a model of dim 64/, { model: { dim: 1024, vocabSize: 250002 } });
    assert.equal(HybridIndex.load(dir, { model: { dim: SYNTH_DIM, vocabSize: 1000, layout: 'synthetic' } }).size, 1500);
    fs.rmSync(segment);
    fails('ERR_MODEL_FILES', /segment-.*missing/);
    assert.throws(() => HybridIndex.load(path.join(tmp, 'nothing-here')), (e: { code?: string; message?: string }) =>
      e.code === 'ERR_MODEL_FILES' && /no MANIFEST/.test(e.message ?? ''));
  });

  it('a save killed at a random moment leaves the old index or the new one', async () => {
    const a = fingerprint(buildSynthetic(1));
    const b = fingerprint(buildSynthetic(2));
    const child = path.join(FIXTURES, 'save-loop.js');
    const synthetic = path.join(ROOT, 'dist', 'test', 'index_synthetic.js');
    let sawA = 0;
    let sawB = 0;
    for (let round = 0; round < 16; round++) {
      const dir = freshDir();
      const proc = spawn(process.execPath, [child, synthetic, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        proc.stdout.once('data', () => setTimeout(() => proc.kill('SIGKILL'), 5 + Math.floor(Math.random() * 120)));
        proc.once('exit', () => resolve());
        proc.once('error', reject);
      });
      const loaded = HybridIndex.load(dir);
      const got = fingerprint(loaded);
      if (round === 0) loaded.save(dir);  // takes over the LOCK the killed process left
      if (loaded.size === 1500) {
        assert.deepEqual(got, a);
        sawA++;
      } else {
        assert.equal(loaded.size, 1700);
        assert.deepEqual(got, b);
        sawB++;
      }
    }
    assert.ok(sawA + sawB === 16);
  });

  it('takes over a stale lock: an empty LOCK left by a writer killed before filling it', () => {
    const dir = freshDir();
    const ix = buildSynthetic(1);
    ix.save(dir);
    const lock = path.join(dir, 'LOCK');
    fs.writeFileSync(lock, '');
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(lock, old, old);
    const started = Date.now();
    ix.save(dir);
    assert.ok(Date.now() - started < 5000, 'no wait for a lock nobody holds');
    assert.ok(!fs.existsSync(lock), 'the lock is released');
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('LOCK')), [], 'no private lock files left');
  });

  it('concurrent saves from two processes take turns and leave a loadable index', async () => {
    const dir = freshDir();
    const script = `const { buildSynthetic } = require(${JSON.stringify(path.join(ROOT, 'dist', 'test', 'index_synthetic.js'))});
      const ix = buildSynthetic(Number(process.argv[1])); for (let i = 0; i < 6; i++) ix.save(${JSON.stringify(dir)});`;
    const run = (seed: number) => new Promise<number>((resolve) => {
      const p = spawn(process.execPath, ['-e', script, String(seed)], { stdio: ['ignore', 'ignore', 'inherit'] });
      p.once('exit', (code) => resolve(code ?? -1));
    });
    assert.deepEqual(await Promise.all([run(1), run(2)]), [0, 0], 'no save failed');
    assert.ok([1500, 1700].includes(HybridIndex.load(dir).size));
    assert.ok(!fs.existsSync(path.join(dir, 'LOCK')));
  });
});
