/**
 * Inputs that used to crash, hang or silently mislead the engine: weights whose combination
 * overflows, config.json that is not an object, NaN or Inf in the weights, a command line long
 * enough to overflow ONNX Runtime's stack, and HTTP clients that trickle or stall.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BGEM3 } from '../lib';
import { M3_ERROR_CODES, fromNative } from '../lib/base/errors';
import { checkWeights } from '../lib/scoring/fusion';
import { createServer, type M3Server } from '../lib/server';
import { DEMO_MODEL, FIXTURES, ROOT, assertClose, golden, rejectsWith } from './helpers';
import { buildSynthetic, syntheticEncoded } from './index_synthetic';

const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

/** A copy of a model directory to damage (files are copied, never linked). */
function copyModel(from: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-reliability-'));
  fs.cpSync(from, dir, { recursive: true, dereference: true });
  return dir;
}

/** Rewrites one float of a tensor in a .safetensors file. */
function poisonSafetensors(file: string, tensor: string, value: number): void {
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const [begin] = header[tensor].data_offsets as [number, number];
  const at = 8 + headerLength + begin;
  if (header[tensor].dtype === 'F16') bytes.writeUInt16LE(Number.isNaN(value) ? 0x7e00 : 0x7c00, at);
  else if (header[tensor].dtype === 'F32') bytes.writeFloatLE(value, at);
  else assert.fail(`unexpected dtype ${header[tensor].dtype}`);
  fs.writeFileSync(file, bytes);
}

describe('fusion weights cannot overflow', () => {
  const huge: [number, number, number] = [1e308, 1e308, 1e308];

  it('checkWeights scales to a largest weight of 1 and keeps proportions, down to subnormals', () => {
    assert.deepEqual(checkWeights(huge), [1, 1, 1]);
    assert.deepEqual(checkWeights([1e308, 5e307, 0]), [1, 0.5, 0]);
    assert.deepEqual(checkWeights([5e-324, 0, 5e-324]), [1, 0, 1]);
    for (const bad of [[Infinity, 1, 1], [NaN, 1, 1], [-1, 1, 1], [0, 0, 0], [1, 1], '1,1,1']) {
      assert.throws(() => checkWeights(bad), (e: Error & { code?: string }) => e.code === 'ERR_INPUT');
    }
    assert.throws(() => checkWeights([0, 0, 1], 'weights', { denseOrSparse: true }), /dense and sparse cannot both be 0/);
    assert.throws(() => checkWeights([0, 0, 1e308], 'weights', { colbert: false }), /all zero/);
  });

  describe('on a model', () => {
    let model: BGEM3;
    before(async () => { model = await BGEM3.load(DEMO_MODEL); });
    after(async () => { await model.dispose(); });

    it('computeScore gives the same fused scores for [1e308, 1e308, 1e308] as for [1, 1, 1]', async () => {
      const pairs = golden.scores.pairs.slice(0, 4);
      const plain = await model.computeScore(pairs, { weights: [1, 1, 1] });
      const big = await model.computeScore(pairs, { weights: huge });
      for (const key of ['sparse+dense', 'colbert+sparse+dense'] as const) {
        assert.ok(big[key].every(Number.isFinite), `${key}: ${Array.from(big[key])}`);
        assertClose(big[key], plain[key], key, 1e-6);
      }
      // Proportions survive: [3e307, 1.5e307, 3e307] is the paper-style [0.4, 0.2, 0.4].
      const scaled = await model.computeScore(pairs, { weights: [3e307, 1.5e307, 3e307] });
      const paper = await model.computeScore(pairs, { weights: [0.4, 0.2, 0.4] });
      assertClose(scaled['colbert+sparse+dense'], paper['colbert+sparse+dense'], 'scaled', 1e-6);
    });

    it('the HTTP routes answer overflowing weights like their scaled-down equivalent (and refuse 1e309)', async () => {
      const server: M3Server = await createServer({ model });
      try {
        const post = (url: string, payload: string) =>
          server.app.inject({ method: 'POST', url, payload, headers: { 'content-type': 'application/json' } });
        const pair = golden.scores.pairs[0];
        const score = await post('/score', JSON.stringify({ pairs: [pair], weights: huge }));
        const reference = await post('/score', JSON.stringify({ pairs: [pair], weights: [1, 1, 1] }));
        assert.equal(score.statusCode, 200, score.body);
        assertClose(score.json()['colbert+sparse+dense'], reference.json()['colbert+sparse+dense'], '/score', 1e-6);
        const docs = golden.scores.pairs.slice(0, 4).map((p) => p[1]);
        const rerank = await post('/rerank', JSON.stringify({ query: pair[0], documents: docs, weights: huge }));
        const rerankRef = await post('/rerank', JSON.stringify({ query: pair[0], documents: docs, weights: [1, 1, 1] }));
        assert.equal(rerank.statusCode, 200, rerank.body);
        const scores = (r: typeof rerank) => (r.json().results as Array<{ index: number; relevance_score: number }>);
        assert.deepEqual(scores(rerank).map((x) => x.index), scores(rerankRef).map((x) => x.index));
        assertClose(scores(rerank).map((x) => x.relevance_score), scores(rerankRef).map((x) => x.relevance_score), '/rerank', 1e-6);
        // JSON's 1e309 parses to Infinity: refused with a 400 that names the weights.
        const inf = await post('/score', `{"pairs": [["a", "b"]], "weights": [1e309, 1, 1]}`);
        assert.equal(inf.statusCode, 400, inf.body);
        assert.match(inf.json().error.message, /weights/);
      } finally {
        await server.close();
      }
    });
  });

  it('HybridIndex.search ranks with [1e308, 1e308, 1e308] exactly as with [1, 1, 1]', () => {
    const index = buildSynthetic(5);
    const queries = syntheticEncoded(77, 3);
    for (let i = 0; i < queries.count; i++) {
      const big = index.search(queries.row(i), { k: 10, weights: huge });
      const plain = index.search(queries.row(i), { k: 10, weights: [1, 1, 1] });
      assert.deepEqual(big.map((h) => h.id), plain.map((h) => h.id));
      assert.ok(big.every((h) => Number.isFinite(h.score)));
      assertClose(big.map((h) => h.score), plain.map((h) => h.score), `query ${i}`, 1e-6);
    }
  });
});

describe('model files that used to load or encode without a coded error', () => {
  it('config.json holding null, an array, a number or a string is ERR_MODEL_FILES naming the file', async () => {
    const dir = copyModel(DEMO_MODEL);
    for (const text of ['null', '[]', '42', '"x"']) {
      fs.writeFileSync(path.join(dir, 'config.json'), text);
      await rejectsWith(BGEM3.load(dir), 'ERR_MODEL_FILES', /config\.json' holds .*not a JSON object/);
    }
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ max_position_embeddings: null, num_attention_heads: null }));
    const model = await BGEM3.load(dir);  // null fields are absent fields: BGE-M3's defaults
    await model.dispose();
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ max_position_embeddings: 66, pad_token_id: 'one' }));
    await rejectsWith(BGEM3.load(dir), 'ERR_MODEL_LAYOUT', /pad_token_id must be a non-negative integer/);
  });

  it('a FIFO, or a link to one, among the model files is refused at load instead of blocking it', async () => {
    for (const file of ['config.json', 'tokenizer.json', path.join('onnx', 'model.onnx_data'), 'colbert_linear.pt']) {
      const dir = copyModel(DEMO_MODEL);
      fs.rmSync(path.join(dir, file));
      const fifo = spawnSync('mkfifo', [path.join(dir, file)]);
      assert.equal(fifo.status, 0, String(fifo.stderr));
      await rejectsWith(BGEM3.load(dir), 'ERR_MODEL_FILES', /is a FIFO \(named pipe\), not a regular file/);
    }
    const dir = copyModel(DEMO_MODEL);
    const fifo = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-fifo-')), 'elsewhere');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    fs.rmSync(path.join(dir, 'onnx', 'model.onnx_data'));
    fs.symlinkSync(fifo, path.join(dir, 'onnx', 'model.onnx_data'));
    await rejectsWith(BGEM3.load(dir), 'ERR_MODEL_FILES', /symbolic link to a FIFO/);
    await rejectsWith(BGEM3.load(path.join(dir, 'config.json')), 'ERR_INPUT', /config\.json' is a file; pass the model directory/);
  });

  it('NaN or Inf in a head file is refused at load, naming the file', async () => {
    for (const [value, tensor] of [[NaN, 'weight'], [Infinity, 'bias']] as const) {
      const dir = copyModel(path.join(FIXTURES, 'tiny-m3-safetensors'));
      poisonSafetensors(path.join(dir, 'sparse_linear.safetensors'), tensor, value);
      await rejectsWith(BGEM3.load(dir), 'ERR_MODEL_FILES', new RegExp(`sparse_linear\\.safetensors': ${tensor} holds a non-finite value`));
    }
  });

  it('NaN in the graph weights makes encode fail with ERR_MODEL_FILES naming the ONNX file, not NaN vectors', async () => {
    const dir = copyModel(DEMO_MODEL);
    const data = path.join(dir, 'onnx', 'model.onnx_data');
    const bytes = fs.readFileSync(data);
    for (let i = 0; i + 4 <= bytes.length; i += 4) bytes.writeFloatLE(NaN, i);
    fs.writeFileSync(data, bytes);
    const model = await BGEM3.load(dir);
    try {
      for (const options of [{ dense: true, sparse: false }, { dense: false, sparse: true }, { dense: false, sparse: false, colbert: true }]) {
        await rejectsWith(model.encode(['a text', 'another'], options), 'ERR_MODEL_FILES', /non-finite value .* text 0: the weights in '.*model\.onnx'/);
      }
    } finally {
      await model.dispose();
    }
  });

  it('an index refuses rows with NaN or Inf', () => {
    const index = buildSynthetic(3);
    const bad = syntheticEncoded(9, 2);
    bad.dense![5] = NaN;
    assert.throws(() => index.add(['x', 'y'], bad), (e: Error & { code?: string }) => e.code === 'ERR_INPUT' && /non-finite|NaN/.test(e.message));
    const worse = syntheticEncoded(9, 2);
    worse.sparse!.weights[0] = Infinity;
    assert.throws(() => index.add(['x', 'y'], worse), (e: Error & { code?: string }) => e.code === 'ERR_INPUT');
    assert.equal(index.search(syntheticEncoded(9, 1).row(0), { k: 50 }).some((h) => h.id === 'x'), false);
  });
});

describe('error codes', () => {
  it('every documented code survives the trip from the addon (ERR_TOO_LONG was turned into ERR_RUNTIME)', () => {
    for (const code of M3_ERROR_CODES) assert.equal(fromNative(Object.assign(new Error('x'), { code })).code, code);
    assert.equal(fromNative(Object.assign(new Error('x'), { code: 'EWHATEVER' })).code, 'ERR_RUNTIME');
  });
});

describe('releasing memory after a burst', () => {
  it('releaseMemory() keeps the outputs exact, with and without the arena, and is a no-op once disposed', async () => {
    const c = golden.cases.find((x) => x.maxLength === null)!;
    for (const memoryArena of [true, false]) {
      const model = await BGEM3.load(DEMO_MODEL, { memoryArena, releaseMemoryAfterMs: 0 });
      const burst = model.encode(Array.from({ length: 64 }, (_, i) => `${c.text} ${i}`), { colbert: true });
      const released = model.releaseMemory();  // queued behind the burst, and beside it
      await Promise.all([burst, released]);
      const out = await model.encode([c.text], { colbert: true });
      assertClose(out.dense!, c.dense, `dense after release (arena ${memoryArena})`);
      await model.dispose();
      await model.releaseMemory();
    }
    await rejectsWith(BGEM3.load(DEMO_MODEL, { releaseMemoryAfterMs: -5 }), 'ERR_INPUT', /releaseMemoryAfterMs/);
  });
});

describe('the CLI with a very long argument', () => {
  it('encodes a 60,000-character argument instead of dying in ONNX Runtime (SIGSEGV before)', () => {
    const text = 'word '.repeat(12_000);
    const env = { ...process.env };
    delete env.ORT_DISABLE_TELEMETRY;
    const r = spawnSync(process.execPath, [CLI, 'encode', text, 'short'], { encoding: 'utf8', env });
    assert.equal(r.signal, null, `killed by ${r.signal}`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).count, 2);
  });
});

describe('the server against trickling and stalled clients', () => {
  let model: BGEM3;
  before(async () => { model = await BGEM3.load(DEMO_MODEL); });
  after(async () => { await model.dispose(); });

  /** Opens a socket that sends `head`, then one byte of body every `everyMs` until closed. */
  function trickle(port: number, head: string, everyMs: number) {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (d) => { received += d.toString(); });
    socket.on('error', () => {});
    socket.write(head);
    const timer = setInterval(() => socket.write('x'), everyMs);
    const closed = new Promise<string>((resolve) => socket.on('close', () => { clearInterval(timer); resolve(received); }));
    return { socket, closed };
  }

  /**
   * The promise, or a failure after `ms`: a guard against waiting forever, far above the timeouts
   * under test (Node's own 30 s deadline check would end a trickle only after it).
   */
  function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
    return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms).unref())]);
  }

  it('a body trickled a byte at a time is answered 408 and the connection closed', async () => {
    const server = await createServer({ model, requestTimeoutMs: 400 });
    try {
      const port = Number(new URL(await server.listen({ port: 0 })).port);
      // 10,000 bytes at a byte per 50 ms would take over 8 minutes; the socket is never silent.
      const { closed } = trickle(port, 'POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"texts":"', 50);
      const answer = await within(closed, 15_000, 'trickled body');
      assert.match(answer, /^HTTP\/1\.1 408/);
      // Headers trickled the same way.
      const headers = trickle(port, 'POST /encode HTTP/1.1\r\nHost: x\r\nX-Slow: ', 50);
      assert.match(await within(headers.closed, 15_000, 'trickled headers'), /^HTTP\/1\.1 408/);
    } finally {
      await server.close();
    }
  });

  it('close() does not wait on a stalled client longer than the drain timeout', async () => {
    // A request timeout far longer than the test: only the drain timeout can end the connection.
    const server = await createServer({ model, requestTimeoutMs: 600_000, drainTimeoutMs: 200 });
    const port = Number(new URL(await server.listen({ port: 0 })).port);
    const { socket, closed } = trickle(port, 'POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"texts":"', 50);
    await new Promise((resolve) => setTimeout(resolve, 200));
    let done = false;
    const closing = server.close().then(() => { done = true; });
    await within(closing, 15_000, 'close()');
    assert.ok(done);
    await closed;
    assert.ok(socket.destroyed);
    await assert.rejects(createServer({ model, drainTimeoutMs: -1 }), /drainTimeoutMs must be an integer/);
  });
});
