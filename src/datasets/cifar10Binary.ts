import * as fs from "node:fs";
import * as path from "node:path";
import { checkLimit, checkSplit } from "./check";
import { Dataset } from "./dataset";
import { atByte, datasetError, exists, isDirectory, readMaybeGzip } from "./file";

export const CIFAR10_CLASSES = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

const SIDE = 32;
const PLANE = SIDE * SIDE;
const RECORD = 1 + 3 * PLANE; // one label byte, then the red, green and blue planes

async function classNamesFrom(dir: string): Promise<string[]> {
  const meta = path.join(dir, "batches.meta.txt");
  if (!(await exists(meta))) return CIFAR10_CLASSES.slice();
  const names = (await fs.promises.readFile(meta, "utf8"))
    .split(/\r?\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (names.length !== 10) {
    throw datasetError(
      meta,
      null,
      `lists ${names.length} class names, CIFAR-10 has 10`,
      "Restore the original file (one name a line) or delete it to use the standard names.",
    );
  }
  return names;
}

/** The folder that holds the .bin batches: `dir` itself or the `cifar-10-batches-bin` the archive unpacks to. */
async function batchesDir(dir: string): Promise<string> {
  for (const d of [dir, path.join(dir, "cifar-10-batches-bin")]) {
    if ((await exists(path.join(d, "test_batch.bin"))) || (await exists(path.join(d, "data_batch_1.bin")))) return d;
  }
  return dir;
}

/**
 * The CIFAR-10 binary version: `data_batch_1..5.bin` (train) or `test_batch.bin` (test) in a
 * folder, or one such file. Each record is 1 label byte + 3072 bytes of planar CHW pixels;
 * the result is HWC (32×32×3). Class names come from `batches.meta.txt` beside the batches when
 * present, else the standard ten.
 */
export async function readCifar10Binary(
  pathOrDir: string,
  split: "train" | "test",
  opts: { limit?: number } = {},
): Promise<Dataset> {
  checkSplit(`readCifar10Binary("${pathOrDir}")`, split);
  const limit = checkLimit(`readCifar10Binary("${pathOrDir}")`, opts.limit);
  let files: string[];
  let dir: string;
  let name: string;
  if (await isDirectory(pathOrDir)) {
    dir = await batchesDir(pathOrDir);
    const names = split === "train" ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ["test_batch.bin"];
    files = names.map((n) => path.join(dir, n));
    for (const f of files) {
      if (!(await exists(f))) {
        throw datasetError(
          pathOrDir,
          null,
          `no ${path.basename(f)} here (the ${split} split needs ${names.join(", ")})`,
          "Unpack cifar-10-binary.tar.gz into this folder, or pass the folder that holds the .bin files.",
        );
      }
    }
    name = `cifar10/${split}`;
  } else {
    dir = path.dirname(pathOrDir);
    files = [pathOrDir];
    name = pathOrDir;
  }
  const classNames = await classNamesFrom(dir);

  const parts: Buffer[] = [];
  let total = 0;
  for (const f of files) {
    if (total >= limit) break;
    const { bytes, gzipped } = await readMaybeGzip(f);
    if (bytes.length % RECORD !== 0 || bytes.length === 0) {
      const whole = Math.floor(bytes.length / RECORD);
      throw datasetError(
        f,
        atByte(whole * RECORD, gzipped),
        bytes.length === 0
          ? "the file is empty"
          : `its length ${bytes.length} is not a multiple of the record size ${RECORD}; after ${whole} whole records a partial record of ${bytes.length - whole * RECORD} bytes starts here`,
        "The file is truncated or not a CIFAR-10 binary batch: fetch it again.",
      );
    }
    const n = bytes.length / RECORD;
    for (let i = 0; i < n; i++) {
      const label = bytes[i * RECORD];
      if (label > 9) {
        throw datasetError(
          f,
          `record ${i} ${atByte(i * RECORD, gzipped)}`,
          `label ${label} is outside [0, 10)`,
          "This is not a CIFAR-10 binary batch (CIFAR-100's binary format has 2 label bytes): pass the CIFAR-10 file.",
        );
      }
    }
    parts.push(bytes);
    total += n;
  }

  const count = Math.min(total, limit);
  const images = new Uint8Array(count * 3 * PLANE);
  const labels = new Int32Array(count);
  let k = 0;
  for (const bytes of parts) {
    for (let r = 0; r < bytes.length / RECORD && k < count; r++, k++) {
      const base = r * RECORD;
      labels[k] = bytes[base];
      const out = k * 3 * PLANE;
      for (let c = 0; c < 3; c++) {
        const plane = base + 1 + c * PLANE;
        for (let p = 0; p < PLANE; p++) images[out + p * 3 + c] = bytes[plane + p];
      }
    }
  }
  return { name, images, labels, count, height: SIDE, width: SIDE, channels: 3, numClasses: 10, classNames };
}
