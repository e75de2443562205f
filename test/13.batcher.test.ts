/**
 * Batcher: coalesced requests give the PyTorch reference's values (golden.json) and the same
 * results as encoding each request alone; requests with other outputs or lengths are batched
 * apart or together correctly; abort, queue limits, close(), stats and events.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { BGEM3, Batcher, type BatchInfo, type EncodeOutput } from '../lib';
import { DEMO_MODEL, assertClose, golden, longText, rejectsWith } from './helpers';

const dim = golden.dim;

function sameOutputs(actual: EncodeOutput, expected: EncodeOutput, what: string): void {
  assert.equal(actual.count, expected.count, `${what}: count`);
  assert.equal(!!actual.dense, !!expected.dense, `${what}: dense present`);
  assert.equal(!!actual.sparse, !!expected.sparse, `${what}: sparse present`);
  assert.equal(!!actual.colbert, !!expected.colbert, `${what}: colbert present`);
  if (expected.dense) assertClose(actual.dense!, expected.dense, `${what} dense`);
  if (expected.sparse) {
    assert.deepEqual(Array.from(actual.sparse!.offsets), Array.from(expected.sparse.offsets), `${what} sparse offsets`);
    assert.deepEqual(Array.from(actual.sparse!.ids), Array.from(expected.sparse.ids), `${what} sparse ids`);
    assertClose(actual.sparse!.weights, expected.sparse.weights, `${what} sparse weights`);
  }
  if (expected.colbert) {
    assert.deepEqual(Array.from(actual.colbert!.offsets), Array.from(expected.colbert.offsets), `${what} colbert offsets`);
    assertClose(actual.colbert!.data, expected.colbert.data, `${what} colbert`);
  }
}

describe('Batcher', () => {
  let model: BGEM3;
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
  });
  after(async () => {
    await model.dispose();
  });

  it("sizes its batches by the model's device: 16384 tokens on the CPU, 131072 on a GPU, unless told", async () => {
    assert.equal(model.device, 'cpu');
    const cpu = new Batcher(model);
    assert.equal(cpu.maxBatchTokens, 16384);
    // A stand-in for a model loaded with device 'cuda' (no GPU here): the batcher reads only its device.
    const onGpu = Object.assign(Object.create(Object.getPrototypeOf(model)), model, { device: 'cuda' }) as BGEM3;
    const gpu = new Batcher(onGpu);
    assert.equal(gpu.maxBatchTokens, 131072);
    const told = new Batcher(onGpu, { maxBatchTokens: 4096 });
    assert.equal(told.maxBatchTokens, 4096);
    await Promise.all([cpu.close(), gpu.close(), told.close()]);
  });

  it('coalesced requests match the PyTorch reference values', async () => {
    const batcher = new Batcher(model, { maxWaitMs: 50 });
    const batches: BatchInfo[] = [];
    batcher.on('batch', (info: BatchInfo) => batches.push(info));
    const outs = await Promise.all(golden.cases.map((c) =>
      batcher.encode(c.text, { colbert: true, maxLength: c.maxLength ?? undefined })));
    // All requests share outputs, so they travel together whatever their maxLength.
    assert.equal(batches.length, 1, `one batch, got ${batches.map((b) => b.requests).join(', ')}`);
    assert.equal(batches[0].requests, golden.cases.length);
    golden.cases.forEach((c, i) => {
      const row = outs[i].row(0);
      assertClose(row.dense!, c.dense, `${c.name} dense`);
      const ids = Object.keys(c.sparse).map(Number).sort((a, b) => a - b);
      assert.deepEqual(Array.from(row.sparse!.ids), ids, `${c.name} sparse ids`);
      assertClose(row.sparse!.weights, ids.map((id) => c.sparse[String(id)]), `${c.name} sparse weights`);
      assertClose(row.colbert!, c.colbert.flat(), `${c.name} colbert`);
    });
    await batcher.close();
  });

  it('mixed outputs and lengths: each request equals its own encode()', async () => {
    const batcher = new Batcher(model, { maxWaitMs: 30, maxBatchTexts: 7 });
    const batches: BatchInfo[] = [];
    batcher.on('batch', (info: BatchInfo) => batches.push(info));
    const texts = ['short', 'a somewhat longer text about retrieval', longText(120), 'x', '', 'mixed batch'];
    const kinds = [
      { dense: true, sparse: false }, { dense: true, sparse: true }, { dense: false, sparse: false, colbert: true },
      { dense: true, sparse: true, colbert: true }, { dense: false, sparse: true, maxLength: 9 },
    ] as const;
    const requests = Array.from({ length: 24 }, (_, i) => ({
      texts: i % 5 === 0 ? [texts[i % texts.length]] : [texts[i % texts.length], texts[(i + 2) % texts.length]],
      options: { ...kinds[i % kinds.length], ...(i % 3 === 0 ? { maxLength: 12 } : {}) },
    }));
    const outs = await Promise.all(requests.map((r) => batcher.encode(r.texts, r.options)));
    for (let i = 0; i < requests.length; i++) {
      sameOutputs(outs[i], await model.encode(requests[i].texts, requests[i].options), `request ${i}`);
    }
    assert.ok(batches.length < requests.length, `requests were coalesced (${batches.length} batches for ${requests.length})`);
    assert.ok(batches.every((b) => b.texts <= 7 || b.requests === 1), 'maxBatchTexts holds');
    const stats = batcher.stats();
    assert.equal(stats.requests, requests.length);
    assert.equal(stats.texts, requests.reduce((n, r) => n + r.texts.length, 0));
    assert.equal(stats.batches, batches.length);
    assert.equal(stats.queued, 0);
    assert.equal(stats.inFlight, 0);
    assert.ok(stats.tokensPerSecond > 0 && stats.meanRunMs > 0);
    await batcher.close();
  });

  it('does not make a lone client wait for company that never comes', async () => {
    const batcher = new Batcher(model, { maxWaitMs: 100 });
    const waits: number[] = [];
    batcher.on('batch', (info: BatchInfo) => waits.push(info.maxWaitMs));
    for (let i = 0; i < 12; i++) await batcher.encode(`sequential request ${i}`);
    assert.ok(waits[0] >= 90, `the first request waits for company (${waits[0].toFixed(1)} ms)`);
    for (const w of waits.slice(-4)) assert.ok(w < 50, `later ones go at once (${waits.map((x) => x.toFixed(0)).join(', ')} ms)`);
    // A burst still shares batches after that.
    const burst: BatchInfo[] = [];
    batcher.on('batch', (info: BatchInfo) => burst.push(info));
    await Promise.all(Array.from({ length: 12 }, (_, i) => batcher.encode(`burst ${i}`)));
    assert.ok(burst.length < 12, `a burst is coalesced (${burst.map((b) => b.requests).join(', ')})`);
    await batcher.close();
  });

  it('counts tokens as the tokenizer does and respects the token budget', async () => {
    const batcher = new Batcher(model, { maxWaitMs: 50, maxBatchTokens: 40 });
    const batches: BatchInfo[] = [];
    batcher.on('batch', (info: BatchInfo) => batches.push(info));
    const texts = Array.from({ length: 8 }, (_, i) => `text number ${i} with a few words`);
    await Promise.all(texts.map((t) => batcher.encode(t)));
    const tokens = await model.tokenize(texts);
    assert.equal(batches.reduce((n, b) => n + b.tokens, 0), tokens.ids.length);
    assert.ok(batches.length >= Math.ceil(tokens.ids.length / 40), 'budget splits the requests');
    assert.ok(batches.every((b) => b.tokens <= 40 || b.requests === 1));
    await batcher.close();
  });

  it('abort removes a queued request; the others still get their results', async () => {
    const batcher = new Batcher(model, { maxWaitMs: 200 });
    const batches: BatchInfo[] = [];
    batcher.on('batch', (info: BatchInfo) => batches.push(info));
    const controller = new AbortController();
    const a = batcher.encode('to be aborted', { signal: controller.signal });
    const b = batcher.encode('kept');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(batcher.stats().queued, 2);
    controller.abort();
    await rejectsWith(a, 'ERR_ABORTED');
    assert.equal(batcher.stats().queued, 1);
    sameOutputs(await b, await model.encode('kept'), 'kept');
    assert.equal(batches.length, 1);
    assert.equal(batches[0].requests, 1);
    assert.equal(batcher.stats().aborted, 1);
    // An already-aborted signal rejects at once.
    await rejectsWith(batcher.encode('x', { signal: AbortSignal.abort() }), 'ERR_ABORTED');
    await batcher.close();
  });

  it('abort of the only request in a running batch rejects it and leaves the batcher working', async () => {
    const batcher = new Batcher(model, { maxWaitMs: 0 });
    const controller = new AbortController();
    const batches: BatchInfo[] = [];
    batcher.on('batch', (info: BatchInfo) => batches.push(info));
    const running = batcher.encode(Array.from({ length: 2000 }, (_, i) => `${i} ${longText(60)}`), { colbert: true, signal: controller.signal });
    while (batcher.stats().inFlight === 0) await new Promise((r) => setImmediate(r));
    controller.abort();
    await rejectsWith(running, 'ERR_ABORTED');
    // The batch had no other request, so it was cancelled rather than run to the end.
    while (batches.length === 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(batches[0].error?.message.includes('abort'), true, `batch ended with ${batches[0].error?.message}`);
    sameOutputs(await batcher.encode('after'), await model.encode('after'), 'after abort');
    await batcher.close();
  });

  it('a full queue rejects with ERR_QUEUE_FULL (requests and tokens)', async () => {
    const byCount = new Batcher(model, { maxWaitMs: 100, maxQueue: 2 });
    const first = [byCount.encode('one'), byCount.encode('two')];
    await rejectsWith(byCount.encode('three'), 'ERR_QUEUE_FULL', /2 requests are waiting/);
    await Promise.all(first);
    assert.equal(byCount.stats().rejectedQueueFull, 1);
    await byCount.close();

    const byTokens = new Batcher(model, { maxWaitMs: 100, maxBatchTokens: 100, maxQueueTokens: 10 });
    const queued = byTokens.encode('a text of several tokens');
    await new Promise((r) => setTimeout(r, 10));
    await rejectsWith(byTokens.encode('another text of several tokens'), 'ERR_QUEUE_FULL', /tokens are waiting/);
    await queued;
    await byTokens.close();
  });

  it('close() answers queued requests, then refuses new ones', async () => {
    const batcher = new Batcher(model, { maxWaitMs: 5000 });
    const pending = [batcher.encode('queued one'), batcher.encode(['queued', 'two'], { colbert: true })];
    await new Promise((r) => setTimeout(r, 10));
    const started = Date.now();
    await batcher.close();
    assert.ok(Date.now() - started < 4000, 'close flushes the queue without waiting for maxWaitMs');
    const [one, two] = await Promise.all(pending);
    sameOutputs(one, await model.encode('queued one'), 'queued one');
    sameOutputs(two, await model.encode(['queued', 'two'], { colbert: true }), 'queued two');
    await rejectsWith(batcher.encode('late'), 'ERR_DISPOSED');
    await batcher.close();
  });

  it('truncate: false rejects a text longer than maxLength with ERR_TOO_LONG', async () => {
    const batcher = new Batcher(model);
    await rejectsWith(batcher.encode(['fits', longText(100)], { maxLength: 16, truncate: false }), 'ERR_TOO_LONG', /text 1 has \d+ tokens, more than the limit of 16/);
    const cut = await batcher.encode(longText(100), { maxLength: 16 });
    assert.equal(cut.sparse!.offsets.length, 2);
    await batcher.close();
  });

  it('an empty request resolves with empty outputs', async () => {
    const batcher = new Batcher(model);
    const out = await batcher.encode([], { colbert: true });
    assert.equal(out.count, 0);
    assert.equal(out.dense!.length, 0);
    assert.equal(out.colbert!.offsets.length, 1);
    await batcher.close();
  });

  it('refuses bad options with ERR_INPUT', async () => {
    assert.throws(() => new Batcher(model, { maxWaitMs: -1 }), /maxWaitMs/);
    assert.throws(() => new Batcher(model, { maxBatchTokens: 1.5 }), /maxBatchTokens/);
    assert.throws(() => new Batcher({} as BGEM3), /a loaded BGEM3 model/);
    const batcher = new Batcher(model);
    await rejectsWith(batcher.encode('x', { dense: false, sparse: false }), 'ERR_INPUT', /request at least one output/);
    await rejectsWith(batcher.encode('x', { dense: 'yes' as unknown as boolean }), 'ERR_INPUT', /dense/);
    await rejectsWith(batcher.encode(42 as unknown as string), 'ERR_INPUT', /texts/);
    await rejectsWith(batcher.encode('x', { maxLength: 1 }), 'ERR_INPUT', /maxLength/);
    await batcher.close();
  });

  it('encodeTokens equals encode on tokenize()\'s output and checks its input', async () => {
    const texts = ['alpha beta', longText(80), ''];
    const tokens = await model.tokenize(texts, { maxLength: 20 });
    const expected = await model.encode(texts, { colbert: true, maxLength: 20 });
    sameOutputs(await model.encodeTokens(tokens, { colbert: true }), expected, 'encodeTokens');
    assert.deepEqual(Array.from(expected.tokens!), [0, 1, 2].map((i) => tokens.offsets[i + 1] - tokens.offsets[i]));
    const vocab = model.info().vocabSize;
    await rejectsWith(model.encodeTokens({ ids: Int32Array.of(0, vocab, 2), offsets: Uint32Array.of(0, 3) }), 'ERR_INPUT', new RegExp(`ids\\[1\\] is ${vocab}`));
    await rejectsWith(model.encodeTokens({ ids: Int32Array.of(0, 2), offsets: Uint32Array.of(0, 3) }), 'ERR_INPUT', /end at ids.length/);
    await rejectsWith(model.encodeTokens({ ids: Int32Array.of(0, 2), offsets: Uint32Array.of(0, 0, 2) }), 'ERR_INPUT', /text 0 has 0 tokens/);
    await rejectsWith(model.encodeTokens({ ids: [0, 2], offsets: [0, 2] } as never), 'ERR_INPUT', /Int32Array/);
    await rejectsWith(model.encodeTokens({ ids: new Int32Array(100).fill(5), offsets: Uint32Array.of(0, 100) }), 'ERR_INPUT', /100 tokens/);
    await rejectsWith(model.encodeTokens({ ids: Int32Array.of(0), offsets: Uint32Array.of(0, 1) }), 'ERR_INPUT', /text 0 has 1 tokens; each text needs 2 to/);
    await rejectsWith(model.encodeTokens({ ids: Int32Array.of(0, 2, 5, 6, 7), offsets: Uint32Array.of(0, 2, 5) }), 'ERR_INPUT',
      /text 1 is \[5 … 7\]; each text must start with <s> \(id 0\) and end with <\/s> \(id 2\)/);
  });

  it('shares no state between a batch\'s callers beyond read-only views', async () => {
    const batcher = new Batcher(model, { maxWaitMs: 30 });
    const [a, b] = await Promise.all([batcher.encode(['first', 'second']), batcher.encode('third')]);
    assert.equal(a.count, 2);
    assert.equal(b.count, 1);
    assert.equal(a.dense!.length, 2 * dim);
    assert.equal(b.sparse!.offsets[0], 0, 'offsets are rebased per request');
    assert.equal(b.sparse!.offsets[1], b.sparse!.ids.length);
    await batcher.close();
  });
});
