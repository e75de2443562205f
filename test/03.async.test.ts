/** Concurrency, cancellation, disposal, the event loop during long encodes, and worker threads. */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { BGEM3 } from '../lib';
import type { NativeEncoder } from '../lib/addon/native';
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
    const texts = manyTexts(16000);
    const reference = await model.encode(texts.slice(0, 3));
    // Tokenized first, so the abort lands in the native run (about a second of it), not before.
    const tokens = await model.tokenize(texts);
    const controller = new AbortController();
    const running = model.encodeTokens(tokens, { batchSize: texts.length, maxBatchTokens: 1 << 30, signal: controller.signal });
    setTimeout(() => controller.abort(), 150);
    await rejectsWith(running, 'ERR_ABORTED');
    const again = await model.encode(texts.slice(0, 3));
    assertClose(again.dense!, reference.dense!, 'dense after abort', 0);
  });

  it('aborting queued work rejects it at once, while the run ahead of it completes', async () => {
    // Through the raw native encoder, so the two calls are queued in a known order.
    const raw = (model as unknown as { encoder: NativeEncoder }).encoder;
    const long = await model.tokenize(manyTexts(4000));
    const short = await model.tokenize(['queued text']);
    const plan = (n: number, size: number) => {
      const order = Uint32Array.from({ length: n }, (_, i) => i);
      const ends = Uint32Array.from({ length: Math.ceil(n / size) }, (_, b) => Math.min(n, (b + 1) * size));
      return { order, ends };
    };
    const p1 = plan(4000, 4);
    const p2 = plan(1, 1);
    const order: string[] = [];
    const first = raw.encode(long.ids, long.offsets, p1.order, p1.ends, ['dense'], 9001).then((out) => {
      order.push('first');
      return out;
    });
    const queued = raw.encode(short.ids, short.offsets, p2.order, p2.ends, ['dense'], 9002);
    queued.catch(() => order.push('queued'));
    assert.equal(raw.cancel(9002), true);
    await assert.rejects(queued, (e: { code?: string }) => e.code === 'ERR_ABORTED');
    assert.equal((await first).count, 4000);
    assert.deepEqual(order, ['queued', 'first'], 'the aborted call rejects without waiting for the run ahead of it');
    assert.equal(raw.cancel(9002), false, 'a settled job is gone');
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
  it('stays responsive during a long encode (timers keep firing while it runs)', async () => {
    // One intra-op thread leaves the other core to the JS thread, so what is measured is
    // whether the encode holds the event loop, not how the machine schedules busy threads.
    const model = await BGEM3.load(DEMO_MODEL, { threads: 1 });
    try {
      let ticks = 0;
      let worst = 0;
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        worst = Math.max(worst, now - last);
        last = now;
        ticks++;
      }, 5);
      const started = performance.now();
      await model.encode(manyTexts(2000), { batchSize: 2000, maxBatchTokens: 1 << 30 });
      const ended = performance.now();
      clearInterval(timer);
      // The gap since the last tick counts too: an encode that blocked the thread would end
      // with no tick at all during it, and one gap as long as the encode.
      worst = Math.max(worst, ended - last);
      const elapsed = ended - started;
      assert.ok(elapsed > 100, `the encode should be long enough to observe (${elapsed.toFixed(0)} ms)`);
      assert.ok(ticks >= 3, `only ${ticks} timer ticks during a ${elapsed.toFixed(0)} ms encode`);
      assert.ok(worst < elapsed * 0.6, `worst timer gap ${worst.toFixed(1)} ms during a ${elapsed.toFixed(0)} ms encode`);
    } finally {
      await model.dispose();
    }
  });
});

describe('worker threads', () => {
  it('terminating a worker while native work runs (load, encode, maxSim) does not crash the process', async () => {
    const lib = JSON.stringify(path.join(ROOT, 'dist', 'lib', 'index.js'));
    const bodies = [
      `m.BGEM3.load(${JSON.stringify(DEMO_MODEL)}).then(() => {});`,
      `m.BGEM3.load(${JSON.stringify(DEMO_MODEL)}).then((model) => { model.encode(Array.from({ length: 3000 }, (_, i) => 'text number ' + i + ' with several words'), { batchSize: 3000, maxBatchTokens: 1 << 30 }); parentPort.postMessage('busy'); });`,
      `const dim = 128, rows = 200000; m.maxSim(new Float32Array(32 * dim).fill(0.01), { offsets: Uint32Array.of(0, rows), data: new Float32Array(rows * dim).fill(0.01) }, { dim });`,
    ];
    for (const body of bodies) {
      for (let round = 0; round < 3; round++) {
        const worker = new Worker(`const { parentPort } = require('node:worker_threads'); const m = require(${lib}); ${body} parentPort.postMessage('started');`, { eval: true });
        await new Promise<void>((resolve, reject) => {
          worker.once('message', () => setTimeout(() => void worker.terminate(), 2 + round * 10));
          worker.once('exit', () => resolve());
          worker.once('error', reject);
        });
      }
    }
    // Still alive, and the addon still works on this thread.
    const model = await BGEM3.load(DEMO_MODEL);
    assert.equal((await model.encode(['still here'])).count, 1);
    await model.dispose();
  });

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
