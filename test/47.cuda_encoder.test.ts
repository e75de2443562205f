/**
 * The encoder on ONNX Runtime's CUDA provider (device 'cuda'): PyTorch's golden outputs within
 * 1e-4 in fp32 for every layout, the heads on the GPU for the snapshot layouts, batches equal to
 * the CPU's, TF32 within its looser bound, and a text at the model's full length. Skipped where
 * the CUDA provider cannot run (this suite's CPU runs); scripts/device-node-check.sh runs it on a
 * GPU, with test/46.fp16.test.ts under BGE_M3_TEST_DEVICE=cuda for fp16.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { BGEM3, cudaInfo, runtimeInfo } from '../lib';
import { MODEL_DIRS, assertClose, golden, longText } from './helpers';

const usable = runtimeInfo().usableProviders.includes('CUDAExecutionProvider') && cudaInfo().devices > 0;
const skip = usable ? false : `no usable CUDA provider and device (${runtimeInfo().cudaProviderError || cudaInfo().why || 'CPU build'})`;
const GPU_FP32 = 1e-4;

describe('the encoder on CUDA', { skip }, () => {
  for (const [layout, dir] of Object.entries(MODEL_DIRS)) {
    it(`${layout}: the golden outputs within ${GPU_FP32} in fp32`, async () => {
      const model = await BGEM3.load(dir, { device: 'cuda' });
      try {
        const info = model.info();
        assert.equal(info.headsDevice, layout.startsWith('heads-baked') ? 'cpu' : 'cuda', info.headsDeviceWhy);
        for (const c of golden.cases) {
          const row = (await model.encode([c.text], { dense: true, sparse: true, colbert: true, maxLength: c.maxLength ?? undefined })).row(0);
          assertClose(row.dense!, c.dense, `${c.name} dense`, GPU_FP32);
          const ids = Object.keys(c.sparse).map(Number).sort((a, b) => a - b);
          assert.deepEqual(Array.from(row.sparse!.ids), ids, `${c.name} sparse ids`);
          assertClose(row.sparse!.weights, ids.map((id) => c.sparse[String(id)]), `${c.name} sparse`, GPU_FP32);
          assertClose(row.colbert!, c.colbert.flat(), `${c.name} colbert`, GPU_FP32);
        }
      } finally {
        await model.dispose();
      }
    });
  }

  it('a batch of mixed lengths (GPU-sized batches) gives the CPU outputs; TF32 stays within 1e-2', async () => {
    const dir = MODEL_DIRS['snapshot (.pt heads)'];
    const texts = Array.from({ length: 300 }, (_, i) => `${golden.cases[i % golden.cases.length].text} ${'word '.repeat(i % 40)}${i}`);
    const cpu = await BGEM3.load(dir);
    const want = await cpu.encode(texts, { colbert: true });
    await cpu.dispose();
    for (const allowTf32 of [false, true]) {
      const gpu = await BGEM3.load(dir, { device: 'cuda', allowTf32 });
      const got = await gpu.encode(texts, { colbert: true });
      await gpu.dispose();
      const tol = allowTf32 ? 1e-2 : GPU_FP32;
      assertClose(got.dense!, want.dense!, `dense (tf32 ${allowTf32})`, tol);
      assert.deepEqual(Array.from(got.colbert!.offsets), Array.from(want.colbert!.offsets));
      assertClose(got.colbert!.data, want.colbert!.data, `colbert (tf32 ${allowTf32})`, tol);
    }
  });

  it('a text at the model\'s full length', async () => {
    const dir = MODEL_DIRS['snapshot (.pt heads)'];
    const cpu = await BGEM3.load(dir);
    const gpu = await BGEM3.load(dir, { device: 'cuda' });
    try {
      const text = longText(2000);
      const a = await cpu.encode([text], { colbert: true });
      const b = await gpu.encode([text], { colbert: true });
      assert.equal(b.colbert!.offsets[1], a.colbert!.offsets[1]);
      assertClose(b.dense!, a.dense!, 'dense', GPU_FP32);
      assertClose(b.colbert!.data, a.colbert!.data, 'colbert', GPU_FP32);
    } finally {
      await cpu.dispose();
      await gpu.dispose();
    }
  });
});
