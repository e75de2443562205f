/**
 * The .pt (restricted unpickler) and .safetensors readers through the addon, against values
 * written by PyTorch (scripts/gen_weight_reader_fixtures.py), and every refusal.
 */
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3 } from '../lib';
import { native } from '../lib/addon/native';
import { FIXTURES, rejectsWith } from './helpers';

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

/** A .safetensors file of fp16 tensors (`tensors`: name to [shape, begin, end]) over `dataBytes` bytes. */
function safetensorsFile(tensors: Record<string, [number[], number, number]>, dataBytes: number): Buffer {
  const header: Record<string, unknown> = {};
  for (const [name, [shape, begin, end]] of Object.entries(tensors)) {
    header[name] = { dtype: 'F16', shape, data_offsets: [begin, end] };
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, Buffer.alloc(dataBytes, 0x3c)]);  // 0x3c3c: fp16 1.05859375
}

describe('safetensors tensors must tile the data section', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-safetensors-'));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** Writes `bytes` and checks that reading them fails with ERR_MODEL_FILES naming the file and `parts`. */
  function refused(name: string, bytes: Buffer, parts: string[]): void {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, bytes);
    assert.throws(() => native().readTensorFile(file), (err: { code?: string; message?: string }) => {
      assert.equal(err.code, 'ERR_MODEL_FILES');
      assert.ok(err.message!.startsWith(`${file}: `), `names the file: ${err.message}`);
      for (const part of parts) assert.ok(err.message!.includes(part), `"${part}" in: ${err.message}`);
      return true;
    });
  }

  it('refuses tensors that overlap, naming both', () => {
    refused('overlap.safetensors', safetensorsFile({ weight: [[1, 32], 0, 64], bias: [[1], 62, 64] }, 64),
      ["'weight' (data_offsets [0, 64])", "'bias' (data_offsets [62, 64])", 'overlap']);
    refused('same-range.safetensors', safetensorsFile({ a: [[2], 0, 4], b: [[2], 0, 4] }, 4), ["'a'", "'b'", 'overlap']);
  });

  it('refuses data bytes that no tensor covers', () => {
    refused('gap.safetensors', safetensorsFile({ a: [[1], 0, 2], b: [[1], 4, 6] }, 6),
      ['2 bytes', "between tensor 'a'", "tensor 'b'", 'no tensor covers']);
    refused('trailing.safetensors', safetensorsFile({ a: [[1], 0, 2] }, 6), ['4 bytes at the end', "after tensor 'a'"]);
  });

  it('loads tensors that tile it exactly, in any header order, empty ones included', () => {
    const file = path.join(tmp, 'tiled.safetensors');
    fs.writeFileSync(file, safetensorsFile({ b: [[2], 2, 6], empty: [[0, 3], 2, 2], a: [[1], 0, 2] }, 6));
    const got = native().readTensorFile(file);
    assert.deepEqual(Object.keys(got).sort(), ['a', 'b', 'empty']);
    assert.deepEqual(Array.from(got.b.data), [1.05859375, 1.05859375]);
    assert.deepEqual(got.empty.shape, [0, 3]);
  });

  it('a head file with overlapping tensors fails BGEM3.load with ERR_MODEL_FILES', async () => {
    const dir = path.join(tmp, 'model');
    fs.cpSync(path.join(FIXTURES, 'tiny-m3-safetensors'), dir, { recursive: true });
    // The right shapes for the sparse head (weight [1, 32], bias [1]), but the bias is the
    // weight's last element.
    fs.writeFileSync(path.join(dir, 'sparse_linear.safetensors'),
      safetensorsFile({ weight: [[1, 32], 0, 64], bias: [[1], 62, 64] }, 64));
    await rejectsWith(BGEM3.load(dir), 'ERR_MODEL_FILES', /sparse_linear\.safetensors.*'weight'.*'bias'.*overlap/);
  });
});
