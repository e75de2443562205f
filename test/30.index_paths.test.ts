/**
 * Index directories whose paths are FIFOs, directories or sockets, and MANIFEST or meta values of
 * the wrong JSON type: every outcome is a clean load or an M3Error naming the file.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { HybridIndex, M3Error } from '../lib';
import { openRegularFile, readRegularFile } from '../lib/base/files';
import { ROOT } from './helpers';
import { syntheticEncoded } from './index_synthetic';
import {
  GRAPH_COUNT, GRAPH_DIM, copyIndex, freshDir, loadInChildren, readManifest, freshPath, rewriteSegment, savedGraphIndex, writeManifest,
} from './index_files_support';

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
    const precious = freshPath('precious');
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

  it('texts and metadata sections of the wrong shape or type are file errors naming the segment', () => {
    const dir0 = freshDir();
    const ix = HybridIndex.create({ dim: GRAPH_DIM, vocabSize: 1000 });
    ix.add(Array.from({ length: COUNT }, (_, i) => `t${i}`), syntheticEncoded(5, COUNT, GRAPH_DIM), {
      texts: Array.from({ length: COUNT }, (_, i) => (i % 2 ? `text ${i}\nwith a newline` : undefined)),
      metadata: Array.from({ length: COUNT }, (_, i) => (i % 3 ? { lang: i % 2 ? 'en' : 'de', n: i } : undefined)),
    });
    ix.save(dir0);
    let lines: Record<'texts' | 'metadata', string[]> = { texts: [], metadata: [] };
    rewriteSegment(copyIndex(dir0), (sections) => {
      lines = { texts: sections.get('texts')!.toString('utf8').split('\n'), metadata: sections.get('metadata')!.toString('utf8').split('\n') };
    });
    assert.equal(lines.texts.length, COUNT + 1, 'one line per document, each ending in a newline');
    assert.equal(lines.texts[1], JSON.stringify('text 1\nwith a newline'));
    const at3 = (name: 'texts' | 'metadata', line: string) => Buffer.from([...lines[name].slice(0, 3), line, ...lines[name].slice(4)].join('\n'));
    const deep = `${'{"a":'.repeat(70)}1${'}'.repeat(70)}`;
    const cases: Array<[string, 'texts' | 'metadata', Buffer | undefined, RegExp]> = [
      ...['5', '{}', '["a"]', 'true'].map((line): [string, 'texts', Buffer, RegExp] =>
        [`text ${line}`, 'texts', at3('texts', line), /stored text 3 .*, not a string or null: the texts section is corrupted/]),
      ...['[1,2]', '"lang"', '5', 'false'].map((line): [string, 'metadata', Buffer, RegExp] =>
        [`metadata ${line}`, 'metadata', at3('metadata', line), /stored metadata 3 .*, not a JSON object or null: the metadata section is corrupted/]),
      ['metadata nested 70 levels', 'metadata', at3('metadata', deep), /stored metadata 3 nested more than 64 levels deep/],
      ...(['texts', 'metadata'] as const).flatMap((name): Array<[string, 'texts' | 'metadata', Buffer | undefined, RegExp]> => [
        [`${name}: a line short`, name, Buffer.from(lines[name].slice(1).join('\n')), new RegExp(`section '${name}' has 19 lines for 20 documents`)],
        [`${name}: a line more`, name, Buffer.from(['null', ...lines[name]].join('\n')), new RegExp(`section '${name}' has more than 20 lines`)],
        [`${name}: empty`, name, Buffer.alloc(0), new RegExp(`section '${name}' has 0 lines for 20 documents`)],
        [`${name}: no last newline`, name, Buffer.from(lines[name].join('\n').slice(0, -1)), new RegExp(`section '${name}' does not end with a newline`)],
        [`${name}: a line that is not JSON`, name, at3(name, '{"a'), new RegExp(`section '${name}' line 4 is not valid JSON`)],
        [`${name}: one JSON array instead of lines`, name, Buffer.from(JSON.stringify(lines[name].slice(0, -1).map((l) => JSON.parse(l)))),
          new RegExp(`section '${name}' does not end with a newline`)],
        [`${name}: missing`, name, undefined, new RegExp(`has no '${name}' section`)],
      ]),
    ];
    for (const [label, name, data, pattern] of cases) {
      const dir = copyIndex(dir0);
      const file = rewriteSegment(dir, (sections) => (data ? sections.set(name, data) : sections.delete(name)));
      refused(dir, file, pattern, label);
    }
    // A version-1 segment has no such sections, and needs none.
    const v1 = copyIndex(dir0);
    rewriteSegment(v1, (sections) => { sections.delete('texts'); sections.delete('metadata'); }, { version: 1 });
    assert.deepEqual(HybridIndex.load(v1).get('t1'), { id: 't1' });
    const v3 = copyIndex(dir0);
    const file = rewriteSegment(v3, () => {}, { version: 3 });
    refused(v3, path.join(v3, 'MANIFEST'), /has format version 3; this bge-m3 reads versions 1 and 2/, 'MANIFEST version 3');
    writeManifest(v3, { ...readManifest(v3), version: 2 });
    refused(v3, file, /has format version 3; this bge-m3 reads versions 1 and 2/, 'segment version 3');
    assert.deepEqual(HybridIndex.load(copyIndex(dir0)).get('t1'), { id: 't1', text: 'text 1\nwith a newline', metadata: { lang: 'en', n: 1 } });
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
