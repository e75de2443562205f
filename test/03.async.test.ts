/** Concurrency, cancellation, disposal, the event loop during long encodes, and worker threads. */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { BGEM3 } from '../lib';
import { DEMO_MODEL, ROOT, assertClose, golden, rejectsWith } from './helpers';

/** Many texts near the demo model's 64-token limit: a few hundred ms of work. */
function manyTexts(n: number): string[] {
  return Array.from({ length: n }, (_, i) =>
    `the model reads passage ${i} about retrieval and lexical matching with many words to reach the limit of tokens`);
}

describe('concurrency', () => {
  let model: BGEM3;
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL, { concurrency: 2 });
  });
  after(() => model.dispose());

  it('10 concurrent encodes give the same results as sequential ones', async () => {
    const inputs = Array.from({ length: 10 }, (_, k) => golden.cases.slice(0, 1 + (k % golden.cases.length)).map((c) => c.text));
    const sequential: Array<Awaited<ReturnType<BGEM3["encode"]>>> = [];
    for (const texts of inputs) sequential.push(await model.encode(texts, { colbert: true, batchSize: 2 }));
    const concurrent = await Promise.all(inputs.map((texts) => model.encode(texts, { colbert: true, batchSize: 2 })));
    concurrent.forEach((out, k) => {
      assertClose(out.dense!, sequential[k].dense!, `call ${k} dense`, 0);
      assert.deepEqual(out.sparse!.ids, sequential[k].sparse!.ids);
      assertClose(out.colbert!.data, sequential[k].colbert!.data, `call ${k} colbert`, 0);
    });
  });
});

describe('cancellation', () => {
  let model: BGEM3;
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL, { concurrency: 1 });
  });
  after(() => model.dispose());

  it('an already aborted signal rejects at once', async () => {
    await rejectsWith(model.encode(['x'], { signal: AbortSignal.abort() }), 'ERR_ABORTED');
  });

  it('aborting a long single-batch run stops it, and the model keeps working', async () => {
    const texts = manyTexts(4000);
    const reference = await model.encode(texts.slice(0, 3));
    const controller = new AbortController();
    const running = model.encode(texts, { batchSize: texts.length, maxBatchTokens: 1 << 30, signal: controller.signal });
    setTimeout(() => controller.abort(), 300);
    await rejectsWith(running, 'ERR_ABORTED');
    const again = await model.encode(texts.slice(0, 3));
    assertClose(again.dense!, reference.dense!, 'dense after abort', 0);
  });

  it('aborting queued work rejects it while the run ahead of it completes', async () => {
    const controller = new AbortController();
    const first = model.encode(manyTexts(1500), { batchSize: 16 });
    const queued = model.encode(['queued text'], { signal: controller.signal });
    controller.abort();
    await rejectsWith(queued, 'ERR_ABORTED');
    const out = await first;
    assert.equal(out.count, 1500);
  });
});

describe('dispose', () => {
  it('use after dispose rejects with ERR_DISPOSED; dispose is idempotent', async () => {
    const model = await BGEM3.load(DEMO_MODEL);
    await model.dispose();
    await model.dispose();
    await rejectsWith(model.encode(['x']), 'ERR_DISPOSED');
    await rejectsWith(model.computeScore([['q', 'p']]), 'ERR_DISPOSED');
  });

  it('disposing during encodes settles every call (results or ERR_DISPOSED), never hangs', async () => {
    const model = await BGEM3.load(DEMO_MODEL);
    const calls = [model.encode(manyTexts(800), { batchSize: 8 }), model.encode(['a']), model.encode(['b', 'c'])];
    const disposing = model.dispose();
    const settled = await Promise.allSettled(calls);
    await disposing;
    for (const s of settled) {
      if (s.status === 'rejected') assert.equal((s.reason as { code?: string }).code, 'ERR_DISPOSED');
      else assert.ok(s.value.count > 0);
    }
  });

  it('await using disposes the model', async () => {
    let disposedModel: BGEM3 | undefined;
    {
      const model = await BGEM3.load(DEMO_MODEL);
      disposedModel = model;
      await model[Symbol.asyncDispose]();
    }
    await rejectsWith(disposedModel.encode(['x']), 'ERR_DISPOSED');
  });
});

describe('event loop', () => {
  it('stays responsive during a long encode (timer lag under 50 ms)', async () => {
    const model = await BGEM3.load(DEMO_MODEL);
    try {
      let worst = 0;
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        worst = Math.max(worst, now - last - 5);
        last = now;
      }, 5);
      const started = performance.now();
      await model.encode(manyTexts(2000), { batchSize: 2000, maxBatchTokens: 1 << 30 });
      const elapsed = performance.now() - started;
      clearInterval(timer);
      assert.ok(elapsed > 100, `the encode should be long enough to observe (${elapsed.toFixed(0)} ms)`);
      assert.ok(worst < 50, `worst timer lag ${worst.toFixed(1)} ms`);
    } finally {
      await model.dispose();
    }
  });
});

describe('worker threads', () => {
  const script = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { BGEM3 } = require(workerData.lib);
    (async () => {
      const model = await BGEM3.load(workerData.dir);
      const out = await model.encode(workerData.texts, { colbert: true });
      parentPort.postMessage({ dense: out.dense, colbert: out.colbert.data });
      // Left undisposed on purpose: the environment's cleanup must stop the model.
    })().catch((err) => parentPort.postMessage({ error: err.code + ': ' + err.message }));
  `;

  it('two workers encode concurrently with the same results as the main thread', async () => {
    const texts = golden.cases.map((c) => c.text);
    const model = await BGEM3.load(DEMO_MODEL);
    const expected = await model.encode(texts, { colbert: true });
    await model.dispose();
    const run = () => new Promise<{ dense: Float32Array; colbert: Float32Array }>((resolve, reject) => {
      const worker = new Worker(script, { eval: true, workerData: { lib: path.join(ROOT, 'dist', 'lib', 'index.js'), dir: DEMO_MODEL, texts } });
      worker.once('message', (m) => {
        void worker.terminate();
        if (m.error) reject(new Error(m.error));
        else resolve(m);
      });
      worker.once('error', reject);
    });
    const results = await Promise.all([run(), run()]);
    for (const r of results) {
      assertClose(r.dense, expected.dense!, 'worker dense', 0);
      assertClose(r.colbert, expected.colbert!.data, 'worker colbert', 0);
    }
  });
});
