/**
 * Just enough of the engine's file formats to mutate their fields on purpose and to fix up the
 * checksums that would otherwise stop a mutation at the first check: index segments and
 * MANIFEST (see lib/retrieval/index_store.ts), HNSW graph files (lib/retrieval/hnsw_graph_check.ts) and
 * safetensors. Every reader here is lenient (a mutated file is the normal case): what does not
 * parse is left as it is.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { applyByteOp, applyJsonOp, applyJsonOpsToBytes, floatOf, stringifyJson } from './mutate';
import type { ByteOp, FloatValue, HnswField, JsonOp } from './recipe';

// ---------------------------------------------------------------------------------------------
// Index segments

const SEGMENT_HEAD_BYTES = 16;
const SECTION_HEAD_BYTES = 32;

export interface SegmentSection {
  name: string;
  /** Offset of the section's 32-byte header in the segment. */
  headAt: number;
  dataAt: number;
  data: Buffer;
}

/** The sections of a segment as far as its table can be followed. */
export function readSegmentSections(bytes: Buffer): SegmentSection[] {
  const out: SegmentSection[] = [];
  if (bytes.length < SEGMENT_HEAD_BYTES) return out;
  const count = bytes.readUInt32LE(12);
  let at = SEGMENT_HEAD_BYTES;
  for (let i = 0; i < count && at + SECTION_HEAD_BYTES <= bytes.length; i++) {
    const name = bytes.toString('latin1', at, at + 16).replace(/\0+$/, '');
    const length = Number(bytes.readBigUInt64LE(at + 16));
    const dataAt = at + SECTION_HEAD_BYTES;
    if (dataAt + length > bytes.length) break;
    out.push({ name, headAt: at, dataAt, data: bytes.subarray(dataAt, dataAt + length) });
    at = dataAt + length + ((8 - (length % 8)) % 8);
  }
  return out;
}

/** Rewrites each readable section's CRC-32 to match its data (in place). */
export function fixSectionChecksums(bytes: Buffer): void {
  for (const s of readSegmentSections(bytes)) bytes.writeUInt32LE(zlib.crc32(s.data), s.headAt + 24);
}

/**
 * Applies ops to one section's data and lays the segment out again around it, with the
 * section's length and CRC-32 right. A segment whose table does not reach the section is left alone.
 */
export function mutateSection(bytes: Buffer, name: string, ops: Array<ByteOp | JsonOp>): Buffer {
  const sections = readSegmentSections(bytes);
  const target = sections.find((s) => s.name === name);
  if (!target) return bytes;
  let data: Buffer = Buffer.from(target.data);
  for (const op of ops) data = op.op.startsWith('json-') ? applyJsonOpsToBytes(data, [op as JsonOp]) : applyByteOp(data, op as ByteOp);
  const head = Buffer.from(bytes.subarray(target.headAt, target.dataAt));
  head.writeBigUInt64LE(BigInt(data.length), 16);
  head.writeUInt32LE(zlib.crc32(data), 24);
  const oldEnd = target.dataAt + target.data.length + ((8 - (target.data.length % 8)) % 8);
  return Buffer.concat([bytes.subarray(0, target.headAt), head, data, Buffer.alloc((8 - (data.length % 8)) % 8), bytes.subarray(Math.min(oldEnd, bytes.length))]);
}

/** Offsets of the segment's header fields and section headers, for byte ops to favour. */
export function segmentHotSpots(bytes: Buffer): number[] {
  const hot = [8, 12];
  for (const s of readSegmentSections(bytes)) hot.push(s.headAt, s.headAt + 16, s.headAt + 24, s.dataAt);
  return hot;
}

/**
 * Makes an index directory's checksums agree with its files again: each section's CRC-32 in the
 * segment MANIFEST names, then MANIFEST's sizes and CRC-32s of that segment and of the graph.
 * What is not a regular file, or a MANIFEST that is not a JSON object, is left as it is.
 */
export function fixIndexChecksums(dir: string): void {
  const manifestFile = path.join(dir, 'MANIFEST');
  const text = readRegular(manifestFile);
  if (!text) return;
  let manifest: unknown;
  try {
    manifest = JSON.parse(text.toString('utf8'));
  } catch {
    return;
  }
  if (!manifest || typeof manifest !== 'object' || Array.isArray(manifest)) return;
  const m = manifest as Record<string, unknown>;
  const within = (name: unknown) => typeof name === 'string' && !name.includes('/') && name !== '..' && name !== '.';
  if (within(m.segment)) {
    const file = path.join(dir, m.segment as string);
    const bytes = readRegular(file);
    if (bytes) {
      fixSectionChecksums(bytes);
      fs.writeFileSync(file, bytes);
      m.bytes = bytes.length;
      m.crc32 = zlib.crc32(bytes);
    }
  }
  const graph = m.graph as Record<string, unknown> | undefined;
  if (graph && typeof graph === 'object' && within(graph.file)) {
    const bytes = readRegular(path.join(dir, graph.file as string));
    if (bytes) {
      graph.bytes = bytes.length;
      graph.crc32 = zlib.crc32(bytes);
    }
  }
  let fixed: string;
  try {
    fixed = stringifyJson(m);
  } catch {
    // Nested too deeply for JSON.stringify (an earlier `$nest`): left as it is.
    return;
  }
  fs.writeFileSync(manifestFile, `${fixed}\n`);
}

function readRegular(file: string): Buffer | undefined {
  try {
    return fs.lstatSync(file).isFile() ? fs.readFileSync(file) : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// HNSW graph files

const MATRIX_HEAD_BYTES = 8;
const DENSE_HEAD_BYTES = 64;
const GRAPH_HEAD_BYTES = 40;
const NODE_HEAD_BYTES = 10;

interface GraphLayout {
  vectorsAt: number;
  vectorsEnd: number;
  denseHeadAt: number;
  graphHeadAt: number;
  levelsAt: number;
  nodes: Array<{ at: number; level: number; lists: number[] }>;
}

/** Where the fields of a graph file are, as far as its headers can be trusted. */
export function graphLayout(bytes: Buffer): GraphLayout | undefined {
  if (bytes.length < MATRIX_HEAD_BYTES) return undefined;
  const rows = bytes.readUInt32LE(0);
  const rowBytes = bytes.readUInt32LE(4);
  const denseHeadAt = MATRIX_HEAD_BYTES + rows * rowBytes;
  const graphHeadAt = denseHeadAt + DENSE_HEAD_BYTES;
  if (graphHeadAt + GRAPH_HEAD_BYTES > bytes.length) return undefined;
  const count = Number(bytes.readBigUInt64LE(graphHeadAt));
  const connectivity = Number(bytes.readBigUInt64LE(graphHeadAt + 8));
  const connectivityBase = Number(bytes.readBigUInt64LE(graphHeadAt + 16));
  const levelsAt = graphHeadAt + GRAPH_HEAD_BYTES;
  if (levelsAt + 2 * count > bytes.length) return undefined;
  const nodes: GraphLayout['nodes'] = [];
  let at = levelsAt + 2 * count;
  for (let i = 0; i < count && at + NODE_HEAD_BYTES <= bytes.length; i++) {
    const level = Math.max(0, bytes.readInt16LE(levelsAt + 2 * i));
    const lists = [at + NODE_HEAD_BYTES];
    for (let l = 1; l <= level; l++) lists.push(at + NODE_HEAD_BYTES + 4 + connectivityBase * 4 + (l - 1) * (4 + connectivity * 4));
    nodes.push({ at, level, lists });
    at += NODE_HEAD_BYTES + 4 + connectivityBase * 4 + level * (4 + connectivity * 4);
  }
  return { vectorsAt: MATRIX_HEAD_BYTES, vectorsEnd: denseHeadAt, denseHeadAt, graphHeadAt, levelsAt, nodes };
}

/** Sets one field of a graph file; a field the layout does not reach is left alone. */
export function setGraphField(bytes: Buffer, field: HnswField, value: string, node = 0, level = 0, k = 0): Buffer {
  const layout = graphLayout(bytes);
  const out = Buffer.from(bytes);
  const put = (at: number | undefined, width: 2 | 4 | 8) => {
    if (at === undefined || at < 0 || at + width > out.length || !/^-?\d+$/.test(value)) return out;
    return applyByteOp(out, { op: 'set-int', at, width, value });
  };
  if (field === 'rows') return put(0, 4);
  if (field === 'rowBytes') return put(4, 4);
  if (!layout) return out;
  const n = layout.nodes.length ? layout.nodes[((node % layout.nodes.length) + layout.nodes.length) % layout.nodes.length] : undefined;
  const list = n ? n.lists[Math.min(level, n.lists.length - 1)] : undefined;
  switch (field) {
    case 'present': return put(layout.denseHeadAt + 17, 8);
    case 'dimensions': return put(layout.denseHeadAt + 33, 8);
    case 'nodes': return put(layout.graphHeadAt, 8);
    case 'connectivity': return put(layout.graphHeadAt + 8, 8);
    case 'connectivityBase': return put(layout.graphHeadAt + 16, 8);
    case 'maxLevel': return put(layout.graphHeadAt + 24, 8);
    case 'entry': return put(layout.graphHeadAt + 32, 8);
    case 'levelsTable': return put(layout.levelsAt + 2 * Math.max(0, node % Math.max(1, layout.nodes.length)), 2);
    case 'nodeKey': return put(n?.at, 8);
    case 'nodeLevel': return put(n === undefined ? undefined : n.at + 8, 2);
    case 'neighbourCount': return put(list, 4);
    case 'neighbour': return put(list === undefined ? undefined : list + 4 + 4 * k, 4);
    case 'vector': {
      const at = layout.vectorsAt + 4 * k;
      if (at + 4 > layout.vectorsEnd) return out;
      out.writeFloatLE(Number(value), at);
      return out;
    }
    default:
      return out;
  }
}

/** Offsets of a graph's header fields and first node lists, for byte ops to favour. */
export function graphHotSpots(bytes: Buffer): number[] {
  const layout = graphLayout(bytes);
  if (!layout) return [0, 4];
  const hot = [0, 4, layout.denseHeadAt, layout.denseHeadAt + 17, layout.denseHeadAt + 33, layout.graphHeadAt, layout.graphHeadAt + 8,
    layout.graphHeadAt + 16, layout.graphHeadAt + 24, layout.graphHeadAt + 32, layout.levelsAt];
  for (const n of layout.nodes.slice(0, 8)) hot.push(n.at, ...n.lists);
  return hot;
}

// ---------------------------------------------------------------------------------------------
// safetensors

interface SafetensorsLayout {
  headerLength: number;
  header: Record<string, unknown>;
  dataAt: number;
}

function safetensorsLayout(bytes: Buffer): SafetensorsLayout | undefined {
  if (bytes.length < 8) return undefined;
  const headerLength = Number(bytes.readBigUInt64LE(0));
  if (8 + headerLength > bytes.length) return undefined;
  try {
    const header = JSON.parse(bytes.toString('utf8', 8, 8 + headerLength));
    return header && typeof header === 'object' ? { headerLength, header, dataAt: 8 + headerLength } : undefined;
  } catch {
    return undefined;
  }
}

/** Writes `value` into element `index` of `tensor` (F32, F16 or BF16); anything unreadable is left alone. */
export function setSafetensorsValue(bytes: Buffer, tensor: string, index: number, value: FloatValue): Buffer {
  const layout = safetensorsLayout(bytes);
  const entry = layout?.header[tensor] as { dtype?: string; data_offsets?: [number, number] } | undefined;
  if (!layout || !entry || !Array.isArray(entry.data_offsets)) return bytes;
  const width = entry.dtype === 'F32' ? 4 : entry.dtype === 'F16' || entry.dtype === 'BF16' ? 2 : 0;
  const [start, end] = entry.data_offsets;
  const count = width ? Math.floor((end - start) / width) : 0;
  if (count <= 0) return bytes;
  const at = layout.dataAt + start + width * (((index % count) + count) % count);
  if (at + width > bytes.length) return bytes;
  const out = Buffer.from(bytes);
  const f = floatOf(value);
  if (width === 4) out.writeFloatLE(f, at);
  else if (entry.dtype === 'BF16') out.writeUInt16LE(bf16Bits(f), at);
  else out.writeUInt16LE(f16Bits(f), at);
  return out;
}

function bf16Bits(f: number): number {
  const b = Buffer.alloc(4);
  b.writeFloatLE(f);
  return b.readUInt16LE(2);
}

/** The half-precision bits of the values the mutations write (non-finite values, zero and the f16 extremes). */
function f16Bits(f: number): number {
  if (Number.isNaN(f)) return 0x7e00;
  const sign = f < 0 || Object.is(f, -0) ? 0x8000 : 0;
  const a = Math.abs(f);
  if (a === Infinity || a > 65504) return sign | 0x7c00;
  if (a === 0) return sign;
  const exponent = Math.max(-14, Math.floor(Math.log2(a)));
  if (exponent === -14 && a < 2 ** -14) return sign | Math.round(a / 2 ** -24);
  return sign | ((exponent + 15) << 10) | (Math.round((a / 2 ** exponent - 1) * 1024) & 0x3ff);
}

/** The tensor names of a safetensors file. */
export function safetensorsTensors(bytes: Buffer): string[] {
  const layout = safetensorsLayout(bytes);
  return layout ? Object.keys(layout.header).filter((k) => k !== '__metadata__') : [];
}

/** The parsed header of a safetensors file, for JSON mutations to pick paths from. */
export function safetensorsHeader(bytes: Buffer): Record<string, unknown> | undefined {
  return safetensorsLayout(bytes)?.header;
}

/** Applies JSON ops to a safetensors header and writes it back with its length prefix. */
export function mutateSafetensorsHeader(bytes: Buffer, ops: JsonOp[]): Buffer {
  const layout = safetensorsLayout(bytes);
  if (!layout) return bytes;
  let header: unknown = layout.header;
  let text: Buffer;
  try {
    for (const op of ops) header = applyJsonOp(header, op);
    text = Buffer.from(header === undefined ? '' : stringifyJson(header), 'utf8');
  } catch {
    return bytes;
  }
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(text.length));
  return Buffer.concat([prefix, text, bytes.subarray(layout.dataAt)]);
}
