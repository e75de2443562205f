/** The .safetensors files fine-tuning writes: the heads of its output model and its checkpoints. */
import { writeFileSynced } from '../base/files';

/** An fp32 tensor. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

/** Writes fp32 tensors as a .safetensors file (what the model loader reads), flushed to disk. */
export function writeSafetensors(file: string, tensors: Record<string, Tensor>, metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = t.data.length * 4;
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  writeFileSynced(file, [head, Buffer.from(json, 'utf8'),
    ...Object.values(tensors).map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))], { replace: true });
}
