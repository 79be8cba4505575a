import { TernlabError } from "../errors";
import { checkLimit } from "./check";
import { Dataset } from "./dataset";
import { atByte, datasetError, hexStart, readMaybeGzip } from "./file";

export interface IdxOptions {
  /** Load at most this many images (the first ones). */
  limit?: number;
  /** Names of the classes, in label order; also fixes numClasses. Default "0".."9". */
  classNames?: string[];
  /** Labels must lie in [0, numClasses). Default classNames.length, else 10. */
  numClasses?: number;
  /** Dataset.name; default the images path. */
  name?: string;
}

const IMAGES_MAGIC = 0x00000803; // unsigned byte data, 3 dimensions
const LABELS_MAGIC = 0x00000801; // unsigned byte data, 1 dimension

function hex32(v: number): string {
  return "0x" + v.toString(16).padStart(8, "0");
}

function checkMagic(file: string, bytes: Buffer, want: number, kind: string): void {
  if (bytes.length < 4 || bytes.readUInt32BE(0) !== want) {
    const other = want === IMAGES_MAGIC ? LABELS_MAGIC : IMAGES_MAGIC;
    const swapped =
      bytes.length >= 4 && bytes.readUInt32BE(0) === other
        ? ` It looks like an IDX ${kind === "images" ? "labels" : "images"} file: are the images and labels paths swapped?`
        : "";
    throw datasetError(
      file,
      "at byte 0",
      `not an IDX ${kind} file: the magic number should be ${hex32(want)} but the file starts ${hexStart(bytes)}`,
      `Pass an uncompressed or gzipped IDX ${kind} file (e.g. train-${kind}-idx${want & 0xff}-ubyte).${swapped}`,
    );
  }
}

/**
 * Reads an IDX pair (the MNIST / Fashion-MNIST format), each raw or gzipped (detected by the gzip
 * magic, not the name). Checks the magic numbers, the declared dimensions against the file
 * lengths, that both files hold the same count, and that every label is in range.
 */
export async function readIdx(imagesPath: string, labelsPath: string, opts: IdxOptions = {}): Promise<Dataset> {
  const limit = checkLimit(`readIdx("${imagesPath}")`, opts.limit);
  const classNames = opts.classNames ?? Array.from({ length: opts.numClasses ?? 10 }, (_, i) => String(i));
  const numClasses = opts.numClasses ?? classNames.length;
  if (!Number.isInteger(numClasses) || numClasses < 1 || classNames.length !== numClasses) {
    throw new TernlabError(
      "E_OPTION",
      `readIdx("${imagesPath}"): numClasses ${numClasses} and classNames (${classNames.length} names) disagree. Pass one of them, or both consistent.`,
    );
  }
  const [img, lab] = await Promise.all([readMaybeGzip(imagesPath), readMaybeGzip(labelsPath)]);

  const ib = img.bytes;
  checkMagic(imagesPath, ib, IMAGES_MAGIC, "images");
  if (ib.length < 16) {
    throw datasetError(imagesPath, atByte(ib.length, img.gzipped), "truncated inside the 16-byte header", "Fetch the file again.");
  }
  const n = ib.readUInt32BE(4);
  const height = ib.readUInt32BE(8);
  const width = ib.readUInt32BE(12);
  const per = height * width;
  if (per === 0) {
    throw datasetError(imagesPath, "at byte 8", `the header declares ${height}×${width} images`, "The file is damaged: fetch it again.");
  }
  const want = 16 + n * per;
  if (ib.length < want) {
    const k = Math.floor((ib.length - 16) / per);
    throw datasetError(
      imagesPath,
      atByte(16 + k * per, img.gzipped),
      `truncated: the header declares ${n} images of ${height}×${width} (${want} bytes) but the file ends at byte ${ib.length}, inside image ${k}, which starts here`,
      "The file is incomplete: fetch it again.",
    );
  }
  if (ib.length > want) {
    throw datasetError(
      imagesPath,
      atByte(want, img.gzipped),
      `${ib.length - want} bytes follow the last of the ${n} images of ${height}×${width} the header declares`,
      "The header and the data disagree: fetch the file again.",
    );
  }

  const lb = lab.bytes;
  checkMagic(labelsPath, lb, LABELS_MAGIC, "labels");
  if (lb.length < 8) {
    throw datasetError(labelsPath, atByte(lb.length, lab.gzipped), "truncated inside the 8-byte header", "Fetch the file again.");
  }
  const m = lb.readUInt32BE(4);
  if (lb.length !== 8 + m) {
    const problem =
      lb.length < 8 + m
        ? `truncated: the header declares ${m} labels but the file ends at byte ${lb.length}, at label ${lb.length - 8}`
        : `${lb.length - 8 - m} bytes follow the last of the ${m} labels the header declares`;
    throw datasetError(labelsPath, atByte(Math.min(lb.length, 8 + m), lab.gzipped), problem, "Fetch the file again.");
  }
  if (m !== n) {
    throw datasetError(
      labelsPath,
      "at byte 4",
      `holds ${m} labels but "${imagesPath}" holds ${n} images`,
      "Pass the labels file that belongs with these images (train-* with train-*, t10k-* with t10k-*).",
    );
  }

  const count = Math.min(n, limit);
  // Check every label, not just the loaded ones: a bad one means a damaged or mismatched file.
  for (let i = 0; i < m; i++) {
    const v = lb[8 + i];
    if (v >= numClasses) {
      throw datasetError(
        labelsPath,
        `label ${i} ${atByte(8 + i, lab.gzipped)}`,
        `value ${v} is outside [0, ${numClasses})`,
        `Pass the labels file that belongs with these images, or numClasses/classNames that cover ${v}.`,
      );
    }
  }
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) labels[i] = lb[8 + i];
  return {
    name: opts.name ?? imagesPath,
    images: new Uint8Array(ib.subarray(16, 16 + count * per)),
    labels,
    count,
    height,
    width,
    channels: 1,
    numClasses,
    classNames: classNames.slice(),
  };
}
