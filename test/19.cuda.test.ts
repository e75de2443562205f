/**
 * The CUDA MaxSim path through the public API. With a CUDA device (and a build with the CUDA
 * kernels): GPU scores against the CPU kernels for fp32 and bf16 documents, many queries,
 * empty documents, dispose. Without one: cudaInfo says why, and upload fails with ERR_DEVICE
 * carrying that reason; bad input is refused before any device is touched.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { cudaInfo, DeviceMultiVectors, maxSim, maxSimSync, quantize } from '../lib';
import { rejectsWith } from './helpers';

function unitRows(rows: number, dim: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const random = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 2 ** 32 - 0.5;
  };
  const x = Float32Array.from({ length: rows * dim }, random);
  for (let r = 0; r < rows; r++) {
    let n = 0;
    for (let k = 0; k < dim; k++) n += x[r * dim + k] ** 2;
    for (let k = 0; k < dim; k++) x[r * dim + k] /= Math.sqrt(n);
  }
  return x;
}

const info = cudaInfo();
const dim = 40;
const docRows = [3, 0, 17, 70, 1, 129];
const offsets = Uint32Array.from([0, ...docRows.map((_, i) => docRows.slice(0, i + 1).reduce((a, b) => a + b, 0))]);
const docs = { offsets, data: unitRows(offsets[offsets.length - 1], dim, 3) };
const queries = { offsets: Uint32Array.of(0, 5, 6, 38), data: unitRows(38, dim, 9) };

describe('CUDA MaxSim', () => {
  it('cudaInfo describes the build and the devices', () => {
    assert.equal(typeof info.built, 'boolean');
    assert.ok(Number.isInteger(info.devices) && info.devices >= 0);
    assert.equal(info.names.length, info.devices);
    if (info.devices === 0) assert.ok(info.why.length > 0, 'no device: the reason is given');
  });

  it('refuses bad input before touching a device', async () => {
    await rejectsWith(DeviceMultiVectors.upload(quantize(docs, dim, 'i8')), 'ERR_INPUT', /int8 documents have no GPU kernel/);
    await rejectsWith(DeviceMultiVectors.upload(docs, { dim, format: 'i8' as 'bf16' }), 'ERR_INPUT', /format/);
    await rejectsWith(DeviceMultiVectors.upload(docs, { dim, device: 'rocm' as 'cuda' }), 'ERR_INPUT', /device/);
    await rejectsWith(DeviceMultiVectors.upload(docs), 'ERR_INPUT', /dim/);
  });

  it('without a device, upload fails with ERR_DEVICE and the reason', { skip: info.devices > 0 && 'a CUDA device is present' }, async () => {
    await rejectsWith(DeviceMultiVectors.upload(docs, { dim }), 'ERR_DEVICE',
      new RegExp(info.built ? 'CUDA' : 'no CUDA kernels'));
  });

  it('scores like the CPU kernels on the GPU (fp32 and bf16)', { skip: info.devices === 0 && `no CUDA device: ${info.why}` }, async () => {
    for (const format of ['f32', 'bf16'] as const) {
      const gpu = await DeviceMultiVectors.upload(docs, { dim, format });
      assert.equal(gpu.count, docRows.length);
      const host = format === 'bf16' ? quantize(docs, dim, 'bf16') : docs;
      const expected = maxSimSync(queries, host, { dim });
      const actual = await maxSim(queries, gpu);
      const tol = format === 'bf16' ? 2e-4 : 2e-5;
      expected.forEach((e, i) => assert.ok(Math.abs(actual[i] - e) <= tol, `${format} score ${i}: ${actual[i]} vs ${e}`));
      assert.equal(actual[1], 0, 'an empty document scores 0');
      const single = await maxSim(queries.data.subarray(0, 5 * dim), gpu);
      assert.deepEqual(Array.from(single), Array.from(actual.subarray(0, docRows.length)));
      assert.throws(() => maxSimSync(queries, gpu as never), /async/);
      gpu.dispose();
      await rejectsWith(maxSim(queries, gpu), 'ERR_DISPOSED');
    }
  });
});
