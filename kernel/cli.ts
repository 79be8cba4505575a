#!/usr/bin/env node
/**
 * A stand-alone entry for the kernel's commands (`kernel install|list|remove`, `run`), used by the
 * tests and usable before/without src/cli/main.ts: `node dist/kernel/cli.js kernel install`.
 */
import { Command } from "commander";
import { register as registerKernel } from "../src/cli/kernel";
import { register as registerRun } from "../src/cli/run";
import { isTernlabError } from "../src/errors";

const program = new Command("ternlab");
program.showHelpAfterError();
registerKernel(program);
registerRun(program);
program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`ternlab: ${isTernlabError(e) ? `${e.message} [${e.code}]` : (e as Error).stack ?? String(e)}\n`);
  process.exitCode = typeof (e as any)?.exitCode === "number" ? (e as any).exitCode : 1;
});
