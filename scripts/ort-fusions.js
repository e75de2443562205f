#!/usr/bin/env node
// Which of ONNX Runtime's graph fusions fire on a model: loads it (as the library does, with the
// given device and precision), has ONNX Runtime write the graph it optimized, and counts that
// graph's ops next to the original's. Prints JSON; the fused ops (Attention, SkipLayerNormalization,
// BiasGelu, ...) are what ONNX Runtime's transformer fusions produce.
//
//   node scripts/ort-fusions.js MODEL_DIR [--device cpu|cuda] [--precision fp32|fp16] [--out FILE]
// Needs `npm run build` (dist/). The model's own fused-attention rewrite is turned off, so what
// is counted is ONNX Runtime's work alone.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function varint(buf, at) {
  let value = 0;
  let scale = 1;
  for (;;) {
    const byte = buf[at.i++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return value;
    scale *= 128;
  }
}

/** The fields of one protobuf message: [{ number, wire, start, end, value }]. */
function fields(buf, start, end) {
  const out = [];
  const at = { i: start };
  while (at.i < end) {
    const tag = varint(buf, at);
    const number = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) out.push({ number, wire, value: varint(buf, at) });
    else if (wire === 1) at.i += 8;
    else if (wire === 5) at.i += 4;
    else if (wire === 2) {
      const length = varint(buf, at);
      out.push({ number, wire, start: at.i, end: at.i + length });
      at.i += length;
    } else throw new Error(`not an ONNX file (wire type ${wire})`);
  }
  return out;
}

/** Op counts of an ONNX file's main graph, keyed `op` or `domain:op`. */
function opCounts(file) {
  const buf = fs.readFileSync(file);
  const graph = fields(buf, 0, buf.length).find((f) => f.number === 7 && f.wire === 2);
  if (!graph) throw new Error(`${file} holds no graph`);
  const counts = {};
  for (const node of fields(buf, graph.start, graph.end).filter((f) => f.number === 1 && f.wire === 2)) {
    let op = '';
    let domain = '';
    for (const f of fields(buf, node.start, node.end)) {
      if (f.number === 4 && f.wire === 2) op = buf.toString('utf8', f.start, f.end);
      if (f.number === 7 && f.wire === 2) domain = buf.toString('utf8', f.start, f.end);
    }
    const key = domain && domain !== 'ai.onnx' ? `${domain}:${op}` : op;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(counts).sort((a, b) => b[1] - a[1]));
}

// The ops ONNX Runtime's transformer fusions produce (com.microsoft contrib ops and LayerNormalization).
const FUSED = ['Attention', 'MultiHeadAttention', 'EmbedLayerNormalization', 'SkipLayerNormalization', 'LayerNormalization',
  'SkipSimplifiedLayerNormalization', 'BiasGelu', 'FastGelu', 'Gelu', 'BiasSoftmax', 'FusedMatMul', 'FusedGemm', 'BiasAdd',
  'QuickGelu', 'MatMulIntegerToFloat', 'GroupQueryAttention', 'PackedAttention', 'RotaryEmbedding'];

async function main() {
  const args = process.argv.slice(2);
  const dir = args.find((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')));
  const flag = (name, fallback) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
  };
  if (!dir) {
    console.error('usage: node scripts/ort-fusions.js MODEL_DIR [--device cpu|cuda] [--precision fp32|fp16] [--out FILE]');
    process.exit(2);
  }
  const { BGEM3 } = require(path.join(__dirname, '..', 'dist', 'lib', 'index.js'));
  const device = flag('device', 'cpu');
  const precision = flag('precision', 'fp32');
  const optimized = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'm3-fusions-')), 'optimized.onnx');
  const model = await BGEM3.load(dir, { device, precision, fusedAttention: false, optimizedGraphPath: optimized });
  const info = model.info();
  await model.dispose();
  const before = opCounts(info.onnx);
  const after = opCounts(optimized);
  const fused = Object.fromEntries(Object.entries(after).filter(([op]) => FUSED.includes(op.replace(/^.*:/, ''))));
  const report = { model: dir, device, precision: info.precision, fp16: info.fp16, fused, before, after };
  const text = JSON.stringify(report, null, 2);
  const out = flag('out', '');
  if (out) fs.writeFileSync(out, text + '\n');
  console.log(text);
  fs.rmSync(path.dirname(optimized), { recursive: true, force: true });
}

module.exports = { fields, opCounts, FUSED };

if (require.main === module) {
  main().catch((err) => {
    console.error(err.stack ?? String(err));
    process.exit(1);
  });
}
