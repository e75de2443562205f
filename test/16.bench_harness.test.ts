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
    for (const engine of ['bge-m3', 'ort-js', 'transformers']) {
      const e = encode.results.find((x: { engine: string }) => x.engine === engine);
      assert.ok(e && !e.skipped, `${engine} ran: ${e?.skipped}`);
      assert.ok(e.rows.length >= 4, `${engine} measured every workload`);
      for (const row of e.rows) {
        assert.ok(row.runs >= 5 && row.tokensPerSecMedian > 0 && row.tokensPerSecBest >= row.tokensPerSecMedian);
      }
      assert.ok(e.loadMs > 0 && e.firstResultMs > 0 && e.peakRssMiB > 0);
    }
    assert.ok(encode.results.some((x: { engine: string }) => x.engine === 'torch'), 'the PyTorch peer ran or says why not');
    // Same ONNX file, same texts: the peers' first vectors equal this package's.
    for (const ratio of encode.ratios) {
      for (const peer of ['ort-js', 'transformers', 'torch']) {
        const diff = ratio[`firstDenseMaxDiff_${peer}`];
        if (diff !== undefined) assert.ok(diff < 1e-4, `${peer} ${ratio.workload}: first vector differs by ${diff}`);
      }
    }
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
