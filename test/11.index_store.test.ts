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
import * as zlib from 'node:zlib';
import { spawn } from 'node:child_process';
import { HybridIndex } from '../lib';
import { FIXTURES, ROOT } from './helpers';
import { SYNTH_DIM, buildSynthetic, syntheticEncoded } from './index_synthetic';
import { rewriteSegment } from './index_files_support';

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

  it('round-trips texts and metadata, and loads a version-1 directory (which has none) with the same results', () => {
    const index = buildSynthetic(1, 'bf16');
    const ids = Array.from({ length: 1500 }, (_, i) => (i % 2 ? `doc-1-${i}` : 100000 + i));
    const texts = ids.map((id, i) => (i % 5 ? `text of ${id}: "quoted", \\ ü 😀 \u2028` : undefined));
    const metadata = ids.map((_, i) => (i % 7 ? { lang: i % 3 ? 'en' : 'de', year: 2000 + (i % 25), nested: { tags: ['a', i] } } : undefined));
    index.add(ids, syntheticEncoded(1, 1500), { texts, metadata });
    index.remove([100002, 'doc-1-5']);
    const dir = freshDir();
    index.save(dir);
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'MANIFEST'), 'utf8'));
    assert.equal(manifest.version, 2);
    assert.equal(fs.readFileSync(path.join(dir, manifest.segment)).readUInt32LE(8), 2, 'the segment is version 2');
    const loaded = HybridIndex.load(dir);
    for (const id of ids) assert.deepEqual(loaded.get(id), index.get(id));
    assert.deepEqual(fingerprint(loaded), fingerprint(index));
    const en = { k: 5, filter: { lang: 'en', year: { gte: 2010 } } };
    assert.deepEqual(loaded.search(queries.row(0), en), index.search(queries.row(0), en));
    const hits = loaded.search(queries.row(0), en);
    assert.equal(hits.length, 5);
    assert.ok(hits.every((h) => h.metadata?.lang === 'en' && (h.metadata.year as number) >= 2010 && h.text === texts[ids.indexOf(h.id)]));

    // The same directory as version 1 wrote it: no texts or metadata sections, version 1 throughout.
    rewriteSegment(dir, (sections) => {
      sections.delete('texts');
      sections.delete('metadata');
    }, { version: 1 });
    const old = HybridIndex.load(dir);
    assert.equal(old.size, index.size);
    assert.deepEqual(fingerprint(old), fingerprint(index).map((hits) => hits.map(({ text: _t, metadata: _m, ...rest }) => rest)));
    assert.deepEqual(old.get(ids[1]), { id: ids[1] });
    assert.deepEqual(old.search(queries.row(0), en), [], 'no document has metadata');
    assert.equal(old.search(queries.row(0), { k: 5, filter: { lang: { exists: false } } }).length, 5);
    old.add([ids[1]], syntheticEncoded(1, 2).slice(1, 2), { texts: ['again'] });
    old.save(dir);
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'MANIFEST'), 'utf8')).version, 2, 'a save writes version 2');
    assert.deepEqual(HybridIndex.load(dir).get(ids[1]), { id: ids[1], text: 'again' });
  });

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
    fails('ERR_MODEL_FILES', /MANIFEST.*version 99.*reads versions 1 and 2/);
    fs.writeFileSync(manifest, '{ broken');
    fails('ERR_MODEL_FILES', /MANIFEST.*not valid JSON/);
    fs.writeFileSync(manifest, JSON.stringify(m));
    fails('ERR_MODEL_LAYOUT', /built with the model dim 64, 1000 token ids, synthetic, not the given one dim 1024, 250002 token ids: search it with the model it was built with/, { model: { dim: 1024, vocabSize: 250002 } });
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

  describe('the HNSW graph of the approximate dense route', () => {
    const denseOnly = { k: 10, routes: ['dense'] as Array<'dense'>, weights: [1, 0, 0] as [number, number, number], denseCandidates: 30 };
    const COUNT = 2000;
    function hnswIndex(): HybridIndex {
      const ix = HybridIndex.create({ dim: SYNTH_DIM, vocabSize: 1000, dense: 'hnsw' });
      ix.add(Array.from({ length: COUNT }, (_, i) => `d${i}`), syntheticEncoded(5, COUNT));
      return ix;
    }
    const manifestOf = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'MANIFEST'), 'utf8'));
    const graphFiles = (dir: string) => fs.readdirSync(dir).filter((f) => f.startsWith('graph-')).sort();
    const ids = (hits: Array<{ id: unknown }>) => hits.map((h) => h.id);

    it('is saved next to the vectors and read back, not rebuilt', (t) => {
      const ix = hnswIndex();
      ix.remove(['d3', 'd7']);  // save compacts: the saved graph is keyed by the renumbered slots
      const dir = freshDir();
      ix.save(dir);
      const { graph } = manifestOf(dir);
      assert.match(graph.file, /^graph-[\w-]+\.usearch$/);
      assert.equal(fs.statSync(path.join(dir, graph.file)).size, graph.bytes);
      const warn = t.mock.method(process, 'emitWarning');
      const loaded = HybridIndex.load(dir);
      assert.equal(warn.mock.callCount(), 0);
      assert.equal(loaded.denseRoute, 'hnsw', 'the saved route is the default');
      assert.equal(loaded.size, COUNT - 2);
      for (let q = 0; q < queries.count; q++) assert.deepEqual(loaded.search(queries.row(q), denseOnly), ix.search(queries.row(q), denseOnly));
      assert.equal(HybridIndex.load(dir, { dense: 'exact' }).denseRoute, 'exact');
      ix.save(dir);
      ix.save(dir);
      assert.equal(graphFiles(dir).length, 2, 'the current and the previous graph are kept, older ones removed');
      // Saved with the exact route: no graph; the files of older generations go as saves follow.
      const exact = HybridIndex.load(dir, { dense: 'exact' });
      exact.save(dir);
      assert.equal(manifestOf(dir).graph, undefined);
      exact.save(dir);
      assert.deepEqual(graphFiles(dir), []);
      assert.equal(HybridIndex.load(dir).denseRoute, 'exact');
      assert.equal(HybridIndex.load(dir, { dense: 'hnsw' }).search(queries.row(0), denseOnly).length, 10, 'built from the vectors');
      assert.equal(warn.mock.callCount(), 0, 'no graph saved is no warning');
    });

    it('the candidates come from the saved graph file', () => {
      // A graph whose key j holds document COUNT-1-j's vector: the dense route then recalls
      // mirrored documents, which proves load() used the file rather than the vectors.
      const dir = freshDir();
      hnswIndex().save(dir);
      const m = manifestOf(dir);
      const docs = syntheticEncoded(5, COUNT);
      const mirrored = new Float32Array(docs.dense!.length);
      for (let j = 0; j < COUNT; j++) mirrored.set(docs.row(COUNT - 1 - j).dense!, j * SYNTH_DIM);
      const { Index } = require('usearch');
      const graph = new Index({ dimensions: SYNTH_DIM, metric: 'ip', connectivity: 16, expansion_add: 128, expansion_search: 128 });
      graph.add(BigUint64Array.from({ length: COUNT }, (_, i) => BigInt(i)), mirrored);
      const file = path.join(dir, m.graph.file);
      graph.save(file);
      const bytes = fs.readFileSync(file);
      fs.writeFileSync(path.join(dir, 'MANIFEST'), JSON.stringify({ ...m, graph: { file: m.graph.file, bytes: bytes.length, crc32: zlib.crc32(bytes) } }));
      const loaded = HybridIndex.load(dir);
      const exact = HybridIndex.load(dir, { dense: 'exact' });
      const one = { ...denseOnly, k: 1, denseCandidates: 1 };
      for (let q = 0; q < queries.count; q++) {
        const want = exact.search(queries.row(q), one)[0].id as string;
        assert.equal(loaded.search(queries.row(q), one)[0].id, `d${COUNT - 1 - Number(want.slice(1))}`);
      }
    });

    it('a damaged or missing graph file is rebuilt from the vectors, with a warning that names it', (t) => {
      const dir = freshDir();
      hnswIndex().save(dir);
      const file = path.join(dir, manifestOf(dir).graph.file);
      const original = fs.readFileSync(file);
      const exact = HybridIndex.load(dir, { dense: 'exact' });
      const warn = t.mock.method(process, 'emitWarning', () => {});
      const damaged = Buffer.from(original);
      damaged[damaged.length >> 1] ^= 0x10;
      for (const [bytes, why] of [[damaged, /checksum/], [original.subarray(0, 1000), /has 1000 bytes but MANIFEST says/], [null, /missing/]] as const) {
        if (bytes) fs.writeFileSync(file, bytes); else fs.rmSync(file);
        const before = warn.mock.callCount();
        const loaded = HybridIndex.load(dir);
        assert.equal(warn.mock.callCount(), before + 1);
        const message = String(warn.mock.calls[before].arguments[0]);
        assert.match(message, /rebuilding the HNSW graph/);
        assert.ok(message.includes(file) && why.test(message), message);
        let found = 0;
        for (let q = 0; q < queries.count; q++) {
          const want = ids(exact.search(queries.row(q), denseOnly));
          found += ids(loaded.search(queries.row(q), denseOnly)).filter((id) => want.includes(id)).length;
        }
        assert.ok(found >= 0.9 * 10 * queries.count, `recall of the rebuilt graph ${found}`);
      }
    });
  });

  it('a LOCK file or temp files left by a killed save do not block or accumulate', () => {
    const dir = freshDir();
    const ix = buildSynthetic(1);
    ix.save(dir);
    // What a save killed at the wrong moment leaves (this version's LOCK, an older version's
    // private lock file, a MANIFEST temp file): nobody holds a lock on them.
    fs.writeFileSync(path.join(dir, 'LOCK'), '12345');
    fs.writeFileSync(path.join(dir, 'LOCK.4242.abc123'), '4242');
    fs.writeFileSync(path.join(dir, 'MANIFEST.4242.deadbeef.tmp'), '{');
    const started = Date.now();
    ix.save(dir);
    assert.ok(Date.now() - started < 5000, 'no wait for a lock nobody holds');
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('LOCK') || f.endsWith('.tmp')), [], 'no lock or temp files left');
    assert.equal(HybridIndex.load(dir).size, ix.size);
  });

  it('the lock excludes other processes, and a holder killed with SIGKILL releases it', async () => {
    const dir = freshDir();
    fs.mkdirSync(dir);
    const store = JSON.stringify(path.join(ROOT, 'dist', 'lib', 'retrieval', 'index_store.js'));
    // Each process enters the lock 300 times; inside, it creates a marker file exclusively.
    const stress = `const fs = require('fs'); const { withDirectoryLock } = require(${store});
      let overlaps = 0; const marker = ${JSON.stringify(path.join(dir, 'INSIDE'))};
      for (let i = 0; i < 300; i++) withDirectoryLock(${JSON.stringify(dir)}, () => {
        try { fs.writeFileSync(marker, '', { flag: 'wx' }); } catch { overlaps++; return; }
        const until = Date.now() + 1; while (Date.now() < until);
        fs.rmSync(marker);
      });
      process.stdout.write(String(overlaps));`;
    const run = (script: string) => new Promise<string>((resolve) => {
      const p = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      p.stdout.on('data', (d) => { out += d; });
      p.once('exit', () => resolve(out));
    });
    assert.deepEqual(await Promise.all([run(stress), run(stress), run(stress)]), ['0', '0', '0'], 'never two holders at once');
    // A holder that never releases (killed while inside): the next one gets the lock at once.
    const holder = spawn(process.execPath, ['-e', `require(${store}).withDirectoryLock(${JSON.stringify(dir)}, () => { console.log('in'); for (;;); });`],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve) => holder.stdout.once('data', resolve));
    const { withDirectoryLock } = await import('../lib/retrieval/index_store');
    assert.throws(() => withDirectoryLock(dir, () => 1, 200), /LOCK' stayed locked for 0 s by process \d+; another save/);
    holder.kill('SIGKILL');
    await new Promise((resolve) => holder.once('exit', resolve));
    const started = Date.now();
    assert.equal(withDirectoryLock(dir, () => 7, 5000), 7);
    assert.ok(Date.now() - started < 1000);
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
