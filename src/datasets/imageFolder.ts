import * as fs from "node:fs";
import * as path from "node:path";
import { TernlabError } from "../errors";
import { checkLimit } from "./check";
import { Dataset } from "./dataset";
import { atByte, datasetError, hexStart, isDirectory } from "./file";
import { decodeRgb, RgbImage, sniff, writeImage } from "./image";
import { readTar } from "./tar";

export interface ImageFolderOptions {
  /** [height, width] to bring every image to (center crop to that aspect, then antialiased bilinear). */
  size?: [number, number];
  /** 3 (default): RGB, grayscale replicated. 1: luma. */
  channels?: 1 | 3;
  /** Load at most this many images, spread evenly over the classes (round robin, in path order). */
  limit?: number;
  /** The classes to load, in label order; folders not listed are ignored. Default: all, sorted. */
  classes?: string[];
  /** Called with (images decoded, images to decode), at most ~10 times a second and once at the end. */
  onProgress?: (done: number, total: number) => void;
}

/** One file found in the folder or archive. */
interface Item {
  /** Path relative to the root, "/"-separated, as it appears in the archive or on disk. */
  rel: string;
  parts: string[];
  /** Byte offset of the data in the (decompressed) tar, or null for a file on disk. */
  offset: number | null;
  /** The bytes (tar) or null (read from disk when decoded). */
  data: Buffer | null;
}

// Recognized as images by name: such a file must decode, or it is an error.
const IMAGE_EXT = new Set([".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".heic", ".avif"]);
// Clearly not images: skipped silently wherever they are.
const SKIP_EXT = new Set([".txt", ".md", ".json", ".csv", ".tsv", ".xml", ".yaml", ".yml", ".html", ".htm", ".py", ".log", ".ini", ".cfg", ".db", ".pdf", ".sh"]);
const SKIP_NAMES = new Set(["thumbs.db", "desktop.ini"]);

function isSkipped(parts: string[]): boolean {
  // Hidden files and folders (.DS_Store, ._x AppleDouble files, .git/) and macOS archive debris.
  if (parts.some((p) => p.startsWith(".") || p === "__MACOSX")) return true;
  const base = parts[parts.length - 1].toLowerCase();
  return SKIP_NAMES.has(base) || SKIP_EXT.has(path.extname(base));
}

function hasImageExt(name: string): boolean {
  return IMAGE_EXT.has(path.extname(name).toLowerCase());
}

function splitPath(name: string): string[] {
  return name.split(/[\\/]+/).filter((p) => p !== "" && p !== ".");
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function walk(root: string): Promise<{ files: string[][]; dirs: string[][] }> {
  const files: string[][] = [];
  const dirs: string[][] = [];
  async function visit(parts: string[]): Promise<void> {
    const entries = await fs.promises.readdir(path.join(root, ...parts), { withFileTypes: true });
    for (const e of entries) {
      const p = [...parts, e.name];
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        const st = await fs.promises.stat(path.join(root, ...p)).catch(() => null);
        isDir = !!st?.isDirectory();
        isFile = !!st?.isFile();
      }
      if (isDir) {
        dirs.push(p);
        if (!isSkipped(p)) await visit(p);
      } else if (isFile) {
        files.push(p);
      }
    }
  }
  await visit([]);
  return { files, dirs };
}

function checkOptions(where: string, opts: ImageFolderOptions): void {
  const allowed = new Set(["size", "channels", "limit", "classes", "onProgress"]);
  for (const k of Object.keys(opts)) {
    if (!allowed.has(k)) {
      throw new TernlabError("E_OPTION", `${where}: unknown option "${k}". Allowed: ${[...allowed].join(", ")}.`);
    }
  }
  const { size, channels, classes, onProgress } = opts;
  if (
    size !== undefined &&
    !(Array.isArray(size) && size.length === 2 && size.every((v) => Number.isInteger(v) && v >= 1 && v <= 65535))
  ) {
    throw new TernlabError("E_OPTION", `${where}: option "size" is ${JSON.stringify(size)}. Pass [height, width], two positive integers, e.g. [64, 64].`);
  }
  if (channels !== undefined && channels !== 1 && channels !== 3) {
    throw new TernlabError("E_OPTION", `${where}: option "channels" is ${JSON.stringify(channels)}. Pass 1 (gray) or 3 (RGB).`);
  }
  if (
    classes !== undefined &&
    !(Array.isArray(classes) && classes.length > 0 && classes.every((c) => typeof c === "string" && c.length > 0) && new Set(classes).size === classes.length)
  ) {
    throw new TernlabError("E_OPTION", `${where}: option "classes" is ${JSON.stringify(classes)}. Pass a non-empty list of distinct folder names.`);
  }
  if (onProgress !== undefined && typeof onProgress !== "function") {
    throw new TernlabError("E_OPTION", `${where}: option "onProgress" is not a function. Pass (done, total) => void or leave it out.`);
  }
}

/**
 * An image-classification set stored as class folders — `root/<class>/<image>` — in a directory
 * or in a .tar / .tar.gz / .tgz (gzip detected by magic). A single leading folder common to all
 * images (`train/cat/0001.jpg`) is skipped, so the class is the folder that holds the images;
 * images in subfolders of a class folder belong to that class. Classes are sorted by name and
 * images by path within a class, so the order is the same on every machine.
 *
 * JPEG and PNG are decoded (detected by magic bytes, not extension). Files that are clearly not
 * images (.txt, .json, hidden files such as .DS_Store, …) are skipped; anything else that does
 * not decode is an error.
 */
export async function readImageFolder(root: string, opts: ImageFolderOptions = {}): Promise<Dataset> {
  const where = `readImageFolder("${root}")`;
  checkOptions(where, opts);
  const limit = checkLimit(where, opts.limit);
  const channels = opts.channels ?? 3;

  // 1. List the files (and the folders, to report empty ones).
  let items: Item[] = [];
  let dirs: string[][] = [];
  let gzipped = false;
  const inTar = !(await isDirectory(root));
  if (inTar) {
    if (!fs.existsSync(root)) {
      throw datasetError(root, null, "no such file or directory", "Pass a directory of class folders or a .tar/.tar.gz of them.");
    }
    const tar = await readTar(root);
    gzipped = tar.gzipped;
    for (const e of tar.entries) {
      const parts = splitPath(e.name);
      if (parts.length === 0) continue;
      if (e.type === "directory") dirs.push(parts);
      else items.push({ rel: e.name, parts, offset: e.offset, data: e.data });
    }
  } else {
    const w = await walk(root);
    dirs = w.dirs;
    items = w.files.map((parts) => ({ rel: parts.join("/"), parts, offset: null, data: null }));
  }

  const place = (it: Item) =>
    it.offset === null ? `entry "${it.rel}" (file ${path.join(root, it.rel)})` : `entry "${it.rel}" ${atByte(it.offset, gzipped)}`;

  // 2. Drop what is clearly not an image, and metadata lying at the top (README, LICENSE, …).
  items = items.filter((it) => !isSkipped(it.parts) && !(it.parts.length === 1 && !hasImageExt(it.rel)));
  dirs = dirs.filter((d) => !isSkipped(d));

  // 3. Strip leading folders shared by every image, as long as a class level remains below them.
  const prefix: string[] = [];
  while (items.length > 0 && items.every((it) => it.parts.length >= prefix.length + 3 && it.parts[prefix.length] === items[0].parts[prefix.length])) {
    prefix.push(items[0].parts[prefix.length]);
  }
  const depth = prefix.length;
  const underPrefix = (parts: string[]) => prefix.every((p, i) => parts[i] === p);

  // 4. Group by class folder.
  const byClass = new Map<string, Item[]>();
  for (const it of items) {
    if (it.parts.length === depth + 1) {
      throw datasetError(
        root,
        place(it),
        "this image is not inside a class folder",
        `Move it into the folder of its class (e.g. ${[...prefix, "<class>", it.parts[depth]].join("/")}) or remove it.`,
      );
    }
    const cls = it.parts[depth];
    if (!byClass.has(cls)) byClass.set(cls, []);
    byClass.get(cls)!.push(it);
  }
  const folderNames = new Set<string>(byClass.keys());
  for (const d of dirs) {
    if (d.length === depth + 1 && underPrefix(d)) {
      if (!byClass.has(d[depth]) && (!opts.classes || opts.classes.includes(d[depth]))) {
        throw datasetError(
          root,
          `class folder "${d.join("/")}"`,
          "holds no images",
          "Put its images in it or remove the folder.",
        );
      }
      folderNames.add(d[depth]);
    }
  }

  let classNames: string[];
  if (opts.classes) {
    classNames = opts.classes.slice();
    for (const c of classNames) {
      if (!byClass.has(c)) {
        throw datasetError(
          root,
          `class "${c}"`,
          `no folder of that name holds images (found: ${[...folderNames].sort(byCodeUnits).join(", ") || "none"})`,
          'Fix the option "classes" or add the folder.',
        );
      }
    }
  } else {
    classNames = [...byClass.keys()].sort(byCodeUnits);
  }
  if (classNames.length === 0) {
    throw datasetError(
      root,
      null,
      "no class folders with images found",
      "Lay the images out as <class>/<image>.jpg (JPEG or PNG), one folder per class.",
    );
  }
  const perClass = classNames.map((c) => byClass.get(c)!.sort((a, b) => byCodeUnits(a.rel, b.rel)));

  // 5. Choose the images: all, or `limit` of them taken round robin over the classes.
  let take = perClass.map((l) => l.length);
  const available = take.reduce((a, b) => a + b, 0);
  if (limit < available) {
    take = take.map(() => 0);
    let left = limit;
    while (left > 0) {
      for (let c = 0; c < perClass.length && left > 0; c++) {
        if (take[c] < perClass[c].length) {
          take[c]++;
          left--;
        }
      }
    }
  }
  const chosen: { it: Item; label: number }[] = [];
  perClass.forEach((l, c) => l.slice(0, take[c]).forEach((it) => chosen.push({ it, label: c })));
  const count = chosen.length;

  // 6. Decode, in order, into one buffer.
  const onProgress = opts.onProgress;
  let lastReport = 0;
  const report = (done: number) => {
    if (!onProgress) return;
    const now = Date.now();
    if (done === count || now - lastReport >= 100) {
      lastReport = now;
      onProgress(done, count);
    }
  };

  const decode = async (it: Item): Promise<RgbImage> => {
    let bytes = it.data;
    if (bytes === null) {
      try {
        bytes = await fs.promises.readFile(path.join(root, it.rel));
      } catch (e) {
        throw datasetError(root, place(it), `cannot read it (${(e as Error).message})`, "Check the file's permissions.");
      }
    }
    const fmt = sniff(bytes);
    if (typeof fmt !== "string") {
      const what = fmt.other ? `a ${fmt.other} image, only JPEG and PNG are read` : "not a JPEG or PNG";
      throw datasetError(
        root,
        place(it),
        `${what} (starts ${hexStart(bytes)})`,
        fmt.other ? "Convert it to JPEG or PNG." : "Remove or replace the file.",
      );
    }
    try {
      return decodeRgb(bytes, fmt);
    } catch (e) {
      throw datasetError(
        root,
        place(it),
        `cannot decode this ${fmt === "jpeg" ? "JPEG" : "PNG"} (${(e as Error).message}; starts ${hexStart(bytes)})`,
        "Remove or replace the file.",
      );
    }
  };

  let height = opts.size?.[0] ?? 0;
  let width = opts.size?.[1] ?? 0;
  let images = new Uint8Array(0);
  let firstRel = "";
  report(0);
  let lastYield = Date.now();
  for (let i = 0; i < count; i++) {
    const { it } = chosen[i];
    const im = await decode(it);
    if (i === 0) {
      if (!opts.size) {
        height = im.height;
        width = im.width;
      }
      firstRel = it.rel;
      images = new Uint8Array(count * height * width * channels);
    } else if (!opts.size && (im.height !== height || im.width !== width)) {
      throw datasetError(
        root,
        place(it),
        `this image is ${im.height}×${im.width} (height×width) but "${firstRel}" is ${height}×${width}; all images must have one size`,
        `Pass the option size: [height, width] (e.g. size: [${height}, ${width}]) to resize them.`,
      );
    }
    writeImage(im, images, i * height * width * channels, height, width, channels);
    report(i + 1);
    // Give the event loop a turn now and then, so progress bars draw and notebooks stay live.
    if (Date.now() - lastYield >= 50) {
      await new Promise((r) => setImmediate(r));
      lastYield = Date.now();
    }
  }

  const labels = new Int32Array(count);
  chosen.forEach((c, i) => (labels[i] = c.label));
  return { name: root, images, labels, count, height, width, channels, numClasses: classNames.length, classNames };
}
