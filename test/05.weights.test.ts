/**
 * The .pt (restricted unpickler) and .safetensors readers through the addon, against values
 * written by PyTorch (scripts/gen_weight_reader_fixtures.py), and every refusal.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from '../lib/native';
import { FIXTURES } from './helpers';

const DIR = path.join(FIXTURES, 'weight-readers');
const manifest: { cases: string[]; refusals: Array<{ file: string; contains: string[] }> } =
  JSON.parse(fs.readFileSync(path.join(DIR, 'manifest.json'), 'utf8'));

type Expected = Record<string, { shape: number[]; values: Array<number | string> }>;

function asNumber(v: number | string): number {
  return v === 'inf' ? Infinity : v === '-inf' ? -Infinity : v === 'nan' ? NaN : (v as number);
}

describe('tensor files', () => {
  for (const name of manifest.cases) {
    for (const file of ['model.pt', 'model.safetensors']) {
      it(`${name}/${file} loads with the values torch saved`, () => {
        const expected: Expected = JSON.parse(fs.readFileSync(path.join(DIR, name, 'expected.json'), 'utf8')).tensors;
        const got = native().readTensorFile(path.join(DIR, name, file));
        assert.deepEqual(Object.keys(got).sort(), Object.keys(expected).sort());
        for (const [key, t] of Object.entries(expected)) {
          assert.deepEqual(got[key].shape, t.shape, `${key} shape`);
          assert.equal(got[key].data.length, t.values.length, `${key} size`);
          t.values.forEach((v, i) => {
            const want = asNumber(v);
            const have = got[key].data[i];
            if (Number.isNaN(want)) assert.ok(Number.isNaN(have), `${key}[${i}] NaN`);
            else assert.ok(Object.is(have, Math.fround(want)) || have === Math.fround(want), `${key}[${i}]: ${have} vs ${want}`);
          });
        }
      });
    }
  }

  for (const refusal of manifest.refusals) {
    it(`refuses ${refusal.file} with a clear ERR_MODEL_FILES`, () => {
      const file = path.join(DIR, refusal.file);
      assert.throws(() => native().readTensorFile(file), (err: { code?: string; message?: string }) => {
        assert.equal(err.code, 'ERR_MODEL_FILES');
        assert.ok(err.message!.includes(file), `names the file: ${err.message}`);
        for (const part of refusal.contains) assert.ok(err.message!.includes(part), `"${part}" in: ${err.message}`);
        return true;
      });
    });
  }

  it('survives every truncation and single-byte corruption of a valid .pt and .safetensors', () => {
    for (const file of ['fp16_linear/model.pt', 'fp16_linear/model.safetensors']) {
      const bytes = fs.readFileSync(path.join(DIR, file));
      const tmp = path.join(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'bge-m3-fuzz-')), 'f');
      const step = Math.max(1, Math.floor(bytes.length / 300));
      for (let cut = 0; cut < bytes.length; cut += step) {
        fs.writeFileSync(tmp, bytes.subarray(0, cut));
        assert.throws(() => native().readTensorFile(tmp), (e: { code?: string }) => e.code === 'ERR_MODEL_FILES');
      }
      for (let pos = 0; pos < bytes.length; pos += step) {
        const copy = Buffer.from(bytes);
        copy[pos] ^= 0xa5;
        fs.writeFileSync(tmp, copy);
        try {
          native().readTensorFile(tmp);
        } catch (e) {
          assert.equal((e as { code?: string }).code, 'ERR_MODEL_FILES');
        }
      }
    }
  });
});
