import { TernlabError } from "../errors";

/** `limit` is a positive integer or absent; anything else is an E_OPTION naming the key. */
export function checkLimit(where: string, limit: unknown): number {
  if (limit === undefined) return Infinity;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1) {
    throw new TernlabError(
      "E_OPTION",
      `${where}: option "limit" is ${JSON.stringify(limit)}. Pass a positive integer (the most images to load) or leave it out.`,
    );
  }
  return limit;
}

export function checkSplit(where: string, split: unknown): "train" | "test" {
  if (split !== "train" && split !== "test") {
    throw new TernlabError("E_OPTION", `${where}: split ${JSON.stringify(split)} is not allowed. Pass "train" or "test".`);
  }
  return split;
}
