/**
 * The dense route of a HybridIndex: where the candidates of its dense (inner-product) recall
 * come from. The native index always holds the vectors and scans them exactly; a route may add
 * its own structure over them (an approximate graph) and answer with candidates instead. A new
 * route implements this interface and is named in the index's table of routes (hybrid_index.ts).
 *
 * Slots are the native index's document numbers. Removals are not told to a route: candidates()
 * skips slots that are no longer live, and rebuild() follows each compaction, which renumbers
 * the slots.
 */
import type { GraphRef } from './index_store';

/** The routes an index can be created with (and saves its name). */
export type DenseRouteName = 'exact' | 'hnsw';

/** Which slots hold documents now (that a search may return: with a filter, those that match it). */
export interface LiveSlots {
  /** Live documents. */
  count(): number;
  isLive(slot: number): boolean;
  /**
   * Set when a search filter narrows the slots: they may be few, and clustered anywhere in the
   * graph, so an approximate route should give up sooner and leave the search to the exact scan.
   */
  filtered?: boolean;
}

/** Where a route's saved file is, when it saved one: its MANIFEST entry, or why that entry is unusable. */
export interface SavedRoute {
  dir: string;
  ref?: GraphRef | string;
  /** Documents in the saved index (slots 0 .. count-1). */
  count: number;
  /** Their vectors, to rebuild the route from when its file is missing or unusable. */
  dense: Float32Array;
}

export interface DenseRoute {
  readonly name: DenseRouteName;
  /**
   * True for the native exact scan itself (no candidates of its own), which lets searchBatch run
   * all its queries in one native call.
   */
  readonly exact: boolean;
  /** Documents added at these slots, with their dense vectors (slots.length rows). */
  add(slots: Uint32Array, dense: Float32Array): void;
  /**
   * Up to `want` live candidate slots for `query`, nearest first; undefined to leave the dense
   * recall to the exact scan (which keeps the promise of k results).
   */
  candidates(query: Float32Array, want: number, live: LiveSlots): Uint32Array | undefined;
  /** After a compaction: the live documents are slots 0 .. count-1, their vectors `dense()`. */
  rebuild(count: number, dense: () => Float32Array): void;
  /** The route's own file, written next to the index's (absent: the route saves nothing). */
  save?(file: string): void;
  /** After a load: the route's saved file, or a rebuild from the vectors. */
  restore(saved: SavedRoute): void;
}
