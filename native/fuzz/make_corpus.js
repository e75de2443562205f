#!/usr/bin/env node
'use strict';
// Writes the seed corpus of the fuzz targets (native/fuzz/corpus/<target>/): small valid inputs
// taken from test/fixtures and demo-model, and hand-made near misses one check away from valid,
// so that mutations start close to the interesting branches. Deterministic: the same fixtures
// give the same files.
//
//   node native/fuzz/make_corpus.js
//
// The script owns every corpus file except those named regress-*: it deletes and rewrites the
// rest. regress-* files are inputs that once found a bug (scripts/fuzz-native.sh says how to add
// them); they are kept, and every fuzzing run replays them first.

const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const CORPUS = path.join(__dirname, 'corpus');
const WEIGHTS = path.join(ROOT, 'test', 'fixtures', 'weight-readers');
const fixture = (...parts) => fs.readFileSync(path.join(ROOT, ...parts));

// ---- bytes ----

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) crc = CRC_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Little-endian unsigned integer of `width` bytes (up to 8). */
function le(value, width) {
  const out = Buffer.alloc(width);
  let v = BigInt(value);
  for (let i = 0; i < width; i++, v >>= 8n) out[i] = Number(v & 0xffn);
  return out;
}

// ---- zip ----

/** The stored entries of a zip archive, as [name, data] (central directory order). */
function readZip(bytes) {
  const eocd = bytes.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = bytes.readUInt16LE(eocd + 10);
  let at = bytes.readUInt32LE(eocd + 16);
  const files = [];
  for (let i = 0; i < count; i++) {
    const nameSize = bytes.readUInt16LE(at + 28);
    const extraSize = bytes.readUInt16LE(at + 30);
    const commentSize = bytes.readUInt16LE(at + 32);
    const size = bytes.readUInt32LE(at + 20);
    const local = bytes.readUInt32LE(at + 42);
    const name = bytes.toString('latin1', at + 46, at + 46 + nameSize);
    const dataAt = local + 30 + bytes.readUInt16LE(local + 26) + bytes.readUInt16LE(local + 28);
    files.push([name, bytes.subarray(dataAt, dataAt + size)]);
    at += 46 + nameSize + extraSize + commentSize;
  }
  return files;
}

/**
 * A zip of stored entries as torch.save writes it. `zip64` saturates every size and offset and
 * gives them in ZIP64 extra fields and end records; `comment` is the archive comment.
 */
function writeZip(files, { zip64 = false, comment = '' } = {}) {
  const out = [];
  const directory = [];
  let offset = 0;
  const sat = 0xffffffff;
  for (const [name, data] of files) {
    const nameBytes = Buffer.from(name, 'latin1');
    const crc = crc32(data);
    const size32 = zip64 ? sat : data.length;
    const local = Buffer.concat([le(0x04034b50, 4), le(45, 2), le(0, 2), le(0, 2), le(0, 4), le(crc, 4),
      le(size32, 4), le(size32, 4), le(nameBytes.length, 2), le(zip64 ? 20 : 0, 2), nameBytes,
      zip64 ? Buffer.concat([le(1, 2), le(16, 2), le(data.length, 8), le(data.length, 8)]) : Buffer.alloc(0)]);
    directory.push(Buffer.concat([le(0x02014b50, 4), le(45, 2), le(45, 2), le(0, 2), le(0, 2), le(0, 4),
      le(crc, 4), le(size32, 4), le(size32, 4), le(nameBytes.length, 2), le(zip64 ? 28 : 0, 2), le(0, 2),
      le(0, 2), le(0, 2), le(0, 4), le(zip64 ? sat : offset, 4), nameBytes,
      zip64 ? Buffer.concat([le(1, 2), le(24, 2), le(data.length, 8), le(data.length, 8), le(offset, 8)]) : Buffer.alloc(0)]));
    out.push(local, data);
    offset += local.length + data.length;
  }
  const dir = Buffer.concat(directory);
  const tail = [];
  if (zip64) {
    const record = offset + dir.length;
    tail.push(le(0x06064b50, 4), le(44, 8), le(45, 2), le(45, 2), le(0, 4), le(0, 4), le(files.length, 8),
      le(files.length, 8), le(dir.length, 8), le(offset, 8), le(0x07064b50, 4), le(0, 4), le(record, 8), le(1, 4));
  }
  const commentBytes = Buffer.from(comment, 'latin1');
  tail.push(le(0x06054b50, 4), le(0, 2), le(0, 2), le(zip64 ? 0xffff : files.length, 2),
    le(zip64 ? 0xffff : files.length, 2), le(zip64 ? sat : dir.length, 4), le(zip64 ? sat : offset, 4),
    le(commentBytes.length, 2), commentBytes);
  return Buffer.concat([...out, dir, ...tail]);
}

// ---- safetensors ----

/** A .safetensors file: `tensors` maps names to [dtype, shape, begin, end]; `data` follows. */
function safetensors(tensors, data, { metadata, pad = true } = {}) {
  const header = {};
  if (metadata) header.__metadata__ = metadata;
  for (const [name, [dtype, shape, begin, end]] of Object.entries(tensors)) {
    header[name] = { dtype, shape, data_offsets: [begin, end] };
  }
  let json = JSON.stringify(header);
  // The reference writer pads the header with spaces to a multiple of 8 bytes.
  if (pad) json += ' '.repeat((8 - (json.length % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  return Buffer.concat([le(headerBytes.length, 8), headerBytes, data]);
}

const halfs = (count) => Buffer.from(Array.from({ length: count * 2 }, (_, i) => (i % 2 ? 0x3c : i & 0xff)));

// ---- protobuf (ONNX) ----

function varint(value) {
  const out = [];
  let v = BigInt(value);
  if (v < 0n) v += 1n << 64n;
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Buffer.from(out);
}
const pbBytes = (field, bytes) => Buffer.concat([varint((field << 3) | 2), varint(bytes.length), Buffer.from(bytes)]);
const pbVarint = (field, value) => Buffer.concat([varint(field << 3), varint(value)]);
const pbFixed32 = (field, bits) => Buffer.concat([varint((field << 3) | 5), le(bits, 4)]);
const pbString = (field, text) => pbBytes(field, Buffer.from(text, 'utf8'));
const floatBits = (x) => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(x);
  return b.readUInt32LE();
};

/** The fields of a protobuf message: [number, wire, whole field, payload of a bytes field]. */
function pbFields(msg) {
  const fields = [];
  let at = 0;
  const readVarint = () => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = msg[at++];
      v |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
    }
  };
  while (at < msg.length) {
    const start = at;
    const tag = Number(readVarint());
    const wire = tag & 7;
    if (wire === 0) readVarint();
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    let payload;
    if (wire === 2) {
      const length = Number(readVarint());
      payload = msg.subarray(at, at + length);
      at += length;
    }
    fields.push([tag >> 3, wire, msg.subarray(start, at), payload]);
  }
  return fields;
}

const tensorProto = ({ name, type = 1, dims = [], raw, floats, doubles, external = false }) => Buffer.concat([
  ...dims.map((d) => pbVarint(1, d)),
  pbVarint(2, type),
  pbString(8, name),
  raw ? pbBytes(9, raw) : Buffer.alloc(0),
  floats ? pbBytes(4, Buffer.concat(floats.map((x) => le(floatBits(x), 4)))) : Buffer.alloc(0),
  doubles ? pbBytes(10, Buffer.concat(doubles.map((x) => { const b = Buffer.alloc(8); b.writeDoubleLE(x); return b; }))) : Buffer.alloc(0),
  external ? pbVarint(14, 1) : Buffer.alloc(0),
]);

function nodeProto({ inputs, outputs, name, op, domain, attributes = [] }) {
  return Buffer.concat([...inputs.map((i) => pbString(1, i)), ...outputs.map((o) => pbString(2, o)), pbString(3, name),
    pbString(4, op), ...attributes.map((a) => pbBytes(5, a)), domain === undefined ? Buffer.alloc(0) : pbString(7, domain)]);
}

function modelProto({ nodes, initializers = [], inputs = [], outputs = [], opsets = [['', 17]], graphs = 1 }) {
  const graph = Buffer.concat([...nodes.map((n) => pbBytes(1, n)), pbString(2, 'g'),
    ...initializers.map((t) => pbBytes(5, t)), ...inputs.map((i) => pbBytes(11, pbString(1, i))),
    ...outputs.map((o) => pbBytes(12, pbString(1, o)))]);
  return Buffer.concat([pbVarint(1, 8), pbString(2, 'fuzz-corpus'),
    ...opsets.map(([domain, version]) => pbBytes(8, Buffer.concat([pbString(1, domain), pbVarint(2, version)]))),
    ...Array.from({ length: graphs }, () => pbBytes(7, graph))]);
}

// ---- index state (the layout fuzz_index_import.cc reads) ----

const SECTIONS = ['dense', 'sparseOffsets', 'sparseIds', 'sparseWeights', 'colbertOffsets', 'colbertF32',
  'colbertBf16', 'colbertI8', 'colbertScales'];
const SECTION_TYPES = { dense: Float32Array, sparseOffsets: Uint32Array, sparseIds: Uint32Array, sparseWeights: Float32Array,
  colbertOffsets: Uint32Array, colbertF32: Float32Array, colbertBf16: Uint16Array, colbertI8: Int8Array, colbertScales: Float32Array };

function indexState({ dim, vocab, storage, ...arrays }) {
  const parts = [Buffer.from([dim - 1, vocab - 1, ['none', 'f32', 'bf16', 'i8'].indexOf(storage)])];
  for (const name of SECTIONS) {
    const typed = SECTION_TYPES[name].from(arrays[name] ?? []);
    const bytes = Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
    parts.push(le(bytes.length, 2), bytes);
  }
  return Buffer.concat(parts);
}

/** A valid state of three documents (dim 4, vocabulary 50) with ColBERT rows in `storage`. */
function threeDocuments(storage) {
  const dim = 4;
  const rows = [2, 0, 3];
  const colbertOffsets = [0, 2, 2, 5];
  const values = Array.from({ length: 5 * dim }, (_, i) => ((i % 7) - 3) / 4);
  const state = {
    dim, vocab: 50, storage,
    dense: Array.from({ length: 3 * dim }, (_, i) => Math.sin(i + 1)),
    sparseOffsets: [0, 2, 2, 5],
    sparseIds: [3, 17, 0, 9, 49],
    sparseWeights: [0.5, 0.25, 1, 0.125, 2],
    colbertOffsets: storage === 'none' ? [0, 0, 0, 0] : colbertOffsets,
  };
  if (storage === 'f32') state.colbertF32 = values;
  if (storage === 'bf16') state.colbertBf16 = values.map((x) => new Uint32Array(new Float32Array([x]).buffer)[0] >>> 16);
  if (storage === 'i8') {
    state.colbertI8 = values.map((x) => Math.round(x * 127 / 0.75));
    state.colbertScales = rows.flatMap((n) => Array(n).fill(0.75 / 127));
  }
  return state;
}

// ---- the corpus ----

function corpusFor(target) {
  const files = new Map();
  const add = (name, bytes) => {
    if (files.has(name)) throw new Error(`two seeds named ${target}/${name}`);
    files.set(name, Buffer.from(bytes));
  };
  const cases = JSON.parse(fixture('test', 'fixtures', 'weight-readers', 'manifest.json')).cases;

  if (target === 'zip_reader') {
    for (const name of cases) add(`${name}.pt`, fixture('test', 'fixtures', 'weight-readers', name, 'model.pt'));
    for (const name of ['deflate.pt', 'truncated.pt', 'not_torch.zip', 'missing_storage.pt', 'view_outside_storage.pt']) {
      add(`refuse-${name}`, fs.readFileSync(path.join(WEIGHTS, 'refuse', name)));
    }
    add('demo-sparse_linear.pt', fixture('demo-model', 'sparse_linear.pt'));
    const linear = readZip(fixture('test', 'fixtures', 'weight-readers', 'fp16_linear', 'model.pt'));
    add('zip64-fp16_linear.pt', writeZip(linear, { zip64: true }));
    add('comment-fp16_linear.pt', writeZip(linear, { comment: 'saved\u0000by\u0001hand PK\u0005\u0006' }));
    add('empty.zip', writeZip([]));
    const badCrc = writeZip(linear);
    badCrc[60] ^= 0x55;  // inside the pickle: the CRC check must catch it
    add('bad-crc-fp16_linear.pt', badCrc);
    add('duplicate-names.zip', writeZip([['archive/data.pkl', Buffer.from([0x80, 2, 0x7d, 0x2e])], ['archive/data.pkl', Buffer.from('x')]]));
  }

  if (target === 'torch_pickle') {
    for (const name of cases) {
      const [, pickle] = readZip(fixture('test', 'fixtures', 'weight-readers', name, 'model.pt')).find(([n]) => n.endsWith('data.pkl'));
      add(`${name}.pkl`, pickle);
    }
    for (const name of fs.readdirSync(path.join(WEIGHTS, 'refuse')).sort()) {
      if (!name.endsWith('.pt') || name === 'deflate.pt') continue;  // deflate: its pickle is compressed
      let entries;
      try {
        entries = readZip(fs.readFileSync(path.join(WEIGHTS, 'refuse', name)));
      } catch {
        continue;  // not a zip (legacy, truncated): nothing to unpickle
      }
      const pickle = entries.find(([n]) => n.endsWith('data.pkl'));
      if (pickle && entries.every(([n]) => !n.endsWith('.pkl') || n === pickle[0])) add(`refuse-${name.replace(/\.pt$/, '')}.pkl`, pickle[1]);
    }
    for (const file of ['colbert_linear.pt', 'sparse_linear.pt']) {
      add(`demo-${file.replace(/\.pt$/, '')}.pkl`, readZip(fixture('demo-model', file)).find(([n]) => n.endsWith('data.pkl'))[1]);
    }
  }

  if (target === 'safetensors') {
    for (const name of cases) add(`${name}.safetensors`, fixture('test', 'fixtures', 'weight-readers', name, 'model.safetensors'));
    for (const name of fs.readdirSync(path.join(WEIGHTS, 'refuse')).sort()) {
      if (name.endsWith('.safetensors')) add(`refuse-${name}`, fs.readFileSync(path.join(WEIGHTS, 'refuse', name)));
    }
    add('sparse_linear.safetensors', fixture('test', 'fixtures', 'tiny-m3-safetensors', 'sparse_linear.safetensors'));
    add('empty.safetensors', safetensors({}, Buffer.alloc(0)));
    add('metadata-and-empty-tensors.safetensors', safetensors({
      z0: ['F32', [0], 0, 0], a: ['BF16', [2, 2], 0, 8], z1: ['F64', [3, 0], 8, 8], b: ['F16', [], 8, 10],
    }, halfs(5), { metadata: { format: 'pt', note: 'é\n' } }));
    add('unordered.safetensors', safetensors({ late: ['F16', [2], 4, 8], early: ['F16', [2], 0, 4] }, halfs(4)));
    add('unpadded.safetensors', safetensors({ w: ['F32', [1, 2], 0, 8] }, halfs(4), { pad: false }));
    add('near-overlap.safetensors', safetensors({ weight: ['F16', [2], 0, 4], bias: ['F16', [1], 2, 4] }, halfs(2)));
    add('near-same-range.safetensors', safetensors({ a: ['F16', [2], 0, 4], b: ['F16', [2], 0, 4] }, halfs(2)));
    add('near-gap.safetensors', safetensors({ a: ['F16', [1], 0, 2], b: ['F16', [1], 4, 6] }, halfs(3)));
    add('near-trailing.safetensors', safetensors({ a: ['F16', [1], 0, 2] }, halfs(3)));
    add('near-huge-shape.safetensors', safetensors({ a: ['F16', [4294967296, 4294967296], 0, 2] }, halfs(1)));
  }

  if (target === 'mini_json') {
    for (const name of cases) {
      const bytes = fixture('test', 'fixtures', 'weight-readers', name, 'model.safetensors');
      add(`header-${name}.json`, bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))));
    }
    add('manifest.json', fixture('test', 'fixtures', 'weight-readers', 'manifest.json'));
    add('fp16_special-expected.json', fixture('test', 'fixtures', 'weight-readers', 'fp16_special', 'expected.json'));
    add('config.json', fixture('demo-model', 'config.json'));
    add('escapes.json', '{"s":"q\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u0000","raw":"é€😀"}');
    add('numbers.json', '[0,-0,1,-1,9223372036854775807,-9223372036854775808,9223372036854775808,18446744073709551616,' +
      '0.5,-0.125,1e308,1.7976931348623157e308,2.2250738585072014e-308,5e-324,1E+2,1e-2,123456789012345678901234567890]');
    add('literals.json', ' \t\r\n[true,false,null,{},[],""] ');
    add('deep.json', '['.repeat(64) + ']'.repeat(64));
    add('near-too-deep.json', '{"a":'.repeat(64) + '[]' + '}'.repeat(64));
    add('near-duplicate-key.json', '{"a":1,"b":{"c":2},"a":3}');
    add('near-lone-surrogate.json', '["\\ud800x"]');
    add('near-trailing-comma.json', '{"a":[1,2,],}');
    add('near-number-overflow.json', '[1e309]');
  }

  if (target === 'onnx_wire') {
    const demo = fixture('demo-model', 'onnx', 'model.onnx');
    add('demo-model.onnx', demo);
    // The demo graph cut to its first nodes: the same kinds of fields, a tenth of the bytes.
    const model = pbFields(demo);
    const [, , , graphBytes] = model.find(([n, w]) => n === 7 && w === 2);
    let kept = 0;
    // Nodes past the twelfth and the value_info entries (13) go; everything else stays.
    const cut = pbFields(graphBytes).filter(([n]) => n !== 13 && (n !== 1 || kept++ < 12)).map(([, , whole]) => whole);
    add('demo-model-first-nodes.onnx', Buffer.concat(model.map(([n, w, whole]) => (n === 7 && w === 2 ? pbBytes(7, Buffer.concat(cut)) : whole))));

    const scale = tensorProto({ name: 'scale', raw: le(floatBits(0.125), 4) });
    const nodes = [
      nodeProto({ inputs: ['x', 'w'], outputs: ['xw'], name: 'mm', op: 'MatMul' }),
      nodeProto({ inputs: ['xw', 'scale'], outputs: ['scaled'], name: 'mul', op: 'Mul', domain: '' }),
      nodeProto({ inputs: ['scaled'], outputs: ['soft'], name: 'softmax', op: 'Softmax', domain: 'ai.onnx',
        attributes: [Buffer.concat([pbString(1, 'axis'), pbVarint(3, -1), pbVarint(20, 2)])] }),
      nodeProto({ inputs: ['soft'], outputs: ['t'], name: 'transpose', op: 'Transpose',
        attributes: [Buffer.concat([pbString(1, 'perm'), pbBytes(8, Buffer.concat([varint(1), varint(0)])), pbVarint(20, 7)])] }),
      nodeProto({ inputs: ['t'], outputs: ['y'], name: 'scale-attr', op: 'Custom', domain: 'com.example',
        attributes: [Buffer.concat([pbString(1, 'alpha'), pbFixed32(2, floatBits(0.5)), pbVarint(20, 1)]),
          Buffer.concat([pbString(1, 'value'), pbBytes(5, tensorProto({ name: 'v', type: 11, dims: [1], doubles: [2.5] })), pbVarint(20, 4)]),
          Buffer.concat([pbString(1, 'sizes'), pbVarint(8, 3), pbVarint(8, 5), pbVarint(20, 7)])] }),
    ];
    const initializers = [scale, tensorProto({ name: 'w', dims: [2, 2], floats: [1, 2, 3, 4] }),
      tensorProto({ name: 'big', dims: [1024, 1024], external: true })];
    add('hand-built.onnx', modelProto({ nodes, initializers, inputs: ['x'], outputs: ['y'], opsets: [['', 17], ['com.example', 1]] }));
    add('near-two-graphs.onnx', modelProto({ nodes: nodes.slice(0, 2), initializers: [scale], graphs: 2 }));
    const subgraph = Buffer.concat([pbString(1, 'then_branch'), pbBytes(6, pbString(2, 'inner')), pbVarint(20, 5)]);
    add('near-subgraph.onnx', modelProto({ nodes: [nodeProto({ inputs: ['c'], outputs: ['y'], name: 'if', op: 'If', attributes: [subgraph] })] }));
    add('tensor-scalar.pb', tensorProto({ name: 's', dims: [1, 1], raw: le(floatBits(-3), 4) }));
  }

  if (target === 'index_import') {
    for (const storage of ['none', 'f32', 'bf16', 'i8']) add(`three-documents-${storage}.bin`, indexState(threeDocuments(storage)));
    add('empty-index.bin', indexState({ dim: 8, vocab: 256, storage: 'f32', sparseOffsets: [0], colbertOffsets: [0] }));
    const near = (name, change) => {
      const state = threeDocuments(name.endsWith('-i8') ? 'i8' : name.endsWith('-bf16') ? 'bf16' : 'f32');
      change(state);
      add(`near-${name}.bin`, indexState(state));
    };
    near('offsets-decrease', (s) => { s.sparseOffsets = [0, 3, 2, 5]; });
    near('offsets-past-ids', (s) => { s.sparseOffsets = [0, 2, 6, 5]; });
    near('id-beyond-vocabulary', (s) => { s.sparseIds[4] = 50; });
    near('ids-not-ascending', (s) => { s.sparseIds = [17, 3, 0, 9, 49]; });
    near('nan-weight', (s) => { s.sparseWeights[1] = NaN; });
    near('infinite-dense', (s) => { s.dense[5] = Infinity; });
    near('dense-short', (s) => { s.dense.pop(); });
    near('colbert-offsets-decrease', (s) => { s.colbertOffsets = [0, 3, 2, 5]; });
    near('colbert-rows-missing', (s) => { s.colbertF32.length -= 4; });
    near('scales-missing-i8', (s) => { s.colbertScales.pop(); });
    near('infinite-bf16', (s) => { s.colbertBf16[3] = 0x7f80; });
  }
  return files;
}

const TARGETS = ['zip_reader', 'torch_pickle', 'safetensors', 'mini_json', 'onnx_wire', 'index_import'];

function main() {
  let total = 0;
  for (const target of TARGETS) {
    const dir = path.join(CORPUS, target);
    fs.mkdirSync(dir, { recursive: true });
    for (const name of fs.readdirSync(dir)) if (!name.startsWith('regress-')) fs.rmSync(path.join(dir, name));
    const files = corpusFor(target);
    let bytes = 0;
    for (const [name, data] of files) {
      fs.writeFileSync(path.join(dir, name), data);
      bytes += data.length;
    }
    total += bytes;
    console.log(`${target}: ${files.size} seeds, ${bytes} bytes`);
  }
  console.log(`total ${total} bytes`);
}

main();
