import * as fs from "fs";
import * as path from "path";

/** The root of the ternlab package (this file compiles to dist/kernel/paths.js). */
export const PACKAGE_ROOT = path.resolve(__dirname, "..", "..");

export function readPackageVersion(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, "package.json"), "utf8")).version ?? "0.0.0";
  } catch {
    return "0.0.0";
  }
}
