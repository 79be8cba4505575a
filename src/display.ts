/**
 * Rich display: how a value becomes a Jupyter MIME bundle, and `display()` for cells.
 *
 * The convention is Deno's: a value with a `[Symbol.for("Jupyter.display")]()` method returning a
 * MIME bundle is shown as that bundle. Two plain-data types of ternlab have no such method and are
 * recognised by shape: Plotly figures (`{data: [...], layout: {...}}`) and Arrow Tables (`schema`,
 * `numRows`, `toArray`). Everything else is shown as `util.inspect` text.
 *
 * The library does not know Jupyter: a host (the kernel) registers itself with `setDisplayHost`;
 * without one, `display()` prints the text/plain form to stdout.
 */
import { inspect } from "util";
import { randomUUID } from "crypto";
import { escapeHtml } from "./metrics";
import { scriptJson } from "./plots";
import { plotlyJs } from "./report";

export type MimeBundle = Record<string, unknown>;

export interface DisplayOutput {
  data: MimeBundle;
  metadata: Record<string, unknown>;
}

export interface DisplayHost {
  /** Send a display_data (or, with `update`, an update_display_data) message. */
  display(out: DisplayOutput, opts: { displayId?: string; update?: boolean }): void;
  clearOutput(wait: boolean): void;
}

export const JUPYTER_DISPLAY = Symbol.for("Jupyter.display");
export const PLOTLY_MIME = "application/vnd.plotly.v1+json";

const HOST_KEY = Symbol.for("ternlab.displayHost");
type G = typeof globalThis & { [HOST_KEY]?: DisplayHost | null };

export function setDisplayHost(h: DisplayHost | null): void {
  (globalThis as G)[HOST_KEY] = h;
}
export function displayHost(): DisplayHost | null {
  return (globalThis as G)[HOST_KEY] ?? null;
}

export interface Figure {
  data: Array<Record<string, unknown>>;
  layout?: Record<string, unknown>;
  config?: Record<string, unknown>;
  frames?: unknown[];
}

export interface ArrowTableLike {
  schema: { fields: Array<{ name: string; type?: unknown }> };
  numRows: number;
  numCols?: number;
  toArray(): unknown[];
  slice?(begin?: number, end?: number): ArrowTableLike;
  getChild?(name: string): { get(i: number): unknown } | null;
}

export function isFigure(v: unknown): v is Figure {
  if (v === null || typeof v !== "object") return false;
  const f = v as Record<string, unknown>;
  return Array.isArray(f.data) && typeof f.layout === "object" && f.layout !== null && !Array.isArray(f.layout);
}

export function isArrowTable(v: unknown): v is ArrowTableLike {
  if (v === null || typeof v !== "object") return false;
  const t = v as Record<string, unknown>;
  return typeof t.schema === "object" && t.schema !== null && typeof t.numRows === "number" && typeof t.toArray === "function";
}

export function hasDisplayMethod(v: unknown): v is { [JUPYTER_DISPLAY](): MimeBundle } {
  return v !== null && (typeof v === "object" || typeof v === "function") && typeof (v as any)[JUPYTER_DISPLAY] === "function";
}

// ---------------------------------------------------------------- text

export function plainText(v: unknown): string {
  return typeof v === "string" ? inspect(v) : inspect(v, { depth: 4, maxArrayLength: 100, breakLength: 100, colors: false });
}

export { escapeHtml };

// ---------------------------------------------------------------- Plotly figures

/** Whether plotly.js was already shipped in a text/html output of this process (one per notebook). */
let plotlyShipped = false;

/** Forget that plotly.js was shipped: the next figure output carries it again (a new notebook). */
export function resetPlotlyInclusion(): void {
  plotlyShipped = false;
}



/**
 * A text/html rendering of a figure that works offline. plotly.js itself travels in the first
 * figure output of the notebook only; later outputs queue their drawing until it has loaded.
 */
export function figureHtml(fig: Figure, opts: { includePlotlyJs?: boolean; fallbackPng?: string } = {}): string {
  const include = opts.includePlotlyJs ?? !plotlyShipped;
  if (include) plotlyShipped = true;
  const id = `ternlab-fig-${randomUUID()}`;
  const height = typeof fig.layout?.height === "number" ? (fig.layout.height as number) : 450;
  const width = typeof fig.layout?.width === "number" ? `${fig.layout.width}px` : "100%";
  const draw =
    `(function(){var fig=${scriptJson({ data: fig.data, layout: fig.layout ?? {}, config: fig.config ?? {} })};` +
    `var cfg=Object.assign({responsive:true,displaylogo:false},fig.config);` +
    `function draw(){var el=document.getElementById(${JSON.stringify(id)});if(el){el.innerHTML="";window.Plotly.newPlot(el,fig.data,fig.layout,cfg);}}` +
    `if(window.Plotly)draw();else(window.__ternlabPlotlyQueue=window.__ternlabPlotlyQueue||[]).push(draw);})();`;
  const lib = include
    ? `<script type="text/javascript">(function(define,module,exports){${plotlyJs()}\n}).call(window);` +
      `(window.__ternlabPlotlyQueue||[]).splice(0).forEach(function(f){f();});</script>`
    : "";
  // A PNG inside the div shows where scripts do not run (an untrusted notebook, a page whose
  // plotly.js output was re-run away); drawing replaces it.
  const html = `<div id="${id}" class="ternlab-figure" style="width:${width};min-height:${height}px;"></div>${lib}<script type="text/javascript">${draw}</script>`;
  return opts.fallbackPng ? withFallbackPng(html, opts.fallbackPng) : html;
}

function figureText(fig: Figure): string {
  const title = (fig.layout?.title as any)?.text ?? fig.layout?.title;
  const traces = fig.data.map((t) => `${t.type ?? "scatter"}${t.name ? ` "${t.name}"` : ""}`);
  return `Figure${title ? ` "${title}"` : ""} with ${fig.data.length} trace${fig.data.length === 1 ? "" : "s"}: ${traces.join(", ")}`;
}

/** Puts a PNG (base64) into the first still-empty figure div of an HTML rendering (see figureHtml). */
export function withFallbackPng(html: string, png: string): string {
  return html.replace(/(<div id="ternlab-fig-[^"]*" class="ternlab-figure" style="[^"]*">)(<\/div>)/, (_m, open: string, close: string) =>
    `${open}<img src="data:image/png;base64,${png}" alt="figure" style="max-width:100%">${close}`);
}

/** A figure's MIME bundle; with `png` (base64) the image also backs the HTML where scripts cannot run. */
export function figureBundle(fig: Figure, opts: { png?: string } = {}): MimeBundle {
  return {
    [PLOTLY_MIME]: { data: fig.data, layout: fig.layout ?? {}, ...(fig.config ? { config: fig.config } : {}) },
    "text/html": figureHtml(fig, { fallbackPng: opts.png }),
    ...(opts.png ? { "image/png": opts.png } : {}),
    "text/plain": figureText(fig),
  };
}

// ---------------------------------------------------------------- Arrow tables

export const TABLE_ROW_CAP = 20;

function cellText(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(4) : v.toFixed(4);
  if (typeof v === "bigint") return v.toString();
  return String(v);
}

function rowsOf(t: ArrowTableLike, indices: number[]): unknown[][] {
  const names = t.schema.fields.map((f) => f.name);
  const cols = names.map((n) => (t.getChild ? t.getChild(n) : null));
  const all = cols.some((c) => !c) ? t.toArray() : null;
  return indices.map((i) => names.map((n, j) => (all ? (all[i] as any)?.[n] : cols[j]!.get(i))));
}

/** An HTML table: the first and last rows when there are more than `maxRows`. */
export function tableHtml(t: ArrowTableLike, maxRows = TABLE_ROW_CAP): string {
  try {
    // The metrics module owns the canonical table rendering once it exists.
    const m = require("./metrics");
    if (typeof m.tableToHtml === "function") return m.tableToHtml(t, { maxRows });
  } catch {
    /* not built yet: fall back to ours */
  }
  const names = t.schema.fields.map((f) => f.name);
  const n = t.numRows;
  const head = n > maxRows ? Math.ceil(maxRows / 2) : n;
  const tail = n > maxRows ? maxRows - head : 0;
  const idx = [...Array(head).keys(), ...Array.from({ length: tail }, (_, k) => n - tail + k)];
  const rows = rowsOf(t, idx);
  const tr = (i: number, r: unknown[]) => `<tr><th>${idx[i]}</th>${r.map((c) => `<td>${escapeHtml(cellText(c))}</td>`).join("")}</tr>`;
  const body = [
    ...rows.slice(0, head).map((r, i) => tr(i, r)),
    ...(tail ? [`<tr><th>…</th>${names.map(() => "<td>…</td>").join("")}</tr>`] : []),
    ...rows.slice(head).map((r, i) => tr(head + i, r)),
  ].join("");
  return (
    `<div class="ternlab-table"><table class="dataframe"><thead><tr><th></th>${names.map((c) => `<th>${escapeHtml(c)}</th>`).join("")}</tr></thead>` +
    `<tbody>${body}</tbody></table><p>${n} rows × ${names.length} columns</p></div>`
  );
}

export function tableText(t: ArrowTableLike, maxRows = 10): string {
  const names = t.schema.fields.map((f) => f.name);
  const n = Math.min(t.numRows, maxRows);
  const rows = rowsOf(t, [...Array(n).keys()]).map((r) => r.map(cellText));
  const widths = names.map((c, j) => Math.min(14, Math.max(c.length, ...rows.map((r) => r[j].length))));
  const fmt = (cells: string[]) => cells.map((c, j) => c.slice(0, 14).padStart(widths[j])).join("  ");
  const lines = [fmt(names), ...rows.map(fmt)];
  if (t.numRows > n) lines.push(`… ${t.numRows - n} more rows`);
  lines.push(`[${t.numRows} rows × ${names.length} columns]`);
  return lines.join("\n");
}

export function tableBundle(t: ArrowTableLike): MimeBundle {
  return { "text/html": tableHtml(t), "text/plain": tableText(t) };
}

// ---------------------------------------------------------------- any value

function normalise(bundle: MimeBundle, value: unknown): MimeBundle {
  const out: MimeBundle = {};
  for (const [mime, v] of Object.entries(bundle)) {
    if (v === undefined) continue;
    // Binary images travel base64-encoded (nbformat).
    out[mime] = v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v;
  }
  if (!("text/plain" in out)) out["text/plain"] = plainText(value);
  return out;
}

/** The MIME bundle of a value, without anything that needs a browser (see the kernel for PNG). */
export function mimeBundle(value: unknown): MimeBundle {
  if (hasDisplayMethod(value)) {
    const b = value[JUPYTER_DISPLAY]();
    if (b && typeof b === "object") return normalise(b as MimeBundle, value);
  }
  if (isFigure(value)) return figureBundle(value);
  if (isArrowTable(value)) return tableBundle(value);
  return { "text/plain": plainText(value) };
}

// ---------------------------------------------------------------- display() for cells

export interface DisplayOptions {
  /** An id for this output, so that `updateDisplay(id, value)` can replace it later. */
  displayId?: string;
  /** Replace the output that has `displayId` instead of adding one. */
  update?: boolean;
  metadata?: Record<string, unknown>;
}

function emit(data: MimeBundle, opts: DisplayOptions = {}): void {
  const host = displayHost();
  if (host) host.display({ data, metadata: opts.metadata ?? {} }, { displayId: opts.displayId, update: opts.update });
  else process.stdout.write(String(data["text/plain"] ?? "") + "\n");
}

/**
 * Show a value as a rich output now (as if it were a cell's last value). Give a `displayId` to
 * replace that output later with `updateDisplay(displayId, newValue)`.
 */
export function display(value: unknown, opts?: DisplayOptions): void {
  emit(mimeBundle(value), opts);
}
export namespace display {
  export const html = (s: string, o?: DisplayOptions) => emit({ "text/html": s, "text/plain": "[HTML]" }, o);
  export const markdown = (s: string, o?: DisplayOptions) => emit({ "text/markdown": s, "text/plain": s }, o);
  export const svg = (s: string, o?: DisplayOptions) => emit({ "image/svg+xml": s, "text/plain": "[SVG image]" }, o);
  export const png = (b: Uint8Array, o?: DisplayOptions) => emit({ "image/png": Buffer.from(b).toString("base64"), "text/plain": "[PNG image]" }, o);
  export const text = (s: string, o?: DisplayOptions) => emit({ "text/plain": s }, o);
  /** A ready-made MIME bundle (`{"text/html": ..., "text/plain": ...}`). */
  export const mime = (b: MimeBundle, o?: DisplayOptions) => emit(normalise(b, b), o);
}

/** Replace the output shown under `displayId` by `value`. */
export function updateDisplay(displayId: string, value: unknown): void {
  emit(mimeBundle(value), { displayId, update: true });
}

/** Clear the cell's outputs (with `wait`, when the next output arrives: no flicker). */
export function clearOutput(wait = false): void {
  displayHost()?.clearOutput(wait);
}
