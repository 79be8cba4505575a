#!/usr/bin/env node
/**
 * The kernel process: `node dist/kernel/main.js -f <connection file>` (what the kernelspec's argv
 * runs, with Jupyter filling in {connection_file}).
 */
import { Kernel } from "./server";
import { isTernlabError } from "../src/errors";

function connectionFile(argv: string[]): string | null {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-f" || a === "--connection-file") return argv[i + 1] ?? null;
    const m = /^--connection-file=(.+)$/.exec(a);
    if (m) return m[1];
  }
  return null;
}

async function main(): Promise<void> {
  const file = connectionFile(process.argv.slice(2));
  if (!file) {
    process.stderr.write("usage: ternlab-kernel -f CONNECTION_FILE\n(Jupyter starts the kernel like this; install it with `npx ternlab kernel install`)\n");
    process.exit(2);
  }
  // Chromium renders figures' PNGs; keep it warm between cells.
  try {
    require("../src/figures").setIdleTimeout(5 * 60_000);
  } catch {
    /* figures unavailable: no PNGs */
  }
  const kernel = Kernel.fromConnectionFile(file);
  // A stray rejection or exception in a cell's background work must not kill the kernel.
  process.on("unhandledRejection", (reason) => kernel.log(`unhandled promise rejection: ${reason instanceof Error ? reason.stack : String(reason)}`));
  process.on("uncaughtException", (err) => kernel.log(`uncaught exception: ${err.stack ?? err}`));
  process.on("SIGTERM", () => void kernel.close().then(() => process.exit(0)));
  await kernel.start();
}

main().catch((e) => {
  process.stderr.write(`ternlab kernel: ${isTernlabError(e) ? e.message : (e as Error).stack}\n`);
  process.exit(1);
});
