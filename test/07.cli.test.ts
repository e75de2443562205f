/** The bge-m3 command line on the demo model. */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { FIXTURES, ROOT, assertClose, golden } from './helpers';

const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('bge-m3 CLI', () => {
  const c = golden.cases.find((x) => x.name === 'readme_passage')!;

  it('encode on the demo model warns that its weights are random and prints golden outputs', () => {
    const r = run(['encode', c.text, '--dense', '--sparse', '--colbert']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /RANDOM/);
    assert.match(r.stderr, /--model/);
    const out = JSON.parse(r.stdout);
    assert.equal(out.count, 1);
    assert.equal(out.dim, golden.dim);
    assertClose(out.results[0].dense, c.dense, 'cli dense');
    assert.deepEqual(Object.keys(out.results[0].sparse).sort(), Object.keys(c.sparse).sort());
    assert.equal(out.results[0].colbert.length, c.ids.length - 1);
  });

  it('encode reads a .jsonl file and honours --model', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-cli-')), 'texts.jsonl');
    fs.writeFileSync(file, golden.cases.slice(0, 3).map((x) => JSON.stringify({ text: x.text })).join('\n') + '\n');
    const r = run(['encode', '--file', file, '--dense', '--model', path.join(FIXTURES, 'tiny-m3-baked')]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /RANDOM/);
    const out = JSON.parse(r.stdout);
    assert.equal(out.count, 3);
    out.results.forEach((row: { dense: number[] }, i: number) => assertClose(row.dense, golden.cases[i].dense, `row ${i}`));
  });

  it('score prints the five modes', () => {
    const [q, p] = golden.scoresDefault.pairs[0];
    const r = run(['score', q, p, '--weights', '1,1,1']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    // Pair 0 (the README pair) is shorter than every truncation limit, so the defaults match.
    for (const key of ['dense', 'sparse', 'colbert', 'sparse+dense', 'colbert+sparse+dense'] as const) {
      assert.ok(Math.abs(out.scores[0][key] - golden.scoresDefault[key][0]) <= 1e-5, key);
    }
    // Without --weights: the one default triple [1, 0.3, 1], fused from the golden components.
    const byDefault = run(['score', q, p]);
    assert.equal(byDefault.code, 0, byDefault.stderr);
    const row = JSON.parse(byDefault.stdout).scores[0];
    const g = golden.scoresDefault;
    assert.ok(Math.abs(row['colbert+sparse+dense'] - (g.dense[0] + 0.3 * g.sparse[0] + g.colbert[0]) / 2.3) <= 1e-5);
    assert.ok(Math.abs(row['sparse+dense'] - (g.dense[0] + 0.3 * g.sparse[0]) / 1.3) <= 1e-5);
  });

  it('info reports ONNX Runtime, the CPU tier and the model layout', () => {
    const r = run(['info']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.match(out.onnxruntime.version, /^\d+\.\d+\.\d+/);
    assert.ok(out.onnxruntime.providers.includes('CPUExecutionProvider'));
    assert.ok(['serial', 'avx2', 'avx512'].includes(out.cpu.active));
    assert.equal(out.model.layout, 'bge-m3-snapshot');
    assert.equal(out.model.dim, golden.dim);
    assert.equal(out.model.demo, true);
    assert.equal(out.model.fusedAttentionBlocks, out.cpu.active === 'serial' ? 0 : 2);
  });

  it('--no-fused-attention runs the graph\'s own attention', () => {
    const r = run(['info', '--no-fused-attention']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.model.fusedAttentionBlocks, 0);
    assert.equal(out.model.attentionNote, '');
  });

  it('fails with a clear message and exit code 1 for a bad model directory', () => {
    const r = run(['encode', 'x', '--model', path.join(os.tmpdir(), 'no-such-model-dir')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ERR_MODEL_FILES: Model directory .* does not exist/);
  });

  it('checks the GPU flags: --gpu-mem-limit takes byte units and needs --device cuda', () => {
    let r = run(['encode', 'x', '--gpu-mem-limit', 'lots']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--gpu-mem-limit.*expected a byte count such as 8G/);
    r = run(['encode', 'x', '--device-id', '-1']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--device-id.*expected a non-negative integer/);
    // 2G parses to 2 GiB and reaches load, which refuses it on the CPU and names the fix.
    r = run(['encode', 'x', '--gpu-mem-limit', '2G']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ERR_INPUT: gpuMemLimit limits the GPU arena of device 'cuda'/);
    r = run(['encode', 'x', '--allow-tf32']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ERR_INPUT: allowTf32 applies to device 'cuda'/);
    // 512K is 524,288 bytes, under the 1 MiB floor.
    r = run(['encode', 'x', '--device', 'cuda', '--gpu-mem-limit', '512K']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /integer in \[1048576, \d+\] for gpuMemLimit but received number 524288/);
  });
});
