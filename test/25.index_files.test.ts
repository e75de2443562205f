/**
 * Crafted HNSW graph files whose size and checksum were made to match MANIFEST, loaded in child
 * processes so that a crash is observed instead of suffered: every outcome is a clean load, a
 * rebuilt graph with a warning, or an M3Error naming the file.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { HybridIndex } from '../lib';
import { syntheticEncoded } from './index_synthetic';
import { GRAPH_DIM, loadInChildren, mutate, savedGraphIndex, writeManifest } from './index_files_support';

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
