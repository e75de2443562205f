/**
 * HybridIndex: BGE-M3's "multi-route recall, then rerank" as an embedded, in-process index.
 * Candidates come from the dense route (exact inner products, or an approximate graph: see
 * dense_route.ts) and the sparse route (an inverted index over token ids); they are reranked by
 * the weighted mean of the dense, lexical and ColBERT scores (the same formula as computeScore's
 * 'colbert+sparse+dense'). Documents may carry a text and metadata (document_fields.ts); a
 * search filter over the metadata (filter.ts) becomes a mask of allowed slots that every route
 * honours. A saved index's files: index_store.ts (format, save), index_load.ts (load).
 */
import { M3Error, fromNative, inputError } from '../base/errors';
import { native, type NativeHybridIndex } from '../addon/native';
import type { EncodeOutput, EncodeRow } from '../engine/outputs';
import { BGE_M3_VOCAB_SIZE } from '../base/defaults';
import { checkChoice, checkInteger, checkNonEmptyString, checkOptions, optionalInteger } from '../base/validate';
import { MAX_COUNT, searchParams, type SearchParamOptions } from './search_params';
import type { DenseRoute, DenseRouteName, LiveSlots } from './dense_route';
import { documentBatches, type DocumentBatch } from './document_export';
import { checkFields, type DocumentFields, type DocumentMetadata } from './document_fields';
import { ExactRoute } from './exact_route';
import { MetadataFilter } from './filter';
import { HnswRoute } from './hnsw_route';
import { loadIndex } from './index_load';
import { saveIndex, type ModelIdentity } from './index_store';

/** The dense routes an index can be created with, by name (a new route is added here). */
const DENSE_ROUTES: Record<DenseRouteName, (dim: number) => DenseRoute> = {
  exact: () => new ExactRoute(),
  hnsw: (dim) => new HnswRoute(dim),
};

export type { ModelIdentity } from './index_store';
export type { DocumentFields, DocumentMetadata } from './document_fields';

/** A loaded model or its identity: what an index remembers about the model that built it. */
export type ModelLike = ModelIdentity | { info(): { dim: number; vocabSize: number; layout: string; dir?: string; name?: string } };

export function identityOf(model: ModelLike): ModelIdentity {
  if (typeof (model as { info?: unknown }).info === 'function') {
    const info = (model as { info(): { dim: number; vocabSize: number; layout: string; dir?: string; name?: string } }).info();
    const name = info.name ?? info.dir;
    return { dim: info.dim, vocabSize: info.vocabSize, layout: info.layout, ...(name ? { name } : {}) };
  }
  const m = model as ModelIdentity;
  if (!m || !Number.isInteger(m.dim) || !Number.isInteger(m.vocabSize)) throw inputError('a BGEM3 model or { dim, vocabSize }', 'model', model);
  if (m.name !== undefined && typeof m.name !== 'string') throw inputError('a string', 'model.name', m.name);
  return { dim: m.dim, vocabSize: m.vocabSize, layout: m.layout, ...(m.name !== undefined ? { name: m.name } : {}) };
}

/** A caller's document id. */
export type DocumentId = string | number;

export type { DocumentBatch } from './document_export';

/** Options of {@link HybridIndex.create}. */
export interface HybridIndexOptions {
  /** Vector width (1024 for BGE-M3). */
  dim: number;
  /** Token ids must be below this (default 250002, BGE-M3's vocabulary). */
  vocabSize?: number;
  /** Store ColBERT vectors for reranking, in this format (default: none). */
  colbert?: 'f32' | 'bf16' | 'i8' | false;
  /** The model whose vectors the index holds; saved with it and checked by load(). */
  model?: ModelLike;
  /**
   * The dense route: 'exact' inner products over every document (default), or 'hnsw', an
   * approximate graph index (the npm package usearch) for large corpora: faster, with a recall
   * below 1 that the index benchmark reports. save() writes the graph next to the vectors, and
   * load() reads it back instead of rebuilding it (100,000 documents: 12 s instead of 195 s).
   */
  dense?: 'exact' | 'hnsw';
}

/** Options of {@link HybridIndex.search}: search_params.ts, shared with the PostgreSQL store. */
export type SearchOptions = SearchParamOptions;

/** One search result: the caller's id, the fused score and its three components. */
export interface SearchHit {
  id: DocumentId;
  score: number;
  dense: number;
  sparse: number;
  colbert: number;
  /** The document's text, when it was added with one. */
  text?: string;
  /** The document's metadata, when it was added with some (frozen: the index's own copy). */
  metadata?: DocumentMetadata;
}

/** A stored document as {@link HybridIndex.get} returns it. */
export interface StoredDocument {
  id: DocumentId;
  text?: string;
  metadata?: DocumentMetadata;
}

/** Largest vocabulary an index accepts (the inverted index keeps a list per token id). */
const MAX_VOCAB = 1 << 24;

function checkId(id: unknown, where: string): DocumentId {
  if (typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id))) return id;
  throw inputError('a string or a safe integer', where, id);
}

/** An in-process hybrid index. */
export class HybridIndex {
  private readonly slotOf = new Map<DocumentId, number>();
  private idOfSlot: Array<DocumentId | undefined> = [];
  /** Texts and metadata by slot (undefined: none), renumbered with the slots by compact(). */
  private textOfSlot: Array<string | undefined> = [];
  private metadataOfSlot: Array<DocumentMetadata | undefined> = [];
  private removedSinceCompact = 0;
  /** The live slots, as the dense route sees them. */
  private readonly live: LiveSlots = {
    count: () => this.slotOf.size,
    isLive: (slot) => this.idOfSlot[slot] !== undefined,
  };

  private constructor(
    private readonly index: NativeHybridIndex,
    /** Vector width. */
    readonly dim: number,
    /** Token ids are below this. */
    readonly vocabSize: number,
    /** ColBERT storage format, or false when the index keeps none. */
    readonly colbert: 'f32' | 'bf16' | 'i8' | false,
    /** Where the dense recall's candidates come from (dense_route.ts). */
    private readonly route: DenseRoute,
    /** The model the vectors came from, when known. */
    readonly model?: ModelIdentity,
  ) {}

  /** Creates an empty index. */
  static create(options: HybridIndexOptions): HybridIndex {
    checkOptions(options, '{ dim, vocabSize?, colbert? }');
    const dim = checkInteger(options.dim, 'dim', 1, 65536);
    const vocabSize = optionalInteger(options.vocabSize, 'vocabSize', BGE_M3_VOCAB_SIZE, 1, MAX_VOCAB);
    const colbert = checkChoice(options.colbert, 'colbert', [false, 'f32', 'bf16', 'i8'] as const, false);
    const model = options.model === undefined ? undefined : identityOf(options.model);
    if (model && (model.dim !== dim || model.vocabSize !== vocabSize)) {
      throw new M3Error('ERR_INPUT', `the model has dim ${model.dim} and ${model.vocabSize} token ids but the index was given dim ${dim} and vocabSize ${vocabSize}`);
    }
    const dense = checkChoice(options.dense, 'dense', Object.keys(DENSE_ROUTES) as DenseRouteName[], 'exact');
    return new HybridIndex(new (native().HybridIndexNative)(dim, vocabSize, colbert || null), dim, vocabSize, colbert,
      DENSE_ROUTES[dense](dim), model);
  }

  /** 'exact' or 'hnsw': how the dense route finds candidates. */
  get denseRoute(): DenseRouteName {
    return this.route.name;
  }

  /**
   * Loads an index saved with {@link save}. Every file and checksum is verified; a truncated,
   * corrupted or wrong-version directory fails with ERR_MODEL_FILES naming the file and the
   * problem. With `model`, an index built with a different model fails with ERR_MODEL_LAYOUT.
   */
  static load(dir: string, options: { model?: ModelLike; dense?: 'exact' | 'hnsw' } = {}): HybridIndex {
    checkNonEmptyString(dir, 'dir', 'an index directory');
    const { meta, ids, state, documents, segment, graph, graphProblem } = loadIndex(dir);
    if (options.model !== undefined) {
      const want = identityOf(options.model);
      const have = meta.model ?? { dim: meta.dim, vocabSize: meta.vocabSize };
      if (want.dim !== have.dim || want.vocabSize !== have.vocabSize || (want.layout && have.layout && want.layout !== have.layout)) {
        const describe = (m: ModelIdentity) => `${m.name ? `'${m.name}' (` : ''}dim ${m.dim}, ${m.vocabSize} token ids` +
          `${m.layout ? `, ${m.layout}` : ''}${m.name ? ')' : ''}`;
        const fix = have.name
          ? `search it with that model (--model ${have.name}, or BGEM3.load('${have.name}')), or rebuild the index with this one`
          : 'search it with the model it was built with, or rebuild the index with this one';
        throw new M3Error('ERR_MODEL_LAYOUT', `The index in '${dir}' was built with the model ${describe(have)}, not the given one ` +
          `${describe(want)}: ${fix}.`);
      }
    }
    if (state.sparseOffsets.length !== ids.length + 1) {
      throw new M3Error('ERR_MODEL_FILES', `Index file '${segment}' lists ${ids.length} ids for ${state.sparseOffsets.length - 1} documents.`);
    }
    let index: HybridIndex;
    try {
      index = HybridIndex.create({ dim: meta.dim, vocabSize: meta.vocabSize, colbert: meta.colbert, model: meta.model, dense: options.dense ?? meta.dense });
    } catch (err) {
      throw new M3Error('ERR_MODEL_FILES', `Index file '${segment}' has invalid settings: ${(err as Error).message}`, { cause: err });
    }
    try {
      index.index.importState(state);
      index.route.restore({ dir, ref: graph ?? graphProblem, count: meta.count, dense: state.dense });
    } catch (err) {
      const e = fromNative(err);
      throw new M3Error('ERR_MODEL_FILES', `Index file '${segment}': ${e.message}`, { cause: err });
    }
    // loadIndex checked the ids: each a string or a safe integer, none twice.
    ids.forEach((id, slot) => {
      index.slotOf.set(id, slot);
      index.idOfSlot[slot] = id;
    });
    // loadIndex checked these too: one entry per id, each of the right type.
    index.textOfSlot = documents.texts.slice();
    index.metadataOfSlot = documents.metadata;
    return index;
  }

  /** Writes the index to `dir` atomically: a crash at any moment leaves the old index or the new one. */
  save(dir: string): void {
    checkNonEmptyString(dir, 'dir', 'an index directory');
    this.compact();
    const ids = this.idOfSlot.slice(0, this.slotOf.size);
    const route = this.route;
    saveIndex(dir, { dim: this.dim, vocabSize: this.vocabSize, colbert: this.colbert, count: ids.length, model: this.model, dense: route.name },
      ids, this.index.exportState(), { texts: this.textOfSlot.slice(0, ids.length), metadata: this.metadataOfSlot.slice(0, ids.length) },
      route.save && ((file) => route.save!(file)));
  }

  /** Documents in the index. */
  get size(): number {
    return this.slotOf.size;
  }

  /** Average bytes of ColBERT storage per document (0 without ColBERT). */
  get colbertBytesPerDocument(): number {
    return this.index.stats().colbertBytesPerDocument;
  }

  /** Whether a document with this id is in the index. */
  has(id: DocumentId): boolean {
    return this.slotOf.has(checkId(id, 'id'));
  }

  /** The stored document with this id (its text and metadata, when it has them), or undefined. */
  get(id: DocumentId): StoredDocument | undefined {
    const slot = this.slotOf.get(checkId(id, 'id'));
    return slot === undefined ? undefined : this.documentAt(slot);
  }

  /**
   * Adds documents from encode() output (dense and sparse required; ColBERT too when the index
   * stores it), with their texts and metadata when `fields` gives them (one entry per id in each
   * array; metadata a plain JSON object of at most 64 KiB as JSON, kept as a frozen copy).
   * Re-adding an id replaces its document, text and metadata too (left out: none). Nothing is
   * added if any input is invalid.
   */
  add(ids: readonly DocumentId[], encoded: EncodeOutput, fields?: DocumentFields): void {
    if (!Array.isArray(ids)) throw inputError('an array of ids', 'ids', ids);
    if (!encoded || typeof encoded !== 'object' || typeof encoded.count !== 'number') throw inputError('an encode() result', 'encoded', encoded);
    if (ids.length !== encoded.count) throw new M3Error('ERR_INPUT', `add: ${ids.length} ids for ${encoded.count} encoded texts`);
    if (encoded.dim !== this.dim) {
      throw new M3Error('ERR_INPUT', `add: vectors have dim ${encoded.dim} but the index has dim ${this.dim} (a different model?)`);
    }
    if (!encoded.dense || !encoded.sparse) throw new M3Error('ERR_INPUT', 'add: encode with { dense: true, sparse: true }');
    if (this.colbert && !encoded.colbert) throw new M3Error('ERR_INPUT', 'add: this index stores ColBERT vectors; encode with { colbert: true }');
    if (encoded.dense.length !== ids.length * this.dim || encoded.sparse.offsets.length !== ids.length + 1 ||
        (this.colbert && encoded.colbert!.offsets.length !== ids.length + 1)) {
      throw new M3Error('ERR_INPUT', `add: the encoded arrays do not hold ${ids.length} texts of dim ${this.dim} (count says ${encoded.count})`);
    }
    const seen = new Set<DocumentId>();
    ids.forEach((id, i) => {
      checkId(id, `ids[${i}]`);
      if (seen.has(id)) throw new M3Error('ERR_INPUT', `add: id ${JSON.stringify(id)} appears twice in one call`);
      seen.add(id);
    });
    const { texts, metadata } = checkFields(fields, ids.length);
    let slots: Uint32Array;
    try {
      slots = this.index.add(encoded.dense, encoded.sparse.offsets, encoded.sparse.ids, encoded.sparse.weights,
        this.colbert ? encoded.colbert!.offsets : null, this.colbert ? encoded.colbert!.data : null);
    } catch (err) {
      throw fromNative(err);
    }
    // Old slots of re-added ids go only after the new ones are mapped, so a compaction
    // triggered by the removal sees every live slot's id.
    const replaced = ids.filter((id) => this.slotOf.has(id)).map((id) => this.slotOf.get(id)!);
    ids.forEach((id, i) => {
      this.slotOf.set(id, slots[i]);
      this.idOfSlot[slots[i]] = id;
      this.textOfSlot[slots[i]] = texts[i];
      this.metadataOfSlot[slots[i]] = metadata[i];
    });
    this.route.add(slots, encoded.dense);
    this.removeSlots(replaced);
  }

  /** Removes documents by id; unknown ids are ignored. Returns how many were removed. */
  remove(ids: readonly DocumentId[]): number {
    if (!Array.isArray(ids)) throw inputError('an array of ids', 'ids', ids);
    ids.forEach((id, i) => checkId(id, `ids[${i}]`));
    const present = [...new Set(ids.filter((id) => this.slotOf.has(id)))];
    const slots = present.map((id) => this.slotOf.get(id)!);
    for (const id of present) this.slotOf.delete(id);
    this.removeSlots(slots);
    return present.length;
  }

  /** Top-k documents for one query (a row of encode() output: dense, sparse and, to rerank with it, colbert). */
  search(query: EncodeRow, options: SearchOptions = {}): SearchHit[] {
    if (!query || !(query.dense instanceof Float32Array) || !query.sparse) {
      throw inputError('an encode() row with dense and sparse (out.row(i))', 'query', query);
    }
    if (query.dense.length !== this.dim) {
      throw new M3Error('ERR_INPUT', `search: the query has dim ${query.dense.length} but the index has dim ${this.dim} (a different model?)`);
    }
    const { filter, ...params } = this.params(options);
    if (this.colbert && params.wColbert > 0 && !(query.colbert instanceof Float32Array)) {
      throw new M3Error('ERR_INPUT', 'search: this index reranks with ColBERT; encode the query with { colbert: true }, or pass weights with a ColBERT weight of 0');
    }
    if (this.slotOf.size === 0) return [];
    const allowed = filter && this.allowedSlots(filter);
    if (allowed && allowed.count === 0) return [];
    let raw;
    try {
      const eligible = allowed ? allowed.slots : this.live;
      const denseSlots = params.denseRoute && !params.exhaustive ? this.route.candidates(query.dense, params.denseCandidates, eligible) : undefined;
      raw = this.index.search(query.dense, query.sparse.ids, query.sparse.weights, query.colbert ?? null, { ...params, denseSlots, allowed: allowed?.mask });
    } catch (err) {
      throw fromNative(err);
    }
    const hits: SearchHit[] = [];
    for (let i = 0; i < raw.slots.length; i++) hits.push(this.hitAt(raw, i));
    return hits;
  }

  /**
   * {@link search} for every text of an encode() result, in order, on `options.threads` threads
   * (one query per thread at a time; each query's results are the same as search()'s).
   */
  searchBatch(queries: EncodeOutput, options: SearchOptions = {}): SearchHit[][] {
    if (!queries || typeof queries.row !== 'function' || !queries.dense || !queries.sparse) {
      throw inputError('an encode() result with dense and sparse', 'queries', queries);
    }
    if (queries.dim !== this.dim) {
      throw new M3Error('ERR_INPUT', `searchBatch: the queries have dim ${queries.dim} but the index has dim ${this.dim} (a different model?)`);
    }
    const { filter, ...params } = this.params(options);
    if (this.colbert && params.wColbert > 0 && !queries.colbert) {
      throw new M3Error('ERR_INPUT', 'searchBatch: this index reranks with ColBERT; encode the queries with { colbert: true }, or pass weights with a ColBERT weight of 0');
    }
    if (this.slotOf.size === 0) return Array.from({ length: queries.count }, () => []);
    if (!this.route.exact) return Array.from({ length: queries.count }, (_, i) => this.search(queries.row(i), options));
    // One mask for every query: the filter is the same.
    const allowed = filter && this.allowedSlots(filter);
    if (allowed && allowed.count === 0) return Array.from({ length: queries.count }, () => []);
    let raw;
    try {
      raw = this.index.searchBatch(queries.dense, queries.sparse.offsets, queries.sparse.ids, queries.sparse.weights,
        queries.colbert?.offsets ?? null, queries.colbert?.data ?? null, { ...params, allowed: allowed?.mask });
    } catch (err) {
      throw fromNative(err);
    }
    const out: SearchHit[][] = [];
    for (let q = 0; q < queries.count; q++) {
      const hits: SearchHit[] = [];
      for (let i = raw.offsets[q]; i < raw.offsets[q + 1]; i++) hits.push(this.hitAt(raw, i));
      out.push(hits);
    }
    return out;
  }

  /**
   * Every live document in batches of `batchSize`: ids, texts, metadata and vectors (ColBERT
   * decoded to f32), what add() takes to rebuild the index elsewhere (the same search results
   * for f32 and bf16 stores: bf16 decodes exactly, and encodes back to the same bits; int8 rows
   * re-encode to within rounding). The documents are those of the index when iteration starts;
   * it takes a copy of the stored vectors then (compacting the index first).
   */
  documents(batchSize = 1000): Generator<DocumentBatch, void, undefined> {
    return this.batches(checkInteger(batchSize, 'batchSize', 1, MAX_COUNT));
  }

  private *batches(batchSize: number): Generator<DocumentBatch, void, undefined> {
    this.compact();
    // Compacted: the live documents are slots 0 .. size-1.
    const count = this.slotOf.size;
    yield* documentBatches({
      ids: this.idOfSlot.slice(0, count) as DocumentId[], texts: this.textOfSlot.slice(0, count), metadata: this.metadataOfSlot.slice(0, count),
      state: this.index.exportState(), dim: this.dim, colbert: this.colbert,
    }, batchSize);
  }

  /** Hit i of a native search result, with the document's text and metadata when it has them. */
  private hitAt(raw: { slots: Uint32Array; score: Float64Array; dense: Float64Array; sparse: Float64Array; colbert: Float64Array }, i: number): SearchHit {
    const slot = raw.slots[i];
    const hit: SearchHit = { id: this.idOfSlot[slot]!, score: raw.score[i], dense: raw.dense[i], sparse: raw.sparse[i], colbert: raw.colbert[i] };
    const text = this.textOfSlot[slot];
    const metadata = this.metadataOfSlot[slot];
    if (text !== undefined) hit.text = text;
    if (metadata !== undefined) hit.metadata = metadata;
    return hit;
  }

  private documentAt(slot: number): StoredDocument {
    const doc: StoredDocument = { id: this.idOfSlot[slot]! };
    const text = this.textOfSlot[slot];
    const metadata = this.metadataOfSlot[slot];
    if (text !== undefined) doc.text = text;
    if (metadata !== undefined) doc.metadata = metadata;
    return doc;
  }

  /**
   * The live slots whose metadata matches `filter`, as the native mask (one byte per slot) and as
   * the dense route sees them. A scan of every slot per search: the filter is tested in
   * JavaScript, and nothing is cached across searches, so it always sees the current metadata.
   */
  private allowedSlots(filter: MetadataFilter): { mask: Uint8Array; count: number; slots: LiveSlots } {
    const mask = new Uint8Array(this.idOfSlot.length);
    let count = 0;
    for (let slot = 0; slot < mask.length; slot++) {
      if (this.idOfSlot[slot] !== undefined && filter.matches(this.metadataOfSlot[slot])) {
        mask[slot] = 1;
        count++;
      }
    }
    return { mask, count, slots: { count: () => count, isLive: (slot) => mask[slot] === 1, filtered: true } };
  }

  private params(options: SearchOptions) {
    const params = searchParams(options, !!this.colbert);
    return { ...params, filter: options.filter === undefined ? undefined : MetadataFilter.parse(options.filter) };
  }

  /** Drops slots whose ids are no longer mapped (removed, or re-added elsewhere). */
  private removeSlots(slots: readonly number[]): void {
    if (slots.length === 0) return;
    this.index.remove(Uint32Array.from(slots));
    // The dense route is not told: it skips slots that are not live until the next compaction.
    for (const s of slots) {
      this.idOfSlot[s] = undefined;
      this.textOfSlot[s] = undefined;
      this.metadataOfSlot[s] = undefined;
    }
    this.removedSinceCompact += slots.length;
    // Reclaim storage once removed slots outnumber live ones.
    if (this.removedSinceCompact > Math.max(1024, this.slotOf.size)) this.compact();
  }

  private compact(): void {
    if (this.removedSinceCompact === 0) return;
    const oldOfNew = this.index.compact();
    const ids: Array<DocumentId | undefined> = new Array(oldOfNew.length);
    const texts: Array<string | undefined> = new Array(oldOfNew.length);
    const metadata: Array<DocumentMetadata | undefined> = new Array(oldOfNew.length);
    oldOfNew.forEach((old, slot) => {
      const id = this.idOfSlot[old]!;
      ids[slot] = id;
      texts[slot] = this.textOfSlot[old];
      metadata[slot] = this.metadataOfSlot[old];
      this.slotOf.set(id, slot);
    });
    this.idOfSlot = ids;
    this.textOfSlot = texts;
    this.metadataOfSlot = metadata;
    this.removedSinceCompact = 0;
    this.route.rebuild(oldOfNew.length, () => this.index.exportState().dense);
  }
}
