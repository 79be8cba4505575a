/**
 * papermill-style notebook execution for TypeScript notebooks: parameters injected after the cell
 * tagged `parameters` (in a cell tagged `injected-parameters`), every code cell run in order by a
 * kernel driven over ZeroMQ, outputs and papermill's metadata recorded, and on a failing cell the
 * notebook still written, with papermill's error banner, before the run reports failure.
 */
import * as fs from "fs";
import * as path from "path";
import { randomBytes } from "crypto";
import * as ts from "@tslab/typescript-for-tslab";
import { KernelClient, TimeoutError } from "./client";
import type { Message } from "./wire";
import { TernlabError } from "../src/errors";
import { readPackageVersion } from "./paths";

// ---------------------------------------------------------------- nbformat

export type MultiString = string | string[];
export interface Cell {
  id?: string;
  cell_type: "code" | "markdown" | "raw";
  metadata: Record<string, any>;
  source: MultiString;
  outputs?: Output[];
  execution_count?: number | null;
  attachments?: unknown;
}
export type Output = Record<string, any> & { output_type: string };
export interface Notebook {
  cells: Cell[];
  metadata: Record<string, any>;
  nbformat: number;
  nbformat_minor: number;
}

export const text = (s: MultiString | undefined): string => (Array.isArray(s) ? s.join("") : (s ?? ""));
/** nbformat's on-disk form of multi-line strings: a list of lines, each with its newline. */
export const lines = (s: string): string[] => s.match(/[^\n]*\n|[^\n]+$/g) ?? [];

export function readNotebook(file: string): Notebook {
  let raw: string;
  try {
    raw = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new TernlabError("E_IO", `notebook ${file}: cannot be read (${(e as Error).message}); check the path`);
  }
  let nb: Notebook;
  try {
    nb = JSON.parse(raw);
  } catch (e) {
    throw new TernlabError("E_IO", `notebook ${file}: not JSON (${(e as Error).message}); is it an .ipynb file?`);
  }
  if (!nb || !Array.isArray(nb.cells) || nb.nbformat !== 4) {
    throw new TernlabError("E_IO", `notebook ${file}: not an nbformat 4 notebook (nbformat ${JSON.stringify(nb?.nbformat)}); convert it with jupyter nbconvert --to notebook`);
  }
  nb.metadata ??= {};
  for (const c of nb.cells) c.metadata ??= {};
  return nb;
}

/** Writes JSON the way nbformat does (indent 1, sorted keys, trailing newline), atomically. */
export function writeNotebook(nb: Notebook, file: string): void {
  const sortKeys = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(sortKeys) : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as any)[k])])) : v;
  const body = JSON.stringify(sortKeys(nb), null, 1) + "\n";
  const tmp = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, body);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new TernlabError("E_IO", `cannot write the output notebook ${file} (${(e as Error).message}); check that its folder exists and is writable`);
  }
}

function tags(c: Cell): string[] {
  return Array.isArray(c.metadata?.tags) ? c.metadata.tags : [];
}

function newCellId(): string {
  return randomBytes(4).toString("hex") + "-" + randomBytes(2).toString("hex");
}

// ---------------------------------------------------------------- parameters

/** papermill's `-p name value` typing: booleans, null, integers, floats, else a string (JSON lists/objects too). */
export function parseParameterValue(v: string): unknown {
  if (/^(true|True)$/.test(v)) return true;
  if (/^(false|False)$/.test(v)) return false;
  if (/^(null|None)$/.test(v)) return null;
  if (/^[-+]?\d+$/.test(v)) return Number(v);
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v) || /^[-+]?(Infinity|NaN)$/.test(v)) return Number(v);
  if (/^\s*[[{]/.test(v)) {
    try {
      return JSON.parse(v);
    } catch {
      /* a plain string after all */
    }
  }
  return v;
}

/** A TypeScript expression for a parameter value. */
export function tsLiteral(v: unknown, where = "parameter"): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number") return Number.isNaN(v) ? "NaN" : v === Infinity ? "Infinity" : v === -Infinity ? "-Infinity" : Object.is(v, -0) ? "-0" : String(v);
  if (typeof v === "string" || typeof v === "boolean") return JSON.stringify(v);
  if (typeof v === "bigint") return `${v}n`;
  if (v instanceof Date) return `new Date(${JSON.stringify(v.toISOString())})`;
  if (Array.isArray(v)) return `[${v.map((x, i) => tsLiteral(x, `${where}[${i}]`)).join(", ")}]`;
  if (typeof v === "object") {
    const entries = Object.entries(v as object).map(([k, x]) => `${/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k)}: ${tsLiteral(x, `${where}.${k}`)}`);
    return entries.length ? `{ ${entries.join(", ")} }` : "{}";
  }
  throw new TernlabError("E_OPTION", `${where}: a ${typeof v} cannot be a notebook parameter; use numbers, strings, booleans, null, arrays and objects`);
}

interface Declared {
  kind: "let" | "const" | "var";
  type?: string;
  value?: unknown;
  hasValue: boolean;
}

/** Plain literal values of an initializer (numbers, strings, booleans, null, arrays, objects). */
function literalValue(e: ts.Expression): { ok: boolean; value?: unknown } {
  if (ts.isParenthesizedExpression(e) || ts.isAsExpression(e) || ts.isSatisfiesExpression(e)) return literalValue(e.expression);
  if (ts.isNumericLiteral(e)) return { ok: true, value: Number(e.text) };
  if (ts.isStringLiteral(e) || ts.isNoSubstitutionTemplateLiteral(e)) return { ok: true, value: e.text };
  if (e.kind === ts.SyntaxKind.TrueKeyword) return { ok: true, value: true };
  if (e.kind === ts.SyntaxKind.FalseKeyword) return { ok: true, value: false };
  if (e.kind === ts.SyntaxKind.NullKeyword) return { ok: true, value: null };
  if (ts.isPrefixUnaryExpression(e) && e.operator === ts.SyntaxKind.MinusToken) {
    const inner = literalValue(e.operand);
    return inner.ok && typeof inner.value === "number" ? { ok: true, value: -inner.value } : { ok: false };
  }
  if (ts.isArrayLiteralExpression(e)) {
    const vs = e.elements.map(literalValue);
    return vs.every((v) => v.ok) ? { ok: true, value: vs.map((v) => v.value) } : { ok: false };
  }
  if (ts.isObjectLiteralExpression(e)) {
    const out: Record<string, unknown> = {};
    for (const p of e.properties) {
      if (!ts.isPropertyAssignment(p) || !(ts.isIdentifier(p.name) || ts.isStringLiteral(p.name) || ts.isNumericLiteral(p.name))) return { ok: false };
      const v = literalValue(p.initializer);
      if (!v.ok) return { ok: false };
      out[p.name.text] = v.value;
    }
    return { ok: true, value: out };
  }
  return { ok: false };
}

/** The top-level declarations of a parameters cell: their keyword, type annotation and value. */
export function parseParametersCell(source: string): Map<string, Declared> {
  const sf = ts.createSourceFile("parameters.ts", source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const out = new Map<string, Declared>();
  for (const st of sf.statements) {
    if (!ts.isVariableStatement(st)) continue;
    const flags = st.declarationList.flags;
    const kind = flags & ts.NodeFlags.Const ? "const" : flags & ts.NodeFlags.Let ? "let" : "var";
    for (const d of st.declarationList.declarations) {
      if (!ts.isIdentifier(d.name)) continue;
      const lit = d.initializer ? literalValue(d.initializer) : { ok: false };
      out.set(d.name.text, { kind, type: d.type?.getText(sf), hasValue: lit.ok, value: lit.value });
    }
  }
  return out;
}

/** The source of the injected-parameters cell: declarations that shadow the defaults, typed alike. */
export function injectedSource(params: Record<string, unknown>, declared: Map<string, Declared>): string {
  const out = ["// Parameters"];
  for (const [name, value] of Object.entries(params)) {
    if (!/^[A-Za-z_$][\w$]*$/.test(name)) {
      throw new TernlabError("E_OPTION", `parameter name "${name}" is not a TypeScript identifier; use letters, digits, _ and $ (e.g. learning_rate)`);
    }
    const d = declared.get(name);
    out.push(`${d?.kind ?? "let"} ${name}${d?.type ? `: ${d.type}` : ""} = ${tsLiteral(value, `parameter "${name}"`)};`);
  }
  return out.join("\n") + "\n";
}

/** Inserts (or replaces) the injected-parameters cell after the cell tagged `parameters`. */
export function parameterize(nb: Notebook, params: Record<string, unknown>, opts: { kernelName?: string } = {}): { defaults: Record<string, unknown>; warnings: string[] } {
  const warnings: string[] = [];
  const old = nb.cells.findIndex((c) => tags(c).includes("injected-parameters"));
  if (old >= 0) nb.cells.splice(old, 1);
  const pIndex = nb.cells.findIndex((c) => tags(c).includes("parameters"));
  const declared = pIndex >= 0 ? parseParametersCell(text(nb.cells[pIndex].source)) : new Map<string, Declared>();
  const defaults = Object.fromEntries([...declared].filter(([, d]) => d.hasValue).map(([k, d]) => [k, d.value]));
  for (const name of Object.keys(params)) {
    if (pIndex >= 0 && !declared.has(name)) warnings.push(`Passed unknown parameter: ${name}`);
  }
  if (Object.keys(params).length > 0) {
    if (pIndex < 0) warnings.push("Input notebook does not contain a cell with tag 'parameters'; the injected-parameters cell goes first");
    const cell: Cell = {
      cell_type: "code",
      execution_count: null,
      metadata: { tags: ["injected-parameters"] },
      outputs: [],
      source: lines(injectedSource(params, declared)),
    };
    if (nb.nbformat_minor >= 5 || nb.cells.some((c) => c.id)) cell.id = newCellId();
    nb.cells.splice(pIndex >= 0 ? pIndex + 1 : 0, 0, cell);
  }
  void opts;
  return { defaults, warnings };
}

// ---------------------------------------------------------------- outputs (nbclient's rules)

function normaliseData(data: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(data ?? {})) {
    out[k] = typeof v === "string" && (k.startsWith("text/") || k === "image/svg+xml" || k === "application/javascript") ? lines(v) : v;
  }
  return out;
}

/** Turns iopub messages into a cell's outputs, as nbclient does (streams merged, display updates applied). */
export class OutputCollector {
  private clearPending = false;
  /** display_id → the outputs showing it (anywhere in the notebook). */
  private byDisplayId = new Map<string, Output[]>();

  constructor(private onOutput?: (o: Output) => void) {}

  handle(cell: Cell, m: Message): void {
    const c: any = m.content;
    const type = m.header.msg_type;
    if (type === "execute_input") {
      cell.execution_count = c.execution_count ?? cell.execution_count;
      return;
    }
    if (type === "clear_output") {
      if (c.wait) this.clearPending = true;
      else cell.outputs = [];
      return;
    }
    if (type === "update_display_data") {
      const id = c.transient?.display_id;
      for (const o of (id && this.byDisplayId.get(id)) || []) {
        o.data = normaliseData(c.data);
        o.metadata = c.metadata ?? {};
      }
      return;
    }
    let out: Output | null = null;
    if (type === "stream") out = { output_type: "stream", name: c.name, text: c.text };
    else if (type === "display_data") out = { output_type: "display_data", data: normaliseData(c.data), metadata: c.metadata ?? {} };
    else if (type === "execute_result") out = { output_type: "execute_result", data: normaliseData(c.data), metadata: c.metadata ?? {}, execution_count: c.execution_count ?? null };
    else if (type === "error") out = { output_type: "error", ename: c.ename, evalue: c.evalue, traceback: c.traceback ?? [] };
    if (!out) return;
    if (this.clearPending) {
      cell.outputs = [];
      this.clearPending = false;
    }
    cell.outputs ??= [];
    const last = cell.outputs[cell.outputs.length - 1];
    if (out.output_type === "stream" && last?.output_type === "stream" && last.name === out.name) {
      last.text = lines(text(last.text) + out.text);
    } else {
      if (out.output_type === "stream") out.text = lines(out.text);
      cell.outputs.push(out);
      const id = c.transient?.display_id;
      if (id && (type === "display_data" || type === "execute_result")) {
        if (!this.byDisplayId.has(id)) this.byDisplayId.set(id, []);
        this.byDisplayId.get(id)!.push(out);
      }
    }
    this.onOutput?.(out);
  }
}

// ---------------------------------------------------------------- execution

export interface RunOptions {
  input: string;
  output: string;
  parameters?: Record<string, unknown>;
  /** Kernelspec name (default: the notebook's kernelspec, else "ternlab"). */
  kernelName?: string;
  /** The kernel's working directory (default: this process's, as in papermill). */
  cwd?: string;
  /** Seconds a cell may run before it is interrupted and the run fails. */
  timeoutS?: number;
  /** Copy cell outputs to stderr as they arrive. */
  logOutput?: boolean;
  /** Inject the parameters and write the notebook without running it. */
  prepareOnly?: boolean;
  /** Progress lines (stderr by default). */
  log?: (line: string) => void;
  /** Extra kernel environment. */
  env?: Record<string, string>;
}

export interface RunResult {
  notebook: Notebook;
  ok: boolean;
  /** The failing cell's error, papermill-style. */
  error?: { cellIndex: number; executionCount: number | null; ename: string; evalue: string; traceback: string[] };
}

/** papermill's message for a failed run. */
export class PapermillExecutionError extends TernlabError {
  constructor(readonly cellIndex: number, readonly executionCount: number | null, readonly ename: string, readonly evalue: string, readonly traceback: string[]) {
    super(
      "E_KERNEL",
      `Exception encountered at "In [${executionCount ?? " "}]" (cell ${cellIndex}):\n${traceback.map((l) => l.replace(/\u001b\[[\d;]*m/g, "")).join("\n")}\n${ename}: ${evalue}`,
    );
    this.name = "PapermillExecutionError";
  }
}

/** Timestamps as papermill writes them (ISO 8601 with microseconds). */
const iso = (d = new Date()) => d.toISOString().replace(/Z$/, "000Z");
const seconds = (a: Date, b: Date) => (b.getTime() - a.getTime()) / 1000;

function errorBanner(executionCount: number | null): [Cell, Cell] {
  const style = "color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;";
  const top: Cell = {
    cell_type: "markdown",
    metadata: { tags: ["papermill-error-cell-tag"] },
    source: lines(`<span style="${style}">An Exception was encountered at '<a href="#papermill-error-cell">In [${executionCount ?? " "}]</a>'.</span>`),
  };
  const anchor: Cell = {
    cell_type: "markdown",
    metadata: { tags: ["papermill-error-cell-tag"] },
    source: lines(`<span id="papermill-error-cell" style="${style}">Execution using papermill encountered an exception here and stopped:</span>`),
  };
  return [top, anchor];
}

export async function runNotebook(opts: RunOptions): Promise<RunResult> {
  const log = opts.log ?? ((s: string) => process.stderr.write(s + "\n"));
  const nb = readNotebook(opts.input);
  const params = opts.parameters ?? {};
  const { defaults, warnings } = parameterize(nb, params);
  for (const w of warnings) log(`Warning: ${w}`);
  const kernelName = opts.kernelName ?? nb.metadata.kernelspec?.name ?? "ternlab";
  const start = new Date();
  nb.metadata.papermill = {
    default_parameters: defaults,
    duration: null,
    end_time: null,
    environment_variables: {},
    exception: null,
    input_path: opts.input,
    output_path: opts.output,
    parameters: params,
    start_time: iso(start),
    version: `ternlab ${readPackageVersion()}`,
  };
  for (const c of nb.cells) {
    if (c.cell_type === "code" || c.cell_type === "markdown" || c.cell_type === "raw") {
      c.metadata.papermill = { duration: null, end_time: null, exception: null, start_time: null, status: "pending" };
    }
    if (c.cell_type === "code") {
      c.outputs = [];
      c.execution_count = null;
      if (c.metadata.execution) c.metadata.execution = {};
    }
  }
  if (opts.prepareOnly) {
    writeNotebook(nb, opts.output);
    return { notebook: nb, ok: true };
  }
  writeNotebook(nb, opts.output);
  if (opts.cwd && !fs.existsSync(opts.cwd)) {
    throw new TernlabError("E_OPTION", `--cwd ${opts.cwd}: no such folder; give the folder the notebook's relative paths start from`);
  }
  log(`Executing ${opts.input} → ${opts.output} with kernel ${kernelName}${Object.keys(params).length ? `, parameters ${JSON.stringify(params)}` : ""}`);
  const kc = await KernelClient.start({ kernelName, cwd: opts.cwd, stderr: "pipe", env: opts.env });
  const collector = new OutputCollector(opts.logOutput ? (o) => log(outputText(o)) : undefined);
  let failure: RunResult["error"];
  let lastSave = Date.now();
  try {
    nb.metadata.language_info = (await kc.request("shell", "kernel_info_request", {})).content.language_info;
    const code = nb.cells.map((c, i) => [c, i] as const).filter(([c]) => c.cell_type === "code");
    for (let k = 0; k < code.length; k++) {
      const [cell, index] = code[k];
      const src = text(cell.source);
      const pm = cell.metadata.papermill;
      const t0 = new Date();
      pm.start_time = iso(t0);
      pm.status = "running";
      if (src.trim() === "") {
        // nbclient skips empty cells.
        Object.assign(pm, { end_time: iso(), duration: 0, exception: false, status: "completed" });
        continue;
      }
      log(`Executing cell ${k + 1}/${code.length}`);
      const timing: Record<string, string> = {};
      let result: { reply: Message } | null = null;
      let error: { ename: string; evalue: string; traceback: string[] } | null = null;
      try {
        result = await kc.execute(src, {
          timeoutMs: opts.timeoutS ? opts.timeoutS * 1000 : undefined,
          onMessage: (m) => {
            const st = (m.content as any).execution_state;
            if (m.header.msg_type === "status" && st === "busy") timing["iopub.status.busy"] = iso();
            if (m.header.msg_type === "execute_input") timing["iopub.execute_input"] = iso();
            if (m.header.msg_type === "status" && st === "idle") timing["iopub.status.idle"] = iso();
            collector.handle(cell, m);
          },
        });
        timing["shell.execute_reply"] = iso();
        const r: any = result.reply.content;
        if (r.execution_count !== undefined) cell.execution_count = r.execution_count;
        if (r.status === "error") error = { ename: r.ename, evalue: r.evalue, traceback: r.traceback ?? [] };
        else if (r.status !== "ok") error = { ename: "ExecutionAborted", evalue: `the kernel answered "${r.status}"`, traceback: [] };
      } catch (e) {
        if (e instanceof TimeoutError) {
          await kc.interrupt().catch(() => undefined);
          error = { ename: "CellTimeoutError", evalue: `A cell timed out while it was being executed, after ${opts.timeoutS} seconds; raise --timeout or make the cell faster`, traceback: [] };
        } else {
          error = { ename: "DeadKernelError", evalue: (e as Error).message, traceback: [] };
        }
        cell.outputs ??= [];
        cell.outputs.push({ output_type: "error", ...error });
      }
      cell.metadata.execution = timing;
      const t1 = new Date();
      Object.assign(pm, { end_time: iso(t1), duration: seconds(t0, t1), exception: !!error, status: error ? "failed" : "completed" });
      if (error) {
        failure = { cellIndex: index, executionCount: cell.execution_count ?? null, ...error };
        break;
      }
      if (Date.now() - lastSave > 10_000) {
        writeNotebook(nb, opts.output);
        lastSave = Date.now();
      }
    }
  } finally {
    await kc.shutdown();
  }
  const end = new Date();
  Object.assign(nb.metadata.papermill, { end_time: iso(end), duration: seconds(start, end), exception: failure ? true : null });
  if (failure) {
    const [top, anchor] = errorBanner(failure.executionCount);
    if (nb.nbformat_minor >= 5 || nb.cells.some((c) => c.id)) {
      top.id = newCellId();
      anchor.id = newCellId();
    }
    nb.cells.splice(failure.cellIndex, 0, anchor);
    nb.cells.unshift(top);
  }
  writeNotebook(nb, opts.output);
  return { notebook: nb, ok: !failure, error: failure };
}

function outputText(o: Output): string {
  if (o.output_type === "stream") return text(o.text).replace(/\n$/, "");
  if (o.output_type === "error") return `${o.ename}: ${o.evalue}`;
  const d = o.data ?? {};
  return text(d["text/plain"]) || `[${Object.keys(d).join(", ")}]`;
}
