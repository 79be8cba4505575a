import * as path from "node:path";
import { checkSplit } from "./check";
import { Dataset } from "./dataset";
import { datasetError, exists } from "./file";
import { readIdx } from "./idx";

export const FASHION_MNIST_CLASSES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
];

async function find(dir: string, stem: string): Promise<string> {
  for (const name of [stem, `${stem}.gz`]) {
    const p = path.join(dir, name);
    if (await exists(p)) return p;
  }
  throw datasetError(
    dir,
    null,
    `no ${stem} or ${stem}.gz in this folder`,
    "Put the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in it.",
  );
}

/** Fashion-MNIST from a folder holding its IDX files, raw or gzipped. 28×28×1, 10 classes. */
export async function loadFashionMnist(
  dir: string,
  split: "train" | "test",
  opts: { limit?: number } = {},
): Promise<Dataset> {
  checkSplit("loadFashionMnist", split);
  const stem = split === "train" ? "train" : "t10k";
  const images = await find(dir, `${stem}-images-idx3-ubyte`);
  const labels = await find(dir, `${stem}-labels-idx1-ubyte`);
  return readIdx(images, labels, { limit: opts.limit, classNames: FASHION_MNIST_CLASSES, name: `fashion-mnist/${split}` });
}
