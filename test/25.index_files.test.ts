/**
 * Index directories whose files are not what they should be: crafted HNSW graph files whose size
 * and checksum were made to match MANIFEST (loaded in child processes, so that a crash is
 * observed instead of suffered), paths that are FIFOs, directories or sockets, and MANIFEST or
 * meta values of the wrong JSON type. Every outcome is a clean load or an M3Error naming the file.
 */
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { HybridIndex, M3Error } from '../lib';
import { mulberry32 } from '../lib/base/rng';
import { openRegularFile, readRegularFile } from '../lib/base/files';
import { ROOT } from './helpers';
import { syntheticEncoded } from './index_synthetic';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-index-files-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const freshDir = () => path.join(tmp, `ix-${n++}`);
const readManifest = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'MANIFEST'), 'utf8'));
const writeManifest = (dir: string, manifest: unknown) => fs.writeFileSync(path.join(dir, 'MANIFEST'), JSON.stringify(manifest));

/** Deterministic pseudo-random numbers, so a failing mutation can be replayed. */
function randomSource(seed: number) {
  const next = mulberry32(seed);
  return { next, below: (n: number) => Math.floor(next() * n), pick: <T>(list: readonly T[]) => list[Math.floor(next() * list.length)] };
}

const GRAPH_DIM = 8;
const GRAPH_COUNT = 600;
const SLOT_BYTES = 4;

/**
 * Where the fields of a usearch 2.25 dense index file lie (32-bit matrix dimensions, u64 keys,
 * u32 slots), so that mutations hit them on purpose rather than by luck.
 */
function graphLayout(bytes: Buffer) {
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
function mutate(original: Buffer, seed: number): { bytes: Buffer; what: string } {
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
const LOAD_AND_SEARCH = `
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
async function loadInChildren(dirs: Array<[number, string]>, jobFile: string, timeoutMs = 120_000):
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
function savedGraphIndex() {
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
function copyIndex(from: string): string {
  const dir = freshDir();
  fs.mkdirSync(dir);
  for (const name of fs.readdirSync(from)) {
    if (name === 'MANIFEST') fs.copyFileSync(path.join(from, name), path.join(dir, name));
    else if (/^(segment|graph)-/.test(name)) fs.linkSync(path.join(from, name), path.join(dir, name));
  }
  return dir;
}

describe('a crafted HNSW graph file whose size and checksum match MANIFEST', () => {
  it('never crashes the load or a later search: it is loaded intact, or rebuilt from the vectors with a warning', async (t) => {
    const { dir: base, index, manifest } = savedGraphIndex();
    const original = fs.readFileSync(path.join(base, manifest.graph.file));
    const warn = t.mock.method(process, 'emitWarning');
    HybridIndex.load(base);
    assert.equal(warn.mock.callCount(), 0, 'the file the crafted ones are made from loads as it is');
    warn.mock.restore();
    const queries = syntheticEncoded(11, 4, GRAPH_DIM);
    const expected = Array.from({ length: queries.count }, (_, q) =>
      index.search(queries.row(q), { k: 10, exhaustive: true }).map((h) => h.id));

    const MUTATIONS = 320;
    const what: string[] = [];
    const dirs: Array<[number, string]> = [];
    for (let i = 0; i < MUTATIONS; i++) {
      const { bytes, what: description } = mutate(original, 1000 + i);
      what.push(description);
      const dir = path.join(base, `mutation-${i}`);
      fs.mkdirSync(dir);
      fs.linkSync(path.join(base, manifest.segment), path.join(dir, manifest.segment));
      fs.writeFileSync(path.join(dir, manifest.graph.file), bytes);
      writeManifest(dir, { ...manifest, graph: { file: manifest.graph.file, bytes: bytes.length, crc32: zlib.crc32(bytes) } });
      dirs.push([i, dir]);
    }
    // Two children share the work (each one's crashes restart it from the next directory).
    const halves = [dirs.filter((_, k) => k % 2 === 0), dirs.filter((_, k) => k % 2 === 1)];
    const runs = await Promise.all(halves.map((half, h) => loadInChildren(half, path.join(base, `jobs-${h}.json`))));
    const crashes = runs.flatMap((r) => r.crashes);
    assert.deepEqual(crashes.map((c) => `mutation ${c.i} (${what[c.i]}) crashed the loading process: ${c.how}`), [], 'no crash');

    const lines = runs.flatMap((r) => r.lines).sort((a, b) => a.i - b.i);
    assert.equal(lines.length, MUTATIONS);
    const outcomes = new Map<string, number>();
    for (const line of lines) {
      outcomes.set(line.outcome, (outcomes.get(line.outcome) ?? 0) + 1);
      const label = `mutation ${line.i} (${what[line.i]})`;
      assert.ok(['loaded', 'rebuilt', 'M3Error ERR_MODEL_FILES'].includes(line.outcome), `${label}: ${line.outcome} ${line.message ?? ''}`);
      if (line.outcome === 'rebuilt') {
        assert.equal(line.warnings!.length, 1, label);
        assert.match(line.warnings![0], /rebuilding the HNSW graph/, label);
        assert.ok(line.warnings![0].includes(manifest.graph.file), `${label}: the warning names the file: ${line.warnings![0]}`);
      }
      if (line.results) assert.deepEqual(line.results, expected, `${label}: the same results as the original index`);
    }
    t.diagnostic(`outcomes of ${MUTATIONS} crafted graph files: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    // Most crafted files are caught; the rest changed nothing a load relies on (padding, unused slots, vector values).
    assert.ok((outcomes.get('rebuilt') ?? 0) >= MUTATIONS * 0.6, `outcomes ${JSON.stringify([...outcomes])}`);
  });
});

/** Creates a FIFO (named pipe) at `file`. */
function mkfifo(file: string): void {
  fs.rmSync(file, { recursive: true, force: true });
  execFileSync('mkfifo', [file]);
}

/** Listens on a Unix socket at `file`; close the returned server when done. */
async function socketAt(file: string): Promise<net.Server> {
  fs.rmSync(file, { force: true });
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(file, resolve));
  return server;
}

describe('index paths that are not regular files', { skip: process.platform === 'win32' && 'no FIFOs or Unix sockets' }, () => {
  const isM3 = (code: string, ...parts: Array<string | RegExp>) => (e: unknown) => {
    assert.ok(e instanceof M3Error, `an M3Error, not ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const part of parts) assert.ok(typeof part === 'string' ? e.message.includes(part) : part.test(e.message), `${e.message} names ${part}`);
    return true;
  };

  it('a FIFO, directory, socket or link to a FIFO in place of MANIFEST, segment or graph neither hangs the load nor fails obscurely', async () => {
    const { dir: base, manifest } = savedGraphIndex();
    const cases: Array<{ dir: string; file: string; kind: string; loads?: boolean }> = [];
    const variant = (name: string, kind: string, make: (file: string) => void, loads = false) => {
      const dir = copyIndex(base);
      const file = path.join(dir, name);
      fs.rmSync(file, { force: true });
      make(file);
      cases.push({ dir, file, kind, loads });
    };
    variant('MANIFEST', 'a FIFO (named pipe)', mkfifo);
    variant('MANIFEST', 'a directory', (f) => fs.mkdirSync(f));
    variant(manifest.segment, 'a FIFO (named pipe)', mkfifo);
    variant(manifest.segment, 'a directory', (f) => fs.mkdirSync(f));
    variant(manifest.segment, 'a symbolic link to a FIFO (named pipe)', (f) => {
      mkfifo(`${f}.fifo`);
      fs.symlinkSync(`${f}.fifo`, f);
    });
    variant(manifest.segment, 'a symbolic link to a character device', (f) => fs.symlinkSync('/dev/zero', f));
    // Graphs are derived data: one that is not a regular file is rebuilt, with a warning naming it.
    variant(manifest.graph.file, 'a FIFO (named pipe)', mkfifo, true);
    variant(manifest.graph.file, 'a directory', (f) => fs.mkdirSync(f), true);
    const sockets: net.Server[] = [];
    for (const name of [manifest.segment, manifest.graph.file]) {
      const dir = copyIndex(base);
      const file = path.join(dir, name);
      sockets.push(await socketAt(file));
      cases.push({ dir, file, kind: 'a socket', loads: name === manifest.graph.file });
    }
    // A link to a regular file is a regular file.
    const linked = copyIndex(base);
    fs.rmSync(path.join(linked, manifest.segment));
    fs.symlinkSync(path.join(base, manifest.segment), path.join(linked, manifest.segment));

    let runs;
    try {
      runs = await loadInChildren([...cases.map((c, i) => [i, c.dir] as [number, string]), [cases.length, linked]], path.join(base, 'jobs.json'), 30_000);
    } finally {
      for (const server of sockets) server.close();
    }
    assert.deepEqual(runs.crashes.map((c) => `${cases[c.i]?.kind ?? 'a link'} at '${cases[c.i]?.file}': ${c.how}`), [], 'no hang and no crash');
    for (const line of runs.lines) {
      if (line.i === cases.length) {
        assert.equal(line.outcome, 'loaded', `a link to the segment loads: ${line.message ?? ''}`);
        continue;
      }
      const { file, kind, loads } = cases[line.i];
      if (loads) {
        assert.equal(line.outcome, 'rebuilt', `${kind} at ${file}: ${line.message ?? ''}`);
        assert.ok(line.warnings![0].includes(file) && line.warnings![0].includes(kind), line.warnings![0]);
      } else {
        assert.equal(line.outcome, 'M3Error ERR_MODEL_FILES', `${kind} at ${file}: ${line.message}`);
        assert.ok(line.message!.includes(`'${file}' is ${kind}, not a regular file`), line.message);
      }
    }
    assert.equal(runs.lines.length, cases.length + 1);
  });

  it('a LOCK that a save did not create (FIFO, directory, symbolic link) is refused, and what a link points to is left alone', () => {
    const dir = freshDir();
    const index = HybridIndex.create({ dim: GRAPH_DIM, vocabSize: 1000 });
    index.add(['a', 'b'], syntheticEncoded(4, 2, GRAPH_DIM));
    index.save(dir);
    const lock = path.join(dir, 'LOCK');
    const precious = path.join(tmp, `precious-${n++}`);
    fs.writeFileSync(precious, 'keep me');
    const kinds: Array<[string, (file: string) => void]> = [
      ['a FIFO (named pipe)', mkfifo],
      ['a directory', (f) => fs.mkdirSync(f)],
      ['a symbolic link', (f) => fs.symlinkSync(precious, f)],
    ];
    for (const [kind, make] of kinds) {
      make(lock);
      assert.throws(() => index.save(dir), isM3('ERR_MODEL_FILES', `'${lock}' is ${kind}, not the lock file`));
      fs.rmSync(lock, { recursive: true });
    }
    assert.equal(fs.readFileSync(precious, 'utf8'), 'keep me');
    index.save(dir);
    assert.equal(HybridIndex.load(dir).size, 2);
  });

  it('openRegularFile and readRegularFile refuse what is not a regular file, naming it and what it is', () => {
    const dir = freshDir();
    fs.mkdirSync(dir);
    const fifo = path.join(dir, 'fifo');
    mkfifo(fifo);
    assert.throws(() => openRegularFile(fifo, 'Model file'), isM3('ERR_MODEL_FILES', `Model file '${fifo}' is a FIFO (named pipe), not a regular file`));
    assert.throws(() => readRegularFile(dir), isM3('ERR_MODEL_FILES', `'${dir}' is a directory`));
    assert.throws(() => readRegularFile('/dev/null'), isM3('ERR_MODEL_FILES', `'/dev/null' is a character device`));
    assert.throws(() => readRegularFile(path.join(dir, 'absent')), isM3('ERR_MODEL_FILES', /absent' is missing/));
    const file = path.join(dir, 'file');
    fs.writeFileSync(file, 'content');
    assert.equal(readRegularFile(file).toString(), 'content');
    assert.throws(() => readRegularFile(file, 'File', 3), isM3('ERR_MODEL_FILES', /has 7 bytes, more than the 3/));
  });

  it('a FIFO that appears between the check and the open neither blocks the open nor is read', () => {
    const dir = freshDir();
    fs.mkdirSync(dir);
    const fifo = path.join(dir, 'fifo');
    mkfifo(fifo);
    // In a child process, so that an open that blocks is a timeout here rather than a hung test.
    // Its stat is made to see a regular file, as if the FIFO took the file's place just after.
    const script = `const fs = require('fs');
      const stat = fs.statSync;
      fs.statSync = (file, ...rest) => stat(file === process.argv[2] ? process.execPath : file, ...rest);
      try { require(process.argv[1]).openRegularFile(process.argv[2], 'Model file'); console.log('opened'); }
      catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })); }`;
    const child = spawnSync(process.execPath, ['-e', script, path.join(ROOT, 'dist', 'lib', 'base', 'files.js'), fifo], { timeout: 20_000, encoding: 'utf8' });
    assert.equal(child.signal, null, 'the open did not block');
    const outcome = JSON.parse(child.stdout);
    assert.deepEqual(outcome, { name: 'M3Error', code: 'ERR_MODEL_FILES', message: `Model file '${fifo}' is a FIFO (named pipe), not a regular file; put the file itself at this path.` });
  });
});

/** Rewrites the sections `edit` changes in an index's segment, keeping every checksum and size right. */
function rewriteSegment(dir: string, edit: (sections: Map<string, Buffer>) => void): string {
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
  writeManifest(dir, { ...manifest, bytes: out.length, crc32: zlib.crc32(out) });
  return file;
}

describe('MANIFEST, meta and ids values of the wrong JSON type', () => {
  const COUNT = 20;
  const base = freshDir();
  const index = HybridIndex.create({ dim: GRAPH_DIM, vocabSize: 1000, model: { dim: GRAPH_DIM, vocabSize: 1000, layout: 'synthetic' } });
  index.add(Array.from({ length: COUNT }, (_, i) => (i % 2 ? `d${i}` : i)), syntheticEncoded(5, COUNT, GRAPH_DIM));
  index.save(base);
  const manifest = readManifest(base);
  const segmentJson = (name: 'meta' | 'ids') => {
    const dir = copyIndex(base);
    let value: unknown;
    rewriteSegment(dir, (sections) => { value = JSON.parse(sections.get(name)!.toString('utf8')); });
    return value as Record<string, unknown> & unknown[];
  };
  const meta = segmentJson('meta');
  const ids = segmentJson('ids');
  /** load fails with ERR_MODEL_FILES, naming `file` (MANIFEST or the segment) and matching `pattern`. */
  const refused = (dir: string, file: string, pattern: RegExp, label: string) => assert.throws(() => HybridIndex.load(dir), (e: unknown) => {
    assert.ok(e instanceof M3Error, `${label}: an M3Error, not ${String(e)}`);
    assert.equal(e.code, 'ERR_MODEL_FILES', `${label}: ${e.message}`);
    assert.ok(e.message.includes(`'${file}'`), `${label}: ${e.message} names ${file}`);
    assert.match(e.message, pattern, label);
    return true;
  });

  it('a MANIFEST that is not a JSON object, or whose fields have the wrong type, is a file error naming it', () => {
    const values: Array<[string, unknown, RegExp]> = [
      ['null', null, /holds null, not a JSON object/],
      ['a number', 42, /holds number 42, not a JSON object/],
      ['an array', [manifest], /holds an array of length 1, not a JSON object/],
      ['a string', 'MANIFEST', /holds "MANIFEST", not a JSON object/],
      ['true', true, /holds boolean true, not a JSON object/],
      ['format null', { ...manifest, format: null }, /format null/],
      ['version "1"', { ...manifest, version: '1' }, /version "1"/],
      ['segment 5', { ...manifest, segment: 5 }, /names no valid segment file/],
      ['segment outside the directory', { ...manifest, segment: '../segment-x.bin' }, /names no valid segment file/],
      ['bytes "123"', { ...manifest, bytes: String(manifest.bytes) }, /size as "\d+", not a byte count/],
      ['bytes 1e300', { ...manifest, bytes: 1e300 }, /size as number 1e\+300, not a byte count/],
      ['crc32 null', { ...manifest, crc32: null }, /checksum as null, not a CRC-32/],
      ['crc32 2^32', { ...manifest, crc32: 2 ** 32 }, /checksum as number 4294967296, not a CRC-32/],
    ];
    for (const [label, value, pattern] of values) {
      const dir = copyIndex(base);
      writeManifest(dir, value);
      refused(dir, path.join(dir, 'MANIFEST'), pattern, `MANIFEST ${label}`);
    }
    const dir = copyIndex(base);
    fs.writeFileSync(path.join(dir, 'MANIFEST'), `${JSON.stringify(manifest)}${' '.repeat(2 << 20)}`);
    refused(dir, path.join(dir, 'MANIFEST'), /has \d+ bytes, more than the 1048576/, 'a MANIFEST of 2 MiB');
  });

  it('meta fields and stored ids of the wrong JSON type are file errors naming the segment', () => {
    const metas: Array<[string, unknown, RegExp]> = [
      ['null', null, /meta section holding null, not a JSON object/],
      ['a number', 5, /meta section holding number 5/],
      ['an array', [meta], /meta section holding an array/],
      ['a string', 'meta', /meta section holding "meta"/],
      ...([
        ['dim', ['64', 0, -8, 1.5, null, 1e300, true]],
        ['vocabSize', ['1000', 0, 2.5, null, [1000], 1e300]],
        ['count', ['20', -1, 1.5, null, 1e300, 2 ** 53]],
        ['colbert', [true, 'f16', null, 0, ['f32']]],
        ['dense', ['ivf', null, 5, {}]],
        ['model', [null, 5, 'synthetic', [GRAPH_DIM], { dim: '8', vocabSize: 1000 }, { dim: GRAPH_DIM }, { dim: GRAPH_DIM, vocabSize: 1000, layout: 5 }]],
      ] as Array<[string, unknown[]]>).flatMap(([field, bad]) => bad.map((value) =>
        [`${field} ${JSON.stringify(value)}`, { ...meta, [field]: value }, /invalid meta section/] as [string, unknown, RegExp])),
      // Well typed but out of range, or not matching each other: settings the index refuses.
      ['dim 1e9', { ...meta, dim: 1e9 }, /invalid settings/],
      ['vocabSize 2^30', { ...meta, vocabSize: 2 ** 30 }, /invalid settings/],
      ['model of another dim', { ...meta, model: { dim: 16, vocabSize: 1000 } }, /invalid settings/],
      ['count one more than the ids', { ...meta, count: COUNT + 1 }, /lists 20 ids for 21 documents/],
    ];
    for (const [label, value, pattern] of metas) {
      const dir = copyIndex(base);
      const file = rewriteSegment(dir, (sections) => sections.set('meta', Buffer.from(JSON.stringify(value))));
      refused(dir, file, pattern, `meta ${label}`);
    }
    const idLists: Array<[string, unknown, RegExp]> = [
      ['null', null, /lists no ids for 20 documents/],
      ['an object', { 0: 'a' }, /lists no ids/],
      ['a string', 'ids', /lists no ids/],
      ['one short', ids.slice(1), /lists 19 ids for 20 documents/],
      ...[1e300, 2 ** 53, -(2 ** 53), 1.5, null, true, {}, ['x']].map((bad) =>
        [`with ${JSON.stringify(bad)}`, [...ids.slice(0, 3), bad, ...ids.slice(4)], /stored id 3 .*not a string or a safe integer/] as [string, unknown, RegExp]),
      ['with a duplicate', [...ids.slice(0, 3), ids[1], ...ids.slice(4)], /lists id "d1" twice/],
    ];
    for (const [label, value, pattern] of idLists) {
      const dir = copyIndex(base);
      const file = rewriteSegment(dir, (sections) => sections.set('ids', Buffer.from(JSON.stringify(value))));
      refused(dir, file, pattern, `ids ${label}`);
    }
    // The untouched copy still loads, ids and all.
    const loaded = HybridIndex.load(copyIndex(base));
    assert.equal(loaded.size, COUNT);
    assert.deepEqual(loaded.search(syntheticEncoded(5, COUNT, GRAPH_DIM).row(2), { k: 1, exhaustive: true }).map((h) => h.id), [2]);
  });

  it('a graph entry of the wrong type in MANIFEST rebuilds the graph with a warning', (t) => {
    const { dir: graphBase, manifest: m } = savedGraphIndex();
    const warn = t.mock.method(process, 'emitWarning', () => {});
    for (const graph of [5, null, 'graph-x.usearch', { file: m.graph.file, bytes: '1', crc32: m.graph.crc32 }, { file: '../graph-x.usearch', bytes: 1, crc32: 1 }]) {
      const dir = copyIndex(graphBase);
      writeManifest(dir, { ...m, graph });
      const before = warn.mock.callCount();
      assert.equal(HybridIndex.load(dir).size, GRAPH_COUNT);
      assert.equal(warn.mock.callCount(), before + 1, JSON.stringify(graph));
      assert.match(String(warn.mock.calls[before].arguments[0]), /rebuilding the HNSW graph.*MANIFEST' names its graph file as/);
    }
  });
});
