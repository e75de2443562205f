/** Every error path: a clear M3Error with a stable code, and a model that stays usable. */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BGEM3, colbertScore, denseScore, lexicalScore } from '../lib';
import { DEMO_MODEL, FIXTURES, ROOT, rejectsWith } from './helpers';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-errors-'));
let counter = 0;

/** A copy of a fixture model directory that a test may break. */
function copyModel(src = DEMO_MODEL): string {
  const dst = path.join(tmpRoot, `model-${counter++}`);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}

after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

describe('encode arguments', () => {
  let model: BGEM3;
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
  });
  after(() => model.dispose());

  const bad: Array<[string, () => Promise<unknown>, RegExp]> = [
    ['a number as texts', () => model.encode(42 as never), /texts/],
    ['null as texts', () => model.encode(null as never), /texts/],
    ['a non-string element', () => model.encode(['ok', 7 as never]), /texts\[1\]/],
    ['maxLength 1', () => model.encode(['x'], { maxLength: 1 }), /maxLength/],
    ['maxLength above the position table', () => model.encode(['x'], { maxLength: 65 }), /maxLength 65 exceeds this model's 64 usable positions/],
    ['a fractional maxLength', () => model.encode(['x'], { maxLength: 10.5 }), /maxLength/],
    ['batchSize 0', () => model.encode(['x'], { batchSize: 0 }), /batchSize/],
    ['a string batchSize', () => model.encode(['x'], { batchSize: '8' as never }), /batchSize/],
    ['maxBatchTokens 1', () => model.encode(['x'], { maxBatchTokens: 1 }), /maxBatchTokens/],
    ['maxAttentionBytes under 1 MiB', () => model.encode(['x'], { maxAttentionBytes: 1000 }), /maxAttentionBytes/],
    ['no output requested', () => model.encode(['x'], { dense: false, sparse: false }), /at least one/],
    ['a non-boolean flag', () => model.encode(['x'], { colbert: 'yes' as never }), /colbert/],
    ['a non-signal', () => model.encode(['x'], { signal: {} as never }), /signal/],
    ['pairs that are not pairs', () => model.computeScore([['q']] as never), /pairs\[0\]/],
    ['negative weights', () => model.computeScore([['q', 'p']], { weights: [-1, 1, 1] }), /weights/],
    ['zero weights', () => model.computeScore([['q', 'p']], { weights: [0, 0, 1] }), /divide by zero/],
  ];
  for (const [name, call, message] of bad) {
    it(`rejects ${name} with ERR_INPUT`, async () => {
      await rejectsWith(call, 'ERR_INPUT', message);
    });
  }

  it('stays usable after bad input; empty strings are valid texts', async () => {
    const out = await model.encode(['', '  ', 'fine']);
    assert.equal(out.count, 3);
    assert.ok(out.dense!.every(Number.isFinite));
  });

  it('row() refuses out-of-range indices', async () => {
    const out = await model.encode(['x']);
    assert.throws(() => out.row(1), RangeError);
  });
});

describe('scoring arguments', () => {
  it('rejects mismatched or malformed inputs', () => {
    const code = (fn: () => unknown) => assert.throws(fn, (e: { code?: string }) => e.code === 'ERR_INPUT');
    code(() => denseScore(new Float32Array(2), new Float32Array(3)));
    code(() => denseScore([1, 2] as never, new Float32Array(2)));
    code(() => lexicalScore({ ids: Uint32Array.of(2, 1), weights: Float32Array.of(1, 1) }, { ids: new Uint32Array(0), weights: new Float32Array(0) }));
    code(() => lexicalScore({ ids: Uint32Array.of(1), weights: new Float32Array(0) }, { ids: new Uint32Array(0), weights: new Float32Array(0) }));
    code(() => colbertScore(new Float32Array(5), new Float32Array(4), 2));
    code(() => colbertScore(new Float32Array(4), new Float32Array(4), 0));
    assert.equal(colbertScore(new Float32Array(4), new Float32Array(0), 2), 0, 'an empty passage scores 0');
  });
});

describe('load errors', () => {
  const loadFails = async (dir: string, code: string, message: RegExp, options = {}) =>
    rejectsWith(BGEM3.load(dir, options), code, message);

  it('a missing directory', () => loadFails(path.join(tmpRoot, 'nope'), 'ERR_MODEL_FILES', /does not exist/));

  it('no ONNX graph: names what was looked for and lists what was found', async () => {
    const dir = copyModel();
    fs.rmSync(path.join(dir, 'onnx'), { recursive: true });
    await loadFails(dir, 'ERR_MODEL_FILES', /onnx\/model\.onnx.*colbert_linear\.pt/);
  });

  it('a missing head file is named', async () => {
    const dir = copyModel();
    fs.rmSync(path.join(dir, 'sparse_linear.pt'));
    await loadFails(dir, 'ERR_MODEL_FILES', /sparse_linear\.pt/);
  });

  it('missing tokenizer.json', async () => {
    const dir = copyModel();
    fs.rmSync(path.join(dir, 'tokenizer.json'));
    await loadFails(dir, 'ERR_MODEL_FILES', /tokenizer\.json/);
  });

  it('missing external weights (model.onnx_data)', async () => {
    const dir = copyModel();
    fs.rmSync(path.join(dir, 'onnx', 'model.onnx_data'));
    await loadFails(dir, 'ERR_MODEL_FILES', /model\.onnx/);
  });

  it('a corrupted graph', async () => {
    const dir = copyModel();
    fs.writeFileSync(path.join(dir, 'onnx', 'model.onnx'), Buffer.from('this is not a protobuf at all'));
    await loadFails(dir, 'ERR_MODEL_FILES', /could not load/);
  });

  it('an unknown layout lists the outputs found', async () => {
    const dir = copyModel(path.join(FIXTURES, 'tiny-m3-baked'));
    const file = path.join(dir, 'model.onnx');
    // Same-length renames keep the protobuf valid.
    const bytes = fs.readFileSync(file, 'latin1')
      .replaceAll('dense_vecs', 'dense_xxxx').replaceAll('sparse_vecs', 'sparse_xxxx').replaceAll('colbert_vecs', 'colbert_xxxx');
    fs.writeFileSync(file, bytes, 'latin1');
    await loadFails(dir, 'ERR_MODEL_LAYOUT', /Unknown model layout.*dense_xxxx/);
  });

  const headCases: Array<[string, string, string, RegExp]> = [
    ['malicious.pt', 'colbert_linear.pt', 'ERR_MODEL_FILES', /os\.system|not allowed/],
    ['not_state_dict.pt', 'colbert_linear.pt', 'ERR_MODEL_FILES', /state dict/],
    ['truncated.pt', 'sparse_linear.pt', 'ERR_MODEL_FILES', /sparse_linear\.pt/],
    ['not_a_zip.pt', 'sparse_linear.pt', 'ERR_MODEL_FILES', /sparse_linear\.pt/],
    ['wrong_shape_colbert.pt', 'colbert_linear.pt', 'ERR_MODEL_LAYOUT', /shape/],
    ['missing_bias.pt', 'colbert_linear.pt', 'ERR_MODEL_LAYOUT', /bias/],
  ];
  for (const [bad, target, code, message] of headCases) {
    it(`a head file that is ${bad} -> ${code}`, async () => {
      const marker = '/tmp/pwned';
      const existed = fs.existsSync(marker);
      const dir = copyModel();
      fs.copyFileSync(path.join(FIXTURES, 'bad-weights', bad), path.join(dir, target));
      await loadFails(dir, code, message);
      if (!existed) assert.equal(fs.existsSync(marker), false, 'the pickle must not run code');
    });
  }

  it('a tokenizer with more ids than the embedding table', async () => {
    const dir = copyModel();
    const file = path.join(dir, 'tokenizer.json');
    const tok = JSON.parse(fs.readFileSync(file, 'utf8'));
    for (let i = 0; i < 50; i++) tok.model.vocab.push([`zzextra${i}`, -20]);
    fs.writeFileSync(file, JSON.stringify(tok));
    // config.json's vocab_size gives it away before any session runs (on every device) ...
    await loadFails(dir, 'ERR_MODEL_LAYOUT', /tokenizer and the model do not match: .*config\.json' gives the model \d+ \(vocab_size\)/);
    // ... and without one, the probe finds the graph rejecting the id (the CPU provider checks ids).
    const configFile = path.join(dir, 'config.json');
    const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
    delete config.vocab_size;
    fs.writeFileSync(configFile, JSON.stringify(config));
    await loadFails(dir, 'ERR_MODEL_LAYOUT', /tokenizer and the model do not match: .*rejects id/);
  });

  it('a tokenizer whose special ids are not XLM-R\'s', async () => {
    const dir = copyModel();
    const file = path.join(dir, 'tokenizer.json');
    const tok = JSON.parse(fs.readFileSync(file, 'utf8'));
    const [a, b] = [tok.model.vocab[0], tok.model.vocab[1]];
    tok.model.vocab[0] = b;
    tok.model.vocab[1] = a;
    for (const t of tok.added_tokens) if (t.content === '<s>') t.id = 1; else if (t.content === '<pad>') t.id = 0;
    fs.writeFileSync(file, JSON.stringify(tok));
    await loadFails(dir, 'ERR_MODEL_LAYOUT', /<s>/);
  });

  it('a config.json with a nonsensical num_attention_heads', async () => {
    const dir = copyModel();
    const configFile = path.join(dir, 'config.json');
    const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
    config.num_attention_heads = 'sixteen';
    fs.writeFileSync(configFile, JSON.stringify(config));
    await loadFails(dir, 'ERR_MODEL_LAYOUT', /num_attention_heads must be a positive integer, got "sixteen"/);
  });

  it('an unparsable config.json', async () => {
    const dir = copyModel();
    fs.writeFileSync(path.join(dir, 'config.json'), '{ not json');
    await loadFails(dir, 'ERR_MODEL_FILES', /config\.json/);
  });

  const badOptions: Array<[string, object, RegExp]> = [
    ['threads 0', { threads: 0 }, /threads/],
    ['an unknown device', { device: 'tpu' }, /device/],
    ['an unknown optimisation level', { graphOptimization: 'max' }, /graphOptimization/],
    ['maxLength beyond the position table', { maxLength: 100 }, /maxLength/],
    ['concurrency 0', { concurrency: 0 }, /concurrency/],
    ['gpuMemLimit on the CPU', { gpuMemLimit: 1 << 30 }, /gpuMemLimit limits the GPU arena of device 'cuda'/],
    ['allowTf32 on the CPU', { allowTf32: true }, /allowTf32 applies to device 'cuda'/],
    ['a non-boolean allowTf32', { device: 'cuda', allowTf32: 'yes' }, /true or false for allowTf32/],
    ['gpuMemLimit under 1 MiB', { device: 'cuda', gpuMemLimit: 1000 }, /gpuMemLimit/],
    ['a fractional gpuMemLimit', { device: 'cuda', gpuMemLimit: 1.5e9 + 0.5 }, /gpuMemLimit/],
  ];
  for (const [name, options, message] of badOptions) {
    it(`option ${name} -> ERR_INPUT`, () => loadFails(DEMO_MODEL, 'ERR_INPUT', message, options));
  }

  it("device 'cuda' without the provider libraries names the missing file and the fix", async (t) => {
    const { runtimeInfo } = await import('../lib');
    if (runtimeInfo().cudaMissing.length === 0) {
      t.skip('the CUDA provider libraries are installed here');
      return;
    }
    await loadFails(DEMO_MODEL, 'ERR_DEVICE', /libonnxruntime_providers_.*\.so.*ONNXRUNTIME_NODE_INSTALL=cuda12/, { device: 'cuda' });
  });

  it("CUDA provider libraries that do not load: info says why and load fails with the loader's error", async (t) => {
    // A folder holding a link to the real libonnxruntime and two empty provider files, preloaded
    // into a child process so the addon runs on that copy of the runtime.
    const { runtimeInfo } = await import('../lib');
    const real = path.join(runtimeInfo().ortLibraryDir, 'libonnxruntime.so.1');
    if (process.platform !== 'linux' || !fs.existsSync(real)) {
      t.skip('needs Linux and libonnxruntime.so.1');
      return;
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-fake-provider-'));
    try {
      fs.symlinkSync(real, path.join(dir, 'libonnxruntime.so.1'));
      for (const name of ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so']) fs.writeFileSync(path.join(dir, name), '');
      const script = `const { runtimeInfo, BGEM3 } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib'))});
        const info = runtimeInfo();
        BGEM3.load(${JSON.stringify(DEMO_MODEL)}, { device: 'cuda' })
          .then(() => ({ loaded: true }), (e) => ({ code: e.code, message: e.message }))
          .then((load) => console.log(JSON.stringify({ info, load })));`;
      const r = spawnSync(process.execPath, ['-e', script], {
        encoding: 'utf8', env: { ...process.env, LD_PRELOAD: path.join(dir, 'libonnxruntime.so.1') },
      });
      assert.equal(r.status, 0, r.stderr);
      const { info, load } = JSON.parse(r.stdout);
      assert.equal(info.ortLibraryDir, fs.realpathSync(dir), 'the child runs on the preloaded runtime');
      assert.deepEqual(info.cudaMissing, []);
      assert.ok(!info.usableProviders.includes('CUDAExecutionProvider'), 'a provider that does not load is not usable');
      // The legacy provider loads through providers_shared; a 1.22+ core without the provider built in loads the plugin itself.
      assert.match(info.cudaProviderError, /Failed to load library .*libonnxruntime_providers_(shared|cuda)\.so/);
      assert.equal(load.code, 'ERR_DEVICE');
      // The provider is loaded after ONNX Runtime's environment exists, so the loader's own error comes through.
      assert.match(load.message, /CUDA execution provider could not be enabled \(device 0\): .*Failed to load library .*libonnxruntime_providers_(shared|cuda)\.so/);
      assert.doesNotMatch(load.message, /DefaultLogger/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
