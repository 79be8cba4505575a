import * as tarStream from "tar-stream";
import { atByte, datasetError, hexStart, readMaybeGzip } from "./file";

export interface TarEntry {
  /** The member's name as stored (after GNU long-name / pax records are applied). */
  name: string;
  type: "file" | "directory";
  /** Where the member's data starts in the (decompressed) tar. */
  offset: number;
  /** The member's bytes: a view into the tar held in memory, not a copy. */
  data: Buffer;
}

export interface Tar {
  entries: TarEntry[];
  gzipped: boolean;
}

/**
 * All regular files and directories of a .tar, .tar.gz or .tgz (gzip detected by magic), in
 * archive order. The whole archive is held in memory and members are views into it, which is
 * what the readers need anyway (they decode everything once).
 */
export async function readTar(file: string): Promise<Tar> {
  const { bytes, gzipped } = await readMaybeGzip(file);
  const entries: TarEntry[] = [];
  let end = 0; // the byte after the last member read, for messages about what follows it
  const ex = tarStream.extract();
  // One write of the whole buffer: every member's data arrives as one subarray of it.
  ex.end(bytes);
  try {
    for await (const entry of ex) {
      const h = entry.header as tarStream.Header & { byteOffset?: number };
      const offset = h.byteOffset ?? end + 512;
      const size = h.size ?? 0;
      if (h.type === "file" || h.type === "contiguous-file" || h.type === "directory") {
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        const data = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
        entries.push({ name: h.name, type: h.type === "directory" ? "directory" : "file", offset, data });
      } else {
        entry.resume();
      }
      end = offset + Math.ceil(size / 512) * 512;
    }
  } catch (e) {
    const msg = (e as Error).message;
    if (entries.length === 0 && end === 0) {
      throw datasetError(
        file,
        "at byte 0",
        `not a tar archive (${msg}; the ${gzipped ? "decompressed data starts" : "file starts"} ${hexStart(bytes)})`,
        "Pass a .tar, .tar.gz or .tgz of class folders, or a directory.",
      );
    }
    const last = entries.length ? ` after entry "${entries[entries.length - 1].name}"` : "";
    throw datasetError(
      file,
      atByte(end, gzipped) + last,
      `the archive is damaged or truncated (${msg})`,
      "Fetch or build the archive again.",
    );
  }
  return { entries, gzipped };
}
