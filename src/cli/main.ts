#!/usr/bin/env node
/**
 * The ternlab command line: `ternlab train …` (the main job), `ternlab kernel install|list|remove`,
 * `ternlab run in.ipynb out.ipynb -p k v` (papermill-style batch execution).
 */
import { Command } from "commander";
import { TernlabError } from "../errors";
import { register as registerKernel } from "./kernel";
import { register as registerRun } from "./run";
import { register as registerTrain } from "./train";

export function program(): Command {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const pkg = require("../../../package.json") as { version: string };
  const p = new Command("ternlab")
    .description("discrete (ternary) neural networks trained by probabilistic update rules — GXNOR's DST and beyond")
    .version(pkg.version);
  registerTrain(p);
  registerKernel(p);
  registerRun(p);
  return p;
}

if (require.main === module) {
  program()
    .parseAsync(process.argv)
    .catch((e: unknown) => {
      if (e instanceof TernlabError) {
        process.stderr.write(`ternlab: ${e.code}: ${e.message}\n`);
        process.exit(e.code === "E_CANCELLED" ? 130 : 1);
      }
      process.stderr.write(`ternlab: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    });
}
