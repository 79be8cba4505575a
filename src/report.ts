/**
 * The offline HTML report of a run (plotly.js inlined, so it opens without a network) and HTML
 * snippets of figures. PNG/SVG/PDF files of figures: figures.ts.
 */
import * as fs from "fs";
import type * as arrow from "apache-arrow";
import { TernlabError, isTernlabError } from "./errors";
import { escapeHtml, tableToHtml, writeFileAtomic } from "./metrics";
import { Figure, accuracyCurve, figureDiv, flipRates, lossCurve, trainingDashboard } from "./plots";

let plotlySource: string | null = null;

/** The plotly.js bundle (plotly.js-dist-min), read once. */
export function plotlyJs(): string {
  if (plotlySource !== null) return plotlySource;
  let file: string;
  try {
    file = require.resolve("plotly.js-dist-min");
    // A literal "</script" inside the bundle would end the inline <script> early.
    plotlySource = fs.readFileSync(file, "utf8").replace(/<\/(script)/gi, "<\\/$1");
  } catch (e) {
    throw new TernlabError(
      "E_IO",
      `cannot read plotly.js from the package "plotly.js-dist-min" (${(e as Error).message}). Reinstall ternlab's dependencies (npm ci).`,
      { cause: e },
    );
  }
  return plotlySource;
}

/**
 * A <script> element holding plotly.js: put it once in a page (or notebook), before or after the
 * figure divs of `includePlotly: "none"` (those drawn before it loads wait in a queue it runs).
 * The bundle runs with `define`, `module` and `exports` hidden, so a page with an AMD or CommonJS
 * loader (classic Jupyter's require.js) still gets `window.Plotly`.
 */
export function plotlyScriptTag(): string {
  return (
    `<script type="text/javascript">(function(define,module,exports){${plotlyJs()}\n}).call(window);` +
    `(window.__ternlabPlotlyQueue||[]).splice(0).forEach(function(f){f();});</script>`
  );
}

export interface FigureHtmlOptions {
  /** `inline`: the snippet carries plotly.js; `none`: it uses the page's `window.Plotly`. */
  includePlotly: "inline" | "none";
  /** Id of the figure's div (default: a fresh random one). */
  divId?: string;
  /** Plotly config (default: responsive, no Plotly logo). */
  config?: Record<string, unknown>;
}

let figureCounter = 0;

/** An HTML snippet that draws `fig`: a div and its script (and plotly.js itself with `includePlotly: "inline"`). */
export function figureToHtml(fig: Figure, opts: FigureHtmlOptions = { includePlotly: "inline" }): string {
  if (opts.includePlotly !== "inline" && opts.includePlotly !== "none") {
    throw new TernlabError("E_OPTION", `figureToHtml: option "includePlotly" = ${JSON.stringify(opts.includePlotly)} is invalid: use "inline" or "none".`);
  }
  if (!fig || !Array.isArray(fig.data) || typeof fig.layout !== "object") {
    throw new TernlabError("E_OPTION", `figureToHtml: the figure must be a Plotly figure { data: [...], layout: {...} } as built by ternlab's plots.`);
  }
  const id = opts.divId ?? `ternlab-fig-${process.pid.toString(36)}-${(++figureCounter).toString(36)}-${Date.now().toString(36)}`;
  return (opts.includePlotly === "inline" ? plotlyScriptTag() : "") + figureDiv(fig, id, opts.config);
}

export interface ReportInput {
  title: string;
  steps: arrow.Table;
  epochs: arrow.Table;
  config: Record<string, unknown>;
  /** Trusted HTML placed under the title. */
  summary?: string;
}

/** JSON of a config that may hold BigInts, functions or cycles. */
function configJson(config: unknown): string {
  const seen = new WeakSet<object>();
  return JSON.stringify(
    config,
    (_k, v) => {
      if (typeof v === "bigint") return v.toString();
      if (typeof v === "function") return `[function ${v.name || "anonymous"}]`;
      if (typeof v === "number" && !Number.isFinite(v)) return String(v);
      if (v && typeof v === "object") {
        if (seen.has(v)) return "[circular]";
        seen.add(v);
      }
      return v;
    },
    2,
  ) ?? "null";
}

function fmt(v: number, percent = false): string {
  if (!Number.isFinite(v)) return String(v);
  if (percent) return `${(v * 100).toFixed(2)} %`;
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(6)));
}

function columnValues(t: arrow.Table, name: string): number[] | null {
  const v = t.getChild(name);
  if (!v) return null;
  return Array.from({ length: v.length }, (_, i) => {
    const x = v.get(i);
    return x === null || x === undefined ? NaN : Number(x);
  });
}

function argmax(a: number[]): number {
  let best = -1;
  for (let i = 0; i < a.length; i++) if (Number.isFinite(a[i]) && (best < 0 || a[i] > a[best])) best = i;
  return best;
}

/**
 * The headline figures: the final test accuracy, the best over epochs (selected on the test set,
 * as the GXNOR code reports it: optimistic) and the honest one (the test accuracy of the epoch
 * with the best validation accuracy), ALGORITHM.md §1.4.
 */
function headline(epochs: arrow.Table): string {
  const test = columnValues(epochs, "test_accuracy");
  const val = columnValues(epochs, "val_accuracy");
  const ep = columnValues(epochs, "epoch");
  if (!test || !ep || test.length === 0) return "";
  const rows: [string, string][] = [];
  rows.push(["final test accuracy", `${fmt(test[test.length - 1], true)} (epoch ${ep[ep.length - 1]})`]);
  const bt = argmax(test);
  if (bt >= 0) rows.push(["best test accuracy over epochs (selected on the test set: optimistic)", `${fmt(test[bt], true)} (epoch ${ep[bt]})`]);
  const bv = val ? argmax(val) : -1;
  if (bv >= 0) rows.push(["test accuracy at the best validation epoch", `${fmt(test[bv], true)} (epoch ${ep[bv]}, validation ${fmt(val![bv], true)})`]);
  return `<table class="kv">${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join("")}</table>`;
}

function finalEpochTable(epochs: arrow.Table): string {
  const n = epochs.numRows;
  if (n === 0) return `<p class="missing">No epoch finished.</p>`;
  const rows = epochs.schema.fields.map((f) => {
    const x = epochs.getChild(f.name)!.get(n - 1);
    const v = typeof x === "number" ? fmt(x, /accuracy|top5/.test(f.name)) : String(x);
    return `<tr><th>${escapeHtml(f.name)}</th><td>${escapeHtml(v)}</td></tr>`;
  });
  return `<table class="kv">${rows.join("")}</table>`;
}

const CSS = `
body { font-family: "Helvetica Neue", Helvetica, Arial, sans-serif; color: #222; margin: 2em auto; max-width: 1200px; padding: 0 1em; }
h1 { font-size: 1.8em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }
td { font-variant-numeric: tabular-nums; }
table.kv th { font-weight: 600; }
pre { background: #f7f7f7; padding: 1em; overflow: auto; font-size: 0.85em; }
.missing { color: #999; font-style: italic; }
.scroll { overflow-x: auto; max-width: 100%; }
.ternlab-figure { margin: 0.5em 0; }
`;

/**
 * Writes a self-contained HTML report of a run to `path` (atomically): the dashboard, loss,
 * accuracy and flip-rate charts, the headline and final-epoch metrics, the step table's head and
 * tail, and the config. plotly.js is inlined: the file opens offline.
 */
export async function writeReport(path: string, input: ReportInput): Promise<void> {
  const { title, steps, epochs, config, summary } = input;
  let n = 0;
  const chart = (heading: string, build: () => Figure): string => {
    let body: string;
    try {
      body = figureDiv(build(), `ternlab-report-fig-${++n}`);
    } catch (e) {
      // A run without, say, flip rates still gets the rest of its report.
      if (!isTernlabError(e, "E_OPTION")) throw e;
      body = `<p class="missing">${escapeHtml(e.message)}</p>`;
    }
    return `<h2>${escapeHtml(heading)}</h2>${body}`;
  };
  const html = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${CSS}</style>
${plotlyScriptTag()}
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<p class="meta">ternlab report, written ${escapeHtml(new Date().toISOString())}: ${steps.numRows} steps, ${epochs.numRows} epochs.</p>
${summary ?? ""}
${headline(epochs)}
${chart("Overview", () => trainingDashboard(steps, epochs))}
${chart("Training loss", () => lossCurve(steps, { smooth: steps.numRows > 200 ? 0.9 : 0 }))}
${chart("Accuracy", () => accuracyCurve(epochs))}
${chart("Flip rate", () => flipRates(steps, { logY: true }))}
<h2>Final epoch</h2>
${finalEpochTable(epochs)}
<h2>Steps</h2>
<div class="scroll">${tableToHtml(steps, { maxRows: 10 })}</div>
<h2>Config</h2>
<pre>${escapeHtml(configJson(config))}</pre>
</body>
</html>
`;
  await writeFileAtomic(path, html, "report");
}

