import { TernlabError } from "../errors";

/**
 * A labelled image set, decoded once and held in memory. Every reader returns this shape; the
 * native data pipeline reads `images` and `labels` as they are (no per-element work in TS).
 */
export interface Dataset {
  /** e.g. "mnist/train", "cifar10/test", or the path it was read from. */
  name: string;
  /** count*height*width*channels raw pixel bytes 0..255, NHWC row-major. */
  images: Uint8Array;
  /** count labels in [0, numClasses). */
  labels: Int32Array;
  count: number;
  height: number;
  width: number;
  channels: number;
  numClasses: number;
  /** length numClasses; classNames[label] names the class. */
  classNames: string[];
}

function checkIndex(what: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new TernlabError(
      "E_OPTION",
      `${what}: ${String(value)} is not allowed. Pass an integer in [${min}, ${max}].`,
    );
  }
  return value;
}

/** Rows [start, end) of `d` as a view: the pixels and labels are shared, not copied. */
export function subset(d: Dataset, start: number, end: number): Dataset {
  checkIndex(`subset of "${d.name}": start`, start, 0, d.count);
  checkIndex(`subset of "${d.name}": end`, end, start, d.count);
  const row = d.height * d.width * d.channels;
  return {
    name: `${d.name}[${start}:${end}]`,
    images: d.images.subarray(start * row, end * row),
    labels: d.labels.subarray(start, end),
    count: end - start,
    height: d.height,
    width: d.width,
    channels: d.channels,
    numClasses: d.numClasses,
    classNames: d.classNames.slice(),
  };
}

/** mulberry32: a tiny, well-mixed 32-bit generator; enough to shuffle indices reproducibly. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gather(d: Dataset, rows: number[], name: string): Dataset {
  const row = d.height * d.width * d.channels;
  const images = new Uint8Array(rows.length * row);
  const labels = new Int32Array(rows.length);
  rows.forEach((r, i) => {
    images.set(d.images.subarray(r * row, (r + 1) * row), i * row);
    labels[i] = d.labels[r];
  });
  return {
    name,
    images,
    labels,
    count: rows.length,
    height: d.height,
    width: d.width,
    channels: d.channels,
    numClasses: d.numClasses,
    classNames: d.classNames.slice(),
  };
}

/**
 * A held-out split, stratified by class: round(count*valFraction) rows go to `val`, each class
 * contributing its share (largest remainder decides the odd rows), chosen by a shuffle seeded by
 * `seed`. Both halves keep the original row order and are copies. Same data and seed ⇒ same split.
 */
export function split(d: Dataset, valFraction: number, seed: number): { train: Dataset; val: Dataset } {
  if (typeof valFraction !== "number" || !(valFraction > 0 && valFraction < 1)) {
    throw new TernlabError(
      "E_OPTION",
      `split of "${d.name}": valFraction ${String(valFraction)} is not allowed. Pass a number strictly between 0 and 1, e.g. 0.1.`,
    );
  }
  if (typeof seed !== "number" || !Number.isSafeInteger(seed)) {
    throw new TernlabError(
      "E_OPTION",
      `split of "${d.name}": seed ${String(seed)} is not allowed. Pass an integer, e.g. 0.`,
    );
  }
  const total = Math.round(d.count * valFraction);
  if (total === 0 || total === d.count) {
    throw new TernlabError(
      "E_OPTION",
      `split of "${d.name}": valFraction ${valFraction} of ${d.count} rows leaves the ${total === 0 ? "validation" : "training"} set empty. Pick a valFraction that gives each side at least one row.`,
    );
  }
  const byClass: number[][] = Array.from({ length: d.numClasses }, () => []);
  for (let i = 0; i < d.count; i++) byClass[d.labels[i]].push(i);

  // Largest-remainder apportionment so the classes' quotas add up to exactly `total`.
  const quota = byClass.map((rows) => Math.floor(rows.length * valFraction));
  let left = total - quota.reduce((a, b) => a + b, 0);
  const order = byClass
    .map((rows, c) => ({ c, rem: rows.length * valFraction - quota[c] }))
    .sort((a, b) => b.rem - a.rem || a.c - b.c);
  for (const { c } of order) {
    if (left === 0) break;
    if (quota[c] < byClass[c].length) {
      quota[c]++;
      left--;
    }
  }

  const rand = mulberry32(seed);
  const isVal = new Uint8Array(d.count);
  byClass.forEach((rows, c) => {
    const r = rows.slice();
    for (let i = r.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      const t = r[i];
      r[i] = r[j];
      r[j] = t;
    }
    for (let i = 0; i < quota[c]; i++) isVal[r[i]] = 1;
  });
  const trainRows: number[] = [];
  const valRows: number[] = [];
  for (let i = 0; i < d.count; i++) (isVal[i] ? valRows : trainRows).push(i);
  return {
    train: gather(d, trainRows, `${d.name}/train-split`),
    val: gather(d, valRows, `${d.name}/val-split`),
  };
}
