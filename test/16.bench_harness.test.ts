/**
 * The benchmark harness in quick mode on the tiny fixture model: every scenario runs in its own
 * process and writes valid JSON with its environment, the peers agree with this package on the
 * vectors, and the report renders with its charts. Timings are never asserted.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { FIXTURES, ROOT } from './helpers';
import { encoderFlops } from '../bench/common';
import { compareOutputs, recordOutputs } from '../bench/agreement';

/** Whether the PyTorch peer can run here (the harness looks for the same modules). */
function torchAvailable(): boolean {
  return [process.env.PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p)
    .some((py) => spawnSync(py, ['-c', 'import torch, numpy, onnx'], { encoding: 'utf8' }).status === 0);
}

const MODEL = path.join(FIXTURES, 'tiny-m3-safetensors');

describe('benchmark harness (quick)', () => {
  const results = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-bench-test-'));

  it('runs every scenario and writes valid JSON with the environment', () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'bench', 'harness.js'), '--quick', '--model', MODEL,
      '--full-model', path.join(results, 'no-such-model'), '--threads', '1'], {
      encoding: 'utf8', env: { ...process.env, BGE_M3_BENCH_RESULTS: results }, maxBuffer: 64 << 20,
    });
    assert.equal(r.status, 0, `${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
    const files = fs.readdirSync(results).filter((f) => f.endsWith('.json'));
    const run = JSON.parse(fs.readFileSync(path.join(results, files.find((f) => f.startsWith('run-'))!), 'utf8'));
    assert.deepEqual(run.failures, {});
    for (const s of ['encode', 'maxsim', 'lexical', 'index', 'serve', 'finetune']) {
      assert.ok(run.files[s] && fs.existsSync(run.files[s]), `${s} wrote ${run.files[s]}`);
      JSON.parse(fs.readFileSync(run.files[s], 'utf8'));
    }
    assert.match(r.stdout, /full-shape: no model in/);
    const env = run.environment;
    assert.ok(env.machine.cpu && env.machine.logicalCores >= 1 && env.machine.memoryGiB >= 1);
    assert.ok(['serial', 'avx2', 'avx512'].includes(env.simd.active));
    assert.match(env.onnxruntime.version, /^\d+\.\d+/);
    assert.ok(Array.isArray(env.onnxruntime.providers));

    const encode = JSON.parse(fs.readFileSync(run.files.encode, 'utf8'));
    const expected = ['bge-m3', 'ort-js', 'ort-js-careful', 'transformers', ...(torchAvailable() ? ['torch'] : [])];
    for (const engine of expected) {
      const e = encode.results.find((x: { engine: string }) => x.engine === engine);
      assert.ok(e && !e.skipped, `${engine} ran: ${e?.skipped}`);
      assert.ok(e.rows.length >= 4, `${engine} measured every workload`);
      for (const row of e.rows) {
        assert.ok(row.runs >= 5 && row.tokensPerSecMedian > 0 && row.tokensPerSecBest >= row.tokensPerSecMedian);
      }
      assert.ok(e.loadMs > 0 && e.firstResultMs > 0 && e.peakRssMiB > 0);
      assert.equal(e.outputs, undefined, 'the recorded outputs stay out of the result file');
    }
    if (!expected.includes('torch')) assert.match(encode.results.find((x: { engine: string }) => x.engine === 'torch').skipped, /python3 with torch/);
    // Same weights, same texts: every peer's outputs equal this package's, on every workload and
    // every output it computes (transformers.js: dense only), so every ratio is computed.
    for (const peer of expected.filter((e) => e !== 'bge-m3')) {
      const rows = encode.agreement.filter((a: { peer: string }) => a.peer === peer);
      assert.equal(rows.length, 4, `${peer} was compared on every workload`);
      for (const a of rows) {
        assert.equal(a.problem, '', `${peer} ${a.workload}: ${a.problem}`);
        assert.ok(a.dense < 1e-4 && (peer === 'transformers' ? a.sparse === null && a.colbert === null : a.sparse < 1e-4 && a.colbert < 1e-4), JSON.stringify(a));
      }
      for (const ratio of encode.ratios) assert.ok(ratio[`denseVs_${peer}`] > 0 && ratio[`excluded_${peer}`] === undefined, `${peer} ${ratio.workload} has a ratio`);
    }
  });

  it('output agreement: a peer with a wrong head or other rows is caught, and says which output', () => {
    const dense = [Float32Array.of(0.6, 0.8), Float32Array.of(1, 0)];
    const ours = recordOutputs({ dense, sparse: [new Map([[5, 0.25]]), new Map([[7, 0.5]])], colbert: [Float32Array.of(1, 0, 0, 1), Float32Array.of(0, 1)] });
    const same = compareOutputs(ours, recordOutputs({ dense, sparse: [new Map([[5, 0.25]]), new Map([[7, 0.5]])], colbert: [Float32Array.of(1, 0, 0, 1), Float32Array.of(0, 1)] }));
    assert.deepEqual(same, { dense: 0, sparse: 0, colbert: 0, problem: '' });
    const lexical = compareOutputs(ours, recordOutputs({ dense, sparse: [new Map([[5, 0.25], [9, 0.01]]), new Map([[7, 0.5]])], colbert: [Float32Array.of(1, 0, 0, 1), Float32Array.of(0, 1)] }));
    assert.match(lexical.problem, /lexical weights differ by 1\.00e-2/);
    const rows = compareOutputs(ours, recordOutputs({ dense, sparse: [new Map([[5, 0.25]]), new Map([[7, 0.5]])], colbert: [Float32Array.of(1, 0), Float32Array.of(0, 1)] }));
    assert.match(rows.problem, /ColBERT row counts 1,1 where this package has 2,1/);
    const vectors = compareOutputs(ours, recordOutputs({ dense: [Float32Array.of(0.6, 0.8), Float32Array.of(0.999, 0.001)] }));
    assert.match(vectors.problem, /dense differs by 1\.00e-3/);
    assert.equal(vectors.sparse, null, 'a dense-only peer is compared on dense alone');
  });

  it('renders the report with its charts', () => {
    const out = path.join(results, 'report-out');
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'bench', 'report.js'), '--results', results, '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const report = fs.readFileSync(path.join(out, 'REPORT.md'), 'utf8');
    for (const heading of ['## Encoding', '## Serving', '## MaxSim kernels', '## Lexical scores', '## Hybrid index']) assert.ok(report.includes(heading), heading);
    for (const chart of ['encode-throughput.svg', 'serve-latency.svg', 'maxsim.svg']) {
      const svg = fs.readFileSync(path.join(out, 'report', chart), 'utf8');
      assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/, chart);
      assert.ok(svg.includes('<path') || svg.includes('<rect'), `${chart} draws something`);
      assert.ok(report.includes(`(report/${chart})`), `the report shows ${chart}`);
    }
    fs.rmSync(results, { recursive: true, force: true });
  });
});

describe('encoder FLOP count', () => {
  // The forward pass as its matrix products, [rows, inner, cols] per text of L tokens and layer
  // (attention over all heads together: the head split changes no count).
  function byProducts(layers: number, h: number, i: number, lengths: number[]): number {
    let flops = 0;
    for (const L of lengths) {
      const products = [
        [L, h, h], [L, h, h], [L, h, h], // query, key, value
        [L, h, L], // scores: Q K^T
        [L, L, h], // weights x V
        [L, h, h], // output projection
        [L, h, i], [L, i, h], // feed-forward
      ];
      for (const [m, k, n] of products) flops += 2 * m * k * n * layers;
    }
    return flops;
  }

  it('matches the products of the forward pass, and 2 FLOPs per weight per token for BGE-M3', () => {
    const m3 = { num_hidden_layers: 24, hidden_size: 1024, intermediate_size: 4096 };
    const lengths = [1, 7, 256, 8192];
    assert.equal(encoderFlops(m3, lengths), byProducts(24, 1024, 4096, lengths));
    assert.equal(encoderFlops({ num_hidden_layers: 2, hidden_size: 32, intermediate_size: 48 }, [3, 0, 5]), byProducts(2, 32, 48, [3, 0, 5]));
    // XLM-RoBERTa large: about 302M weights outside the embeddings, so about 604 MFLOP per token
    // of a short text.
    const perToken = encoderFlops(m3, [1]);
    assert.ok(Math.abs(perToken / 604e6 - 1) < 0.01, `${perToken}`);
    assert.throws(() => encoderFlops({ num_hidden_layers: 24, hidden_size: 0, intermediate_size: 4096 }, [1]), /hidden_size must be a positive integer/);
  });

  it('bench:encode rejects an unknown device and a bad batch', () => {
    for (const [args, message] of [[['--device', 'tpu'], /--device must be cpu or cuda/], [['--batch', '0'], /--batch must be a positive integer/]] as const) {
      const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'bench', 'encode.js'), ...args, '--model', MODEL], { encoding: 'utf8' });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, message);
    }
  });
});
