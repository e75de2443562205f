/**
 * Shared by the index-file tests (11, 25, 30): a temporary folder, segments rewritten section by
 * section, crafted HNSW graph files and loads in child processes, so that a crash is observed
 * instead of suffered.
 */
import { after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { spawn } from 'node:child_process';
import { HybridIndex } from '../lib';
import { mulberry32 } from '../lib/base/rng';
import { ROOT } from './helpers';
import { syntheticEncoded } from './index_synthetic';

export const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-index-files-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
export const freshDir = () => path.join(tmp, `ix-${n++}`);
/** A fresh path under the temporary folder, named after `what`. */
export const freshPath = (what: string) => path.join(tmp, `${what}-${n++}`);
export const readManifest = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'MANIFEST'), 'utf8'));
export const writeManifest = (dir: string, manifest: unknown) => fs.writeFileSync(path.join(dir, 'MANIFEST'), JSON.stringify(manifest));

/** Deterministic pseudo-random numbers, so a failing mutation can be replayed. */
export function randomSource(seed: number) {
  const next = mulberry32(seed);
  return { next, below: (n: number) => Math.floor(next() * n), pick: <T>(list: readonly T[]) => list[Math.floor(next() * list.length)] };
}

export const GRAPH_DIM = 8;
export const GRAPH_COUNT = 600;
export const SLOT_BYTES = 4;

/**
 * Where the fields of a usearch 2.25 dense index file lie (32-bit matrix dimensions, u64 keys,
 * u32 slots), so that mutations hit them on purpose rather than by luck.
 */
export function graphLayout(bytes: Buffer) {
  const rows = bytes.readUInt32LE(0);
  const rowBytes = bytes.readUInt32LE(4);
  const head = 8 + rows * rowBytes;
  const graphHead = head + 64;
  const size = Number(bytes.readBigUInt64LE(graphHead));
  const connectivity = Number(bytes.readBigUInt64LE(graphHead + 8));
  const connectivityBase = Number(bytes.readBigUInt64LE(graphHead + 16));
  const levelsAt = graphHead + 40;
  const nodes: Array<{ at: number; level: number; lists: number[] }> = [];
  let at = levelsAt + 2 * size;
  for (let i = 0; i < size; i++) {
    const level = bytes.readInt16LE(levelsAt + 2 * i);
    const lists = [at + 10];
    for (let l = 1; l <= level; l++) lists.push(at + 10 + 4 + connectivityBase * SLOT_BYTES + (l - 1) * (4 + connectivity * SLOT_BYTES));
    nodes.push({ at, level, lists });
    at += 10 + 4 + connectivityBase * SLOT_BYTES + level * (4 + connectivity * SLOT_BYTES);
  }
  assert.equal(at, bytes.length, 'the test reads the graph file as usearch writes it');
  return { rows, rowBytes, head, graphHead, levelsAt, size, nodes };
}

/** One crafted variant of a graph file and what was done to it (for the failure message). */
export function mutate(original: Buffer, seed: number): { bytes: Buffer; what: string } {
  const random = randomSource(seed);
  const layout = graphLayout(original);
  const bytes = Buffer.from(original);
  const u32s = [0, 1, 2, 0x7fffffff, 0x80000000, 0xffffffff, layout.size - 1, layout.size, layout.size + 1, 16, 32, 33, random.below(2 ** 32)];
  const u16s = [0, 1, 2, 3, 0x7fff, 0x8000, 0xffff, random.below(65536)];
  const u64s = [0n, 1n, 2n, 0xffffffffn, 0x7fffffffffffffffn, 0xffffffffffffffffn, BigInt(layout.size - 1), BigInt(layout.size),
    BigInt(layout.size + 1), 1n << 40n, BigInt(random.below(2 ** 32)) << 20n];
  const node = () => layout.nodes[random.below(layout.nodes.length)];
  const upper = layout.nodes.filter((x) => x.level > 0);
  switch (random.below(12)) {
    case 0: {
      const at = layout.head + random.below(bytes.length - layout.head);
      const bit = random.below(8);
      bytes[at] ^= 1 << bit;
      return { bytes, what: `bit ${bit} of byte ${at} flipped` };
    }
    case 1: {
      const at = random.below(bytes.length);
      bytes[at] = random.below(256);
      return { bytes, what: `byte ${at} overwritten` };
    }
    case 2: {
      // The dense header: versions, kinds, counts, dimensions, multi.
      const field = random.pick([[7, 2], [9, 2], [13, 1], [14, 1], [15, 1], [16, 1], [17, 8], [25, 8], [33, 8], [41, 1]] as const);
      const at = layout.head + field[0];
      if (field[1] === 8) bytes.writeBigUInt64LE(random.pick(u64s), at);
      else if (field[1] === 2) bytes.writeUInt16LE(random.pick(u16s), at);
      else bytes[at] = random.pick([0, 1, 2, 0x63, 0x65, 0x69, 10, 11, 12, 14, 15, 0xff]);
      return { bytes, what: `dense header field at +${field[0]} overwritten` };
    }
    case 3: {
      const field = random.below(5);
      bytes.writeBigUInt64LE(random.pick(u64s), layout.graphHead + 8 * field);
      return { bytes, what: `graph header field ${field} overwritten` };
    }
    case 4: {
      const i = random.below(layout.size);
      bytes.writeUInt16LE(random.pick(u16s), layout.levelsAt + 2 * i);
      return { bytes, what: `level of node ${i} in the levels table overwritten` };
    }
    case 5: {
      const x = node();
      if (random.below(2)) bytes.writeBigUInt64LE(random.pick(u64s), x.at);
      else bytes.writeUInt16LE(random.pick(u16s), x.at + 8);
      return { bytes, what: `key or level of the node at ${x.at} overwritten` };
    }
    case 6: {
      const x = random.below(3) === 0 && upper.length ? upper[random.below(upper.length)] : node();
      const list = x.lists[random.below(x.lists.length)];
      bytes.writeUInt32LE(random.pick(u32s), list);
      return { bytes, what: `neighbour count at ${list} overwritten` };
    }
    case 7: {
      const x = random.below(3) === 0 && upper.length ? upper[random.below(upper.length)] : node();
      const list = x.lists[random.below(x.lists.length)];
      const count = bytes.readUInt32LE(list);
      if (count === 0) return { bytes, what: 'nothing (an empty neighbour list)' };
      const at = list + 4 + SLOT_BYTES * random.below(count);
      const self = layout.nodes.indexOf(x);
      const lower = layout.nodes.findIndex((y) => y.level === 0);
      bytes.writeUInt32LE(random.pick([...u32s, self, lower, bytes.readUInt32LE(list + 4)]), at);
      return { bytes, what: `neighbour slot at ${at} overwritten` };
    }
    case 8: {
      const length = random.below(3) ? layout.head + random.below(bytes.length - layout.head) : random.below(bytes.length);
      return { bytes: bytes.subarray(0, length), what: `truncated to ${length} bytes` };
    }
    case 9: {
      const extra = 1 + random.below(64);
      return { bytes: Buffer.concat([bytes, Buffer.alloc(extra, random.below(256))]), what: `${extra} bytes appended` };
    }
    case 10: {
      const at = 8 + 4 * random.below(layout.rows * (layout.rowBytes / 4));
      bytes.writeFloatLE(random.pick([NaN, Infinity, -Infinity, 3e38, -3e38]), at);
      return { bytes, what: `vector element at ${at} overwritten` };
    }
    default: {
      const at = random.pick([0, 4]);
      bytes.writeUInt32LE(random.pick(u32s), at);
      return { bytes, what: `matrix ${at ? 'row bytes' : 'rows'} overwritten` };
    }
  }
}

/**
 * Loads each directory in turn, printing one JSON line per directory: how the load went and the
 * ids a search returns. Run as a child process, so that a native crash ends only the child.
 */
export const LOAD_AND_SEARCH = `
  const [lib, synthetic, jobs] = process.argv.slice(1);
  const { HybridIndex } = require(lib);
  const { syntheticEncoded } = require(synthetic);
  const { dirs, count, dim } = JSON.parse(require('fs').readFileSync(jobs, 'utf8'));
  const queries = syntheticEncoded(11, 4, dim);
  let warnings = [];
  process.emitWarning = (message) => { warnings.push(String(message)); };
  for (const [i, dir] of dirs) {
    warnings = [];
    let line;
    try {
      const index = HybridIndex.load(dir);
      const results = [];
      for (let q = 0; q < queries.count; q++) {
        // Asking the graph for few candidates walks it as a real search would; asking for all of
        // them makes the result independent of the graph's shape, so it can be compared.
        index.search(queries.row(q), { k: 5, denseCandidates: 8, routes: ['dense'], weights: [1, 0, 0] });
        results.push(index.search(queries.row(q), { k: 10, denseCandidates: count }).map((h) => h.id));
      }
      line = { i, outcome: warnings.length ? 'rebuilt' : 'loaded', warnings, results };
    } catch (err) {
      line = { i, outcome: err && err.name === 'M3Error' && typeof err.code === 'string' ? 'M3Error ' + err.code : 'uncoded error', message: String(err && err.message) };
    }
    process.stdout.write(JSON.stringify(line) + '\\n');
  }
`;

interface LoadLine { i: number; outcome: string; warnings?: string[]; results?: unknown[][]; message?: string }

/**
 * Runs LOAD_AND_SEARCH over `dirs`, restarting after each crash; a crash (or a child still busy
 * after `timeoutMs`: a hang) is reported for the directory being loaded.
 */
export async function loadInChildren(dirs: Array<[number, string]>, jobFile: string, timeoutMs = 120_000):
  Promise<{ lines: LoadLine[]; crashes: Array<{ i: number; how: string }> }> {
  const lines: LoadLine[] = [];
  const crashes: Array<{ i: number; how: string }> = [];
  let pending = dirs;
  while (pending.length) {
    fs.writeFileSync(jobFile, JSON.stringify({ dirs: pending, count: GRAPH_COUNT, dim: GRAPH_DIM }));
    const child = spawn(process.execPath, ['-e', LOAD_AND_SEARCH, path.join(ROOT, 'dist', 'lib', 'index.js'),
      path.join(ROOT, 'dist', 'test', 'index_synthetic.js'), jobFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => {
      err += `\nstill running after ${timeoutMs} ms: killed`;
      child.kill('SIGKILL');
    }, timeoutMs);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('close', (c, s) => resolve([c, s])));
    clearTimeout(timer);
    const done = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LoadLine);
    lines.push(...done);
    if (done.length === pending.length && code === 0) break;
    const crashed = pending[done.length];
    crashes.push({ i: crashed[0], how: `${signal ?? `exit code ${code}`}: ${err.trim().split('\n').slice(-3).join(' | ')}` });
    pending = pending.slice(done.length + 1);
  }
  return { lines, crashes };
}

/**
 * A saved index with the approximate dense route (GRAPH_COUNT documents of GRAPH_DIM dimensions)
 * whose graph file is the same in every run: usearch adds many vectors at once on several
 * threads, so the graph that save() writes differs from run to run; added one at a time, in slot
 * order, it does not, and neither do the crafted files made from it.
 */
export function savedGraphIndex() {
  const dir = freshDir();
  const docs = syntheticEncoded(3, GRAPH_COUNT, GRAPH_DIM);
  const index = HybridIndex.create({ dim: GRAPH_DIM, vocabSize: 1000, dense: 'hnsw' });
  index.add(Array.from({ length: GRAPH_COUNT }, (_, i) => `d${i}`), docs);
  index.save(dir);
  const manifest = readManifest(dir);
  const { Index } = require('usearch');
  const graph = new Index({ dimensions: GRAPH_DIM, metric: 'ip', connectivity: 16, expansion_add: 128, expansion_search: 128 });
  for (let slot = 0; slot < GRAPH_COUNT; slot++) graph.add(BigUint64Array.of(BigInt(slot)), docs.dense!.subarray(slot * GRAPH_DIM, (slot + 1) * GRAPH_DIM));
  const file = path.join(dir, manifest.graph.file);
  fs.rmSync(file);
  graph.save(file);
  const bytes = fs.readFileSync(file);
  manifest.graph = { file: manifest.graph.file, bytes: bytes.length, crc32: zlib.crc32(bytes) };
  writeManifest(dir, manifest);
  return { dir, index, manifest };
}

/** A copy of an index directory: MANIFEST copied, the rest hard-linked (replace a file, never write to it). */
export function copyIndex(from: string): string {
  const dir = freshDir();
  fs.mkdirSync(dir);
  for (const name of fs.readdirSync(from)) {
    if (name === 'MANIFEST') fs.copyFileSync(path.join(from, name), path.join(dir, name));
    else if (/^(segment|graph)-/.test(name)) fs.linkSync(path.join(from, name), path.join(dir, name));
  }
  return dir;
}


/**
 * Rewrites the sections `edit` changes in an index's segment, keeping every checksum and size
 * right; with `version`, also the version in the segment's header and in MANIFEST (to make a
 * segment of an older format). Returns the segment's path.
 */
export function rewriteSegment(dir: string, edit: (sections: Map<string, Buffer>) => void, { version }: { version?: number } = {}): string {
  const manifest = readManifest(dir);
  const file = path.join(dir, manifest.segment);
  const bytes = fs.readFileSync(file);
  const sections = new Map<string, Buffer>();
  let at = 16;
  for (let i = 0; i < bytes.readUInt32LE(12); i++) {
    const name = bytes.toString('latin1', at, at + 16).replace(/\0+$/, '');
    const length = Number(bytes.readBigUInt64LE(at + 16));
    sections.set(name, bytes.subarray(at + 32, at + 32 + length));
    at += 32 + length + ((8 - (length % 8)) % 8);
  }
  edit(sections);
  const chunks: Buffer[] = [Buffer.from(bytes.subarray(0, 16))];
  chunks[0].writeUInt32LE(sections.size, 12);
  if (version !== undefined) chunks[0].writeUInt32LE(version, 8);
  for (const [name, data] of sections) {
    const entry = Buffer.alloc(32);
    entry.write(name, 0, 16, 'latin1');
    entry.writeBigUInt64LE(BigInt(data.length), 16);
    entry.writeUInt32LE(zlib.crc32(data), 24);
    chunks.push(entry, data, Buffer.alloc((8 - (data.length % 8)) % 8));
  }
  const out = Buffer.concat(chunks);
  fs.rmSync(file);
  fs.writeFileSync(file, out);
  writeManifest(dir, { ...manifest, bytes: out.length, crc32: zlib.crc32(out), ...(version !== undefined ? { version } : {}) });
  return file;
}
