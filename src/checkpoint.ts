/**
 * Checkpoints as safetensors files (a JSON header + raw tensors; readable from Python with the
 * `safetensors` package): discrete weights packed at 2 bits per ternary weight, BN state,
 * optimizer moments, the step and epoch (the RNG position: Philox is keyed by the step), and the
 * config. Written atomically (temporary file, fsync, rename).
 */
import * as fs from "fs";
import { TernlabError } from "./errors";
import { writeFileAtomic } from "./metrics";
import { addon, NativeTensor } from "./native";

export const CHECKPOINT_FORMAT = "ternlab-checkpoint-1";

export interface CheckpointMeta {
  format: string;
  step: number;
  epoch: number; // the last completed epoch
  model: { factory: string; args: Record<string, unknown>; spec: unknown };
  train: Record<string, unknown>;
  wallTime: number;
  backend: string;
  created: string;
}

interface Packing {
  levels: number;
  count: number;
  shape: number[];
}

const DTYPES: Record<string, string> = { float32: "F32", int8: "I8", uint8: "U8" };

/** Serialises the state tensors; int8 weight states of discrete layers are packed. */
export function encodeCheckpoint(tensors: NativeTensor[], levelsOf: (tensor: string) => number | null, meta: CheckpointMeta): Buffer {
  const a = addon();
  const packing: Record<string, Packing> = {};
  const parts: { name: string; dtype: string; shape: number[]; data: Uint8Array }[] = [];
  for (const t of tensors) {
    const levels = t.dtype === "int8" ? levelsOf(t.name) : null;
    if (levels !== null) {
      const q = new Int8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      const packed = a.packStates(q, levels);
      packing[t.name] = { levels, count: q.length, shape: t.shape };
      parts.push({ name: t.name, dtype: "U8", shape: [packed.length], data: packed });
    } else {
      parts.push({ name: t.name, dtype: DTYPES[t.dtype], shape: t.shape, data: t.data });
    }
  }
  const header: Record<string, unknown> = {
    __metadata__: { "ternlab.meta": JSON.stringify(meta), "ternlab.packing": JSON.stringify(packing) },
  };
  let offset = 0;
  for (const p of parts) {
    header[p.name] = { dtype: p.dtype, shape: p.shape, data_offsets: [offset, offset + p.data.byteLength] };
    offset += p.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8); // safetensors aligns the data to 8 bytes
  const head = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + head.length + offset);
  out.writeBigUInt64LE(BigInt(head.length), 0);
  head.copy(out, 8);
  let at = 8 + head.length;
  for (const p of parts) {
    out.set(p.data, at);
    at += p.data.byteLength;
  }
  return out;
}

export interface LoadedCheckpoint {
  meta: CheckpointMeta;
  tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[];
}

export function decodeCheckpoint(bytes: Uint8Array, file: string): LoadedCheckpoint {
  const fail = (what: string) =>
    new TernlabError("E_CHECKPOINT", `checkpoint "${file}": ${what}. The file is damaged or not a ternlab checkpoint; use another checkpoint.`);
  if (bytes.byteLength < 8) throw fail(`only ${bytes.byteLength} bytes`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(buf.readBigUInt64LE(0));
  if (n <= 0 || 8 + n > buf.length) throw fail(`header length ${n} at byte 0 exceeds the file (${buf.length} bytes)`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  } catch (e) {
    throw fail(`header at byte 8 is not JSON (${(e as Error).message})`);
  }
  const metaStrings = header.__metadata__ as Record<string, string> | undefined;
  if (!metaStrings || typeof metaStrings["ternlab.meta"] !== "string") throw fail("no ternlab metadata in the header");
  const meta = JSON.parse(metaStrings["ternlab.meta"]) as CheckpointMeta;
  if (meta.format !== CHECKPOINT_FORMAT) throw fail(`format "${meta.format}", expected "${CHECKPOINT_FORMAT}"`);
  const packing = JSON.parse(metaStrings["ternlab.packing"] ?? "{}") as Record<string, Packing>;
  const base = 8 + n;
  const a = addon();
  const tensors: LoadedCheckpoint["tensors"] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const t = info as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const [s, e] = t.data_offsets;
    if (!(s >= 0 && e >= s && base + e <= buf.length))
      throw fail(`tensor "${name}" spans bytes ${base + s}..${base + e}, beyond the end (${buf.length} bytes)`);
    const data = new Uint8Array(buf.buffer, buf.byteOffset + base + s, e - s);
    const p = packing[name];
    if (p) {
      const q = a.unpackStates(data, p.count, p.levels);
      tensors.push({ name, dtype: "int8", shape: p.shape, data: new Uint8Array(q.buffer, q.byteOffset, q.byteLength) });
    } else {
      const dtype = Object.entries(DTYPES).find(([, v]) => v === t.dtype)?.[0];
      if (!dtype) throw fail(`tensor "${name}" has dtype ${t.dtype}`);
      tensors.push({ name, dtype, shape: t.shape, data: new Uint8Array(data) });
    }
  }
  return { meta, tensors };
}

export async function saveCheckpoint(file: string, bytes: Buffer): Promise<void> {
  await writeFileAtomic(file, bytes, "checkpoint");
}

export async function loadCheckpoint(file: string): Promise<LoadedCheckpoint> {
  let bytes: Buffer;
  try {
    bytes = await fs.promises.readFile(file);
  } catch (e) {
    throw new TernlabError("E_CHECKPOINT", `checkpoint "${file}" cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}). Check the path given to resumeFrom / --resume.`);
  }
  return decodeCheckpoint(bytes, file);
}
