import * as path from "path";

/** The root of the ternlab package (this file compiles to dist/kernel/paths.js). */
export const PACKAGE_ROOT = path.resolve(__dirname, "..", "..");
