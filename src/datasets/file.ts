import * as fs from "node:fs";
import * as zlib from "node:zlib";
import { promisify } from "node:util";
import { TernlabError } from "../errors";

const gunzip = promisify(zlib.gunzip);

/** A dataset error in the house format: `dataset "<file>": <place>: <problem>. <fix>` */
export function datasetError(file: string, place: string | null, problem: string, fix: string): TernlabError {
  const where = place ? `${place}: ` : "";
  return new TernlabError("E_DATASET", `dataset "${file}": ${where}${problem}. ${fix}`);
}

/** The first 4 bytes as `0x3c68746d`, the way a message shows what a file starts with. */
export function hexStart(bytes: Uint8Array): string {
  if (bytes.length === 0) return "(empty)";
  let s = "0x";
  for (let i = 0; i < Math.min(4, bytes.length); i++) s += bytes[i].toString(16).padStart(2, "0");
  return s;
}

export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

export interface FileBytes {
  bytes: Buffer;
  /** true when the file was gzip and `bytes` are the decompressed contents. */
  gzipped: boolean;
}

/**
 * A whole file in memory, gunzipped when it starts with the gzip magic (1f 8b) — whatever its
 * name says. Byte offsets in later messages refer to `bytes`, so they say "decompressed" then.
 */
export async function readMaybeGzip(file: string): Promise<FileBytes> {
  let raw: Buffer;
  try {
    raw = await fs.promises.readFile(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const problem = err.code === "ENOENT" ? "no such file" : `cannot read it (${err.code ?? err.message})`;
    throw datasetError(file, null, problem, "Check the path.");
  }
  if (!isGzip(raw)) return { bytes: raw, gzipped: false };
  try {
    return { bytes: await gunzip(raw), gzipped: true };
  } catch (e) {
    throw datasetError(
      file,
      null,
      `starts like gzip but does not decompress (${(e as Error).message})`,
      "The download is probably incomplete: fetch the file again.",
    );
  }
}

/** "at byte 81920" or, for a decompressed file, "at byte 81920 (decompressed)". */
export function atByte(offset: number, gzipped: boolean): string {
  return `at byte ${offset}${gzipped ? " (decompressed)" : ""}`;
}

export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.promises.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.promises.stat(p);
    return true;
  } catch {
    return false;
  }
}
