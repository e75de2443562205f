/**
 * The approximate dense route: an HNSW graph over the dense vectors (the npm package usearch),
 * for large corpora: faster than the exact scan, with a recall below 1 that the index benchmark
 * reports. The graph is saved next to the index (graph-<id>.usearch) and read back instead of
 * rebuilt when it checks out completely (index_load.ts, verifyGraph).
 */
import * as fs from 'node:fs';
import { pathOfOpenFile } from '../base/files';
import type { DenseRoute, LiveSlots, SavedRoute } from './dense_route';
import { verifyGraph } from './index_load';
import type { GraphRef } from './index_store';

interface UsearchIndex {
  add(keys: BigUint64Array, vectors: Float32Array): void;
  remove(keys: BigUint64Array): unknown;
  search(vectors: Float32Array, k: number): { keys: BigUint64Array };
  size(): number;
  dimensions(): number;
  save(file: string): void;
  load(file: string): void;
}

/** An empty graph (the settings that hnsw_graph_check.ts expects of a saved one). */
function createGraph(dim: number): UsearchIndex {
  const { Index } = require('usearch') as { Index: new (options: Record<string, unknown>) => UsearchIndex };
  return new Index({ dimensions: dim, metric: 'ip', connectivity: 16, expansion_add: 128, expansion_search: 128 });
}

/** Slots 0 .. count-1 as usearch keys. */
function slotKeys(count: number): BigUint64Array {
  return BigUint64Array.from({ length: count }, (_, i) => BigInt(i));
}

export class HnswRoute implements DenseRoute {
  readonly name = 'hnsw';
  readonly exact = false;
  private graph: UsearchIndex;

  constructor(private readonly dim: number) {
    this.graph = createGraph(dim);
  }

  add(slots: Uint32Array, dense: Float32Array): void {
    this.graph.add(BigUint64Array.from(slots, (s) => BigInt(s)), dense);
  }

  /**
   * Up to `want` live slots from the graph, nearest first. The graph also holds removed slots
   * (usearch 2.25 may keep a removed key reachable after reusing its node, so it is never asked
   * to forget single entries), so it is asked for more until enough live ones come back. Where
   * even the whole graph's answer falls short (an approximate graph need not reach every node),
   * undefined: the exact route then keeps the promise of k results.
   *
   * With a filter, the slots that match may be a small share of the graph: asking the graph for
   * more than an eighth of its entries costs a good part of an exact scan and still may not find
   * them (the matching documents can sit far from the query), so then undefined at once, and the
   * exact scan over the matching slots answers instead.
   */
  candidates(query: Float32Array, want: number, live: LiveSlots): Uint32Array | undefined {
    const total = this.graph.size();
    if (total === 0) return undefined;
    // Enough entries to hold `want` live ones if the removed (or filtered out) ones are spread evenly.
    const first = Math.ceil((want * total) / Math.max(1, live.count()));
    const most = live.filtered ? Math.floor(total / 8) : total;
    if (live.filtered && first > most) return undefined;
    for (let ask = Math.min(first, most); ; ask = Math.min(most, ask * 2)) {
      const seen = new Set<number>();
      const found: number[] = [];
      for (const key of this.graph.search(query, ask).keys) {
        const slot = Number(key);
        if (!live.isLive(slot) || seen.has(slot)) continue;
        seen.add(slot);
        found.push(slot);
        if (found.length === want) return Uint32Array.from(found);
      }
      if (ask >= most) return found.length >= Math.min(want, live.count()) ? Uint32Array.from(found) : undefined;
    }
  }

  /** Slots were renumbered: the graph is built anew from the stored vectors. */
  rebuild(count: number, dense: () => Float32Array): void {
    this.graph = createGraph(this.dim);
    this.graph.add(slotKeys(count), dense());
  }

  save(file: string): void {
    this.graph.save(file);
  }

  restore(saved: SavedRoute): void {
    if (!this.readGraph(saved.dir, saved.ref, saved.count)) this.graph.add(slotKeys(saved.count), saved.dense);
  }

  /**
   * Replaces the (empty) graph with the saved one when its file checks out completely (see
   * verifyGraph) and holds one vector per document; false when it has to be rebuilt instead: with
   * a warning saying why, which `ref` may already say; quietly when no graph was saved.
   */
  private readGraph(dir: string, ref: GraphRef | string | undefined, count: number): boolean {
    if (ref === undefined) return false;
    const verified = typeof ref === 'string' ? { file: undefined, fd: undefined, why: ref } : verifyGraph(dir, ref, { dimensions: this.dim, count });
    let why = verified.why;
    if (verified.fd !== undefined) {
      const { file, fd } = verified;
      try {
        const graph = createGraph(this.dim);
        // usearch opens the file by name: give it a name for the very file that was checked.
        graph.load(pathOfOpenFile(fd, file, 'Index file'));
        if (graph.size() === count && graph.dimensions() === this.dim) {
          this.graph = graph;
          return true;
        }
        why = `'${file}' holds ${graph.size()} vectors of ${graph.dimensions()} dimensions, not ${count} of ${this.dim}`;
      } catch (err) {
        why = `'${file}' could not be read: ${(err as Error).message}`;
      } finally {
        fs.closeSync(fd);
      }
    }
    process.emitWarning(`bge-m3 index: rebuilding the HNSW graph from the vectors, because ${why}.`, { code: 'BGE_M3_INDEX_GRAPH' });
    return false;
  }
}
