/**
 * Code execution: tslab's TypeScript executor (tslab@1.0.22, imported, not forked), with the
 * results that tslab prints captured as values instead.
 *
 * tslab's executor reports through a console interface: `log(value)` for a cell's last
 * expression, `error(fmt, file, line, col, text)` for a compile diagnostic and `error(e)` for a
 * thrown value. We hand it a capturing console, so the kernel can turn the value into an
 * execute_result and the failure into an `error` message with ename/evalue/traceback.
 */
import * as path from "path";
import Module from "module";
import { inspect } from "util";
import type { Executor } from "tslab/dist/executor";
import type { Converter } from "tslab/dist/converter";

import { PACKAGE_ROOT, readPackageVersion } from "./paths";
export { PACKAGE_ROOT, readPackageVersion };

// tslab's own TypeScript (a patched 5.0), resolved the way tslab resolves it.
const tslabDir = path.dirname(require.resolve("tslab/package.json"));
// eslint-disable-next-line @typescript-eslint/no-var-requires
const ts: any = require(require.resolve("@tslab/typescript-for-tslab", { paths: [tslabDir] }));

/** Where `ternlab` (or `ternlab/...`) resolves to: always this package, so cells share its state. */
function forwardTernlab(p: string): string {
  const norm = p.replace(/\\/g, "/");
  const i = norm.lastIndexOf("/node_modules/ternlab");
  if (i < 0) return p;
  const rest = norm.slice(i + "/node_modules/ternlab".length);
  if (rest !== "" && !rest.startsWith("/")) return p; // e.g. node_modules/ternlab-foo
  return path.join(PACKAGE_ROOT, rest);
}

let installed = false;
/**
 * Make `import ... from "ternlab"` work in cells wherever the notebook lives: at run time
 * (Node's resolver) and for type checking (tslab's compiler host reads through `ts.sys`).
 * Both map to this package, so the kernel's live/display hosts and the cell's library are one.
 */
export function installModuleForwarding(): void {
  if (installed) return;
  installed = true;
  const M = Module as any;
  const resolve = M._resolveFilename;
  M._resolveFilename = function (request: string, parent: unknown, ...rest: unknown[]) {
    if (request === "ternlab" || request.startsWith("ternlab/")) {
      return resolve.call(this, path.join(PACKAGE_ROOT, request.slice("ternlab".length)), parent, ...rest);
    }
    return resolve.call(this, request, parent, ...rest);
  };
  const sys = ts.sys;
  for (const fn of ["fileExists", "readFile", "directoryExists", "getDirectories", "readDirectory"]) {
    const orig = sys[fn];
    if (typeof orig !== "function") continue;
    sys[fn] = (p: string, ...args: unknown[]) => orig.call(sys, forwardTernlab(p), ...args);
  }
}

export interface Diagnostic {
  line: number;
  column: number;
  message: string;
  file?: string;
}

export type Outcome =
  | { kind: "ok"; hasValue: boolean; value?: unknown }
  | { kind: "compile-error"; diagnostics: Diagnostic[] }
  | { kind: "error"; error: unknown };

const INTERRUPTED_ASYNC = "Interrupted asynchronously";
const INTERRUPTED_SYNC = /^Script execution was interrupted by `SIGINT`/;

export function isInterruptError(e: unknown): boolean {
  if (e instanceof Error) {
    if (e.message === INTERRUPTED_ASYNC || INTERRUPTED_SYNC.test(e.message)) return true;
    if ((e as any).code === "E_CANCELLED") return true;
  }
  return false;
}

export class Engine {
  private executor: Executor;
  private convs: { node: Converter; browser: Converter; close(): void };
  private capture: { value?: unknown; hasValue: boolean; error?: unknown; hasError: boolean; diagnostics: Diagnostic[] } | null = null;

  constructor(rootDir: string = process.cwd()) {
    installModuleForwarding();
    // tslab's converters are created lazily, exactly as tslab's own main does.
    const { createConverter } = require("tslab/dist/converter") as typeof import("tslab/dist/converter");
    const { createExecutor } = require("tslab/dist/executor") as typeof import("tslab/dist/executor");
    let node: Converter | undefined, browser: Converter | undefined;
    this.convs = {
      get node() {
        return (node ??= createConverter({ isJS: false, isBrowser: false }));
      },
      get browser() {
        return (browser ??= createConverter({ isJS: false, isBrowser: true }));
      },
      close() {
        node?.close();
        browser?.close();
      },
    };
    const self = this;
    this.executor = createExecutor(rootDir, this.convs, {
      log(...args: unknown[]) {
        const c = self.capture;
        if (!c) return console.log(...args);
        c.value = args[0];
        c.hasValue = true;
      },
      error(...args: unknown[]) {
        const c = self.capture;
        if (!c) return console.error(...args);
        if (args[0] === "%s%d:%d - %s" && args.length === 5) {
          const file = String(args[1]).trim();
          c.diagnostics.push({ file: file || undefined, line: Number(args[2]), column: Number(args[3]), message: String(args[4]) });
        } else if (!c.hasError) {
          c.error = args[0];
          c.hasError = true;
        }
      },
    });
  }

  /** Transpile and run one cell. Never throws: failures come back as an Outcome. */
  async execute(code: string): Promise<Outcome> {
    code = expandShorthandProperties(code);
    const c = (this.capture = { hasValue: false, hasError: false, diagnostics: [] as Diagnostic[] } as NonNullable<Engine["capture"]>);
    let ok: boolean;
    try {
      ok = await this.executor.execute(code);
    } catch (e) {
      ok = false;
      if (!c.hasError) {
        c.error = e;
        c.hasError = true;
      }
    } finally {
      this.capture = null;
    }
    if (c.diagnostics.length > 0) return { kind: "compile-error", diagnostics: c.diagnostics };
    if (!ok || c.hasError) return { kind: "error", error: c.hasError ? c.error : new Error("execution failed") };
    return { kind: "ok", hasValue: c.hasValue, value: c.value };
  }

  /** Ends the cell now: its pending await rejects (the code itself may go on: cancel it first). */
  interrupt(): void {
    this.executor.interrupt();
  }

  inspect(code: string, cursor: number): string | null {
    const info = this.executor.inspect(code, cursor);
    if (!info) return null;
    const { printQuickInfo } = require("tslab/dist/inspect") as typeof import("tslab/dist/inspect");
    return printQuickInfo(info);
  }

  complete(code: string, cursor: number): { matches: string[]; start: number; end: number } {
    const info = this.executor.complete(code, cursor);
    return { matches: info.candidates, start: info.start, end: info.end };
  }

  /** A cell's own variable (for tests and user_expressions). */
  get locals(): Record<string, unknown> {
    return this.executor.locals;
  }

  close(): void {
    this.executor.close();
  }
}

/**
 * Work around two bugs of tslab 1.0.22's rewriting of references to earlier cells' variables
 * (`x` → `exports.x`): it misses shorthand properties (`{ epochs }` then fails with "epochs is
 * not defined"), and it rewrites the property name of a renaming destructuring whose source has an
 * earlier cell's type (`const { top1: acc } = r` becomes `const { exports, top1: acc } = ...`).
 * Spelling the first out (`{ epochs: epochs }`) and quoting the second (`{ ["top1"]: acc }`)
 * mean the same and compile correctly.
 */
export function expandShorthandProperties(code: string): string {
  if (!code.includes("{")) return code;
  const sf = ts.createSourceFile("cell.ts", code, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const edits: Array<{ start: number; end: number; text: string }> = [];
  const visit = (n: any): void => {
    if (n.kind === ts.SyntaxKind.ShorthandPropertyAssignment) {
      edits.push({ start: n.name.end, end: n.name.end, text: `: ${n.name.text}` });
    } else if (n.kind === ts.SyntaxKind.BindingElement && n.propertyName && n.propertyName.kind === ts.SyntaxKind.Identifier) {
      edits.push({ start: n.propertyName.getStart(sf), end: n.propertyName.end, text: `[${JSON.stringify(n.propertyName.text)}]` });
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  if (edits.length === 0) return code;
  let out = code;
  for (const e of edits.sort((a, b) => b.start - a.start)) out = out.slice(0, e.start) + e.text + out.slice(e.end);
  return out;
}

/** is_complete: tslab says complete/incomplete; a parse error elsewhere than at the end is invalid. */
export function isComplete(code: string): { status: "complete" | "incomplete" | "invalid"; indent?: string } {
  const { isCompleteCode } = require("tslab/dist/converter") as typeof import("tslab/dist/converter");
  const r = isCompleteCode(code);
  if (!r.completed) return { status: "incomplete", indent: r.indent ?? "" };
  const src = ts.createSourceFile("cell.ts", code, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const diags: unknown[] = src.parseDiagnostics ?? [];
  return { status: diags.length > 0 ? "invalid" : "complete" };
}

export const typescriptVersion: string = ts.version;

// ---------------------------------------------------------------- errors as Jupyter sees them

export interface ErrorContent {
  ename: string;
  evalue: string;
  traceback: string[];
}

const RED = "\u001b[0;31m";
const RESET = "\u001b[0m";

/** Stack frames of the kernel, tslab and Node internals are noise in a cell's traceback. */
function userFrames(stack: string): string[] {
  return stack
    .split("\n")
    .filter((l) => /^\s+at /.test(l))
    .filter((l) => !/node:internal|node_modules[\\/]tslab[\\/]|[\\/]dist[\\/]kernel[\\/]|\(node:vm|at new Promise \(<anonymous>\)/.test(l));
}

export function errorContent(e: unknown, interrupted = false): ErrorContent {
  if (interrupted || isInterruptError(e)) {
    const why = e instanceof Error && (e as any).code === "E_CANCELLED" ? e.message : "the cell was interrupted";
    const evalue = `${why}; the kernel is ready for the next cell`;
    return { ename: "KeyboardInterrupt", evalue, traceback: [`${RED}KeyboardInterrupt${RESET}: ${evalue}`] };
  }
  if (e instanceof Error) {
    const code = (e as any).code;
    const ename = e.name || "Error";
    const evalue = typeof code === "string" && /^E_[A-Z_]+$/.test(code) ? `[${code}] ${e.message}` : e.message;
    const tb = [`${RED}${ename}${RESET}: ${evalue}`, ...userFrames(e.stack ?? "")];
    let cause = (e as any).cause;
    for (let depth = 0; cause instanceof Error && depth < 3; depth++, cause = (cause as any).cause) {
      tb.push(`Caused by ${cause.name}: ${cause.message}`, ...userFrames(cause.stack ?? ""));
    }
    return { ename, evalue, traceback: tb };
  }
  const evalue = inspect(e);
  return { ename: "Uncaught", evalue, traceback: [`${RED}Uncaught${RESET} ${evalue}`] };
}

export function compileErrorContent(diags: Diagnostic[]): ErrorContent {
  const lines = diags.map((d) => `${d.file ? d.file + " " : ""}${d.line}:${d.column} - ${d.message}`);
  return {
    ename: "TSError",
    evalue: `⨯ Unable to compile TypeScript: ${lines[0]}${lines.length > 1 ? ` (and ${lines.length - 1} more)` : ""}`,
    traceback: [`${RED}TSError${RESET}: ⨯ Unable to compile TypeScript:`, ...lines],
  };
}
