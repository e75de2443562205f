/**
 * The seams between the TypeScript layer and the addon: the output kinds and the execution
 * providers are tables in C++ (native/core/outputs.h, native/core/providers.cc) that the binding
 * parses JavaScript's names against once; TypeScript's lists must name the same entries, and a
 * name outside them is refused with the list. Test-only functions live on `testing`, not beside
 * the public exports.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { BGEM3 } from '../lib';
import { DEVICES, NATIVE_OUTPUT_KINDS, native, type NativeEncoder } from '../lib/addon/native';
import { DEMO_MODEL } from './helpers';

describe('addon tables and the testing surface', () => {
  it('TypeScript names the same output kinds and execution providers as the addon, in order', () => {
    assert.deepEqual(native().testing.outputKinds, [...NATIVE_OUTPUT_KINDS]);
    assert.deepEqual(native().testing.executionProviders, [...DEVICES]);
  });

  it('test- and benchmark-only functions are on `testing`, not among the public exports', () => {
    const testingOnly = ['linearForward', 'attentionForward', 'attentionKernelTimes', 'linearBf16Forward',
      'linearBf16KernelTimes', 'bf16Peak', 'fmaPeak', 'lexicalScorePair'];
    const addon = native() as unknown as Record<string, unknown>;
    for (const name of testingOnly) {
      assert.equal(addon[name], undefined, `${name} is a public export`);
      assert.equal(typeof (native().testing as unknown as Record<string, unknown>)[name], 'function', `testing.${name}`);
    }
  });

  it('the binding refuses an unknown device, naming the registered ones', async () => {
    await assert.rejects(Promise.resolve().then(() => native().Encoder.load(DEMO_MODEL, { device: 'rocm' } as never)),
      (e: { code?: string; message?: string }) => e.code === 'ERR_INPUT' && /'cpu' or 'cuda', got 'rocm'/.test(e.message ?? ''));
  });

  describe('encode output kinds', () => {
    let model: BGEM3;
    let raw: NativeEncoder;
    before(async () => {
      model = await BGEM3.load(DEMO_MODEL);
      raw = (model as unknown as { encoder: NativeEncoder }).encoder;
    });
    after(() => model.dispose());
    const one = () => ({ ids: new Int32Array([0, 100, 2]), offsets: new Uint32Array([0, 3]), order: new Uint32Array([0]),
      ends: new Uint32Array([1]) });

    it('an unknown output name is refused with the list of kinds', () => {
      const t = one();
      assert.throws(() => raw.encode(t.ids, t.offsets, t.order, t.ends, ['dense', 'bogus' as never], 7001),
        (e: { code?: string; message?: string }) => e.code === 'ERR_INPUT' && /'dense', 'sparse', 'colbert', 'hidden'/.test(e.message ?? ''));
    });

    it('each kind asked for alone gives only that output, equal to the same output of a full encode', async () => {
      const t = one();
      const all = await raw.encode(t.ids, t.offsets, t.order, t.ends, ['dense', 'sparse', 'colbert'], 7002);
      const dense = await raw.encode(t.ids, t.offsets, t.order, t.ends, ['dense'], 7003);
      assert.deepEqual(dense.dense, all.dense);
      assert.equal(dense.colbert.length, 0);
      assert.equal(dense.sparseIds.length, 0);
      const colbert = await raw.encode(t.ids, t.offsets, t.order, t.ends, ['colbert'], 7004);
      assert.deepEqual(colbert.colbert, all.colbert);
      assert.equal(colbert.dense.length, 0);
    });
  });
});
