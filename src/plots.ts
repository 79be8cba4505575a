/**
 * Figures as plain Plotly figure objects (`{ data, layout }`), built by pure functions of Arrow
 * tables (DESIGN.md, "Figures"): no DOM and no I/O here. Rendering to HTML, PNG, SVG or PDF lives
 * in report.ts.
 *
 * Columns are found by name (metrics.ts, ALGORITHM.md §4); accuracies are stored as fractions and
 * drawn in percent. Figures stay plain data: display.ts recognises them by shape for notebooks.
 */
import type * as arrow from "apache-arrow";
import { TernlabError } from "./errors";

export interface PlotlyTrace {
  type?: string;
  mode?: string;
  name?: string;
  x?: unknown[];
  y?: unknown[];
  xaxis?: string;
  yaxis?: string;
  [key: string]: unknown;
}

export interface Figure {
  data: PlotlyTrace[];
  layout: Record<string, unknown>;
}

export interface FigureOptions {
  /** Figure title (none by default). */
  title?: string;
  /** Size in CSS pixels; by default the figure fills its container. */
  width?: number;
  height?: number;
}

/** x axis of the step-table plots. */
export type StepX = "step" | "epoch" | "wall_time";

export interface StepPlotOptions extends FigureOptions {
  /** x axis: the step, the fractional epoch or the wall time (default `step`). */
  x?: StepX;
  /**
   * Longest trace drawn: longer ones are averaged over buckets of consecutive points down to this
   * many (default 5000; 0 keeps every point).
   */
  maxPoints?: number;
}

// ---------------------------------------------------------------------------------------------
// Look

/** A colour-blind-friendly palette (Tableau 10); per-layer traces use one colour per layer everywhere. */
export const PALETTE = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
];

const FONT = { family: "Helvetica Neue, Helvetica, Arial, sans-serif", size: 14, color: "#222222" };

function axis(title: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    title: { text: title },
    showline: true,
    linecolor: "#444444",
    linewidth: 1,
    mirror: true,
    ticks: "outside",
    showgrid: true,
    gridcolor: "#e8e8e8",
    zeroline: false,
    automargin: true,
    ...extra,
  };
}

function baseLayout(opts: FigureOptions, xTitle: string, yTitle: string, yExtra: Record<string, unknown> = {}): Record<string, unknown> {
  const layout: Record<string, unknown> = {
    paper_bgcolor: "white",
    plot_bgcolor: "white",
    font: FONT,
    colorway: PALETTE,
    xaxis: axis(xTitle),
    yaxis: axis(yTitle, yExtra),
    showlegend: true,
    legend: { bgcolor: "rgba(255,255,255,0.85)", bordercolor: "#cccccc", borderwidth: 1 },
    hovermode: "closest",
    margin: { l: 70, r: 20, t: opts.title ? 60 : 30, b: 60 },
  };
  applyCommon(layout, opts);
  return layout;
}

function applyCommon(layout: Record<string, unknown>, opts: FigureOptions): void {
  if (opts.title !== undefined) {
    if (typeof opts.title !== "string") throw optionError("title", opts.title, "a string");
    layout.title = { text: opts.title, x: 0.5, xanchor: "center", font: { size: 18 } };
  }
  for (const k of ["width", "height"] as const) {
    const v = opts[k];
    if (v === undefined) continue;
    if (typeof v !== "number" || !(v > 0)) throw optionError(k, v, "a positive number of pixels");
    layout[k] = v;
  }
}

function optionError(name: string, value: unknown, allowed: string): TernlabError {
  return new TernlabError("E_OPTION", `plot option "${name}" = ${JSON.stringify(value) ?? String(value)} is invalid: it must be ${allowed}.`);
}

function figure(data: PlotlyTrace[], layout: Record<string, unknown>): Figure {
  return { data, layout };
}

/** JSON safe to embed in a <script>: no `</script>`, no `<!--`. */
export function scriptJson(v: unknown): string {
  return JSON.stringify(v)
    .replace(/</g, "\\u003c")
    .replace(/>/g, "\\u003e")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

/**
 * A div and the script that draws `fig` into it with the page's `window.Plotly`. When plotly.js
 * has not loaded yet the drawing waits in `window.__ternlabPlotlyQueue`, which the plotly.js tag
 * of report.ts (and display.ts's figure output) runs once plotly.js is there.
 */
export function figureDiv(fig: Figure, divId: string, config: Record<string, unknown> = {}): string {
  const id = divId.replace(/[^A-Za-z0-9_-]/g, "_");
  const height = typeof fig.layout.height === "number" ? `${fig.layout.height}px` : "480px";
  const cfg = { responsive: true, displaylogo: false, ...config };
  return (
    `<div id="${id}" class="ternlab-figure" style="width:100%;min-height:${height}"></div>` +
    `<script type="text/javascript">(function(){` +
    `function draw(){var el=document.getElementById(${scriptJson(id)});if(el)window.Plotly.newPlot(el,${scriptJson(fig.data)},${scriptJson(fig.layout)},${scriptJson(cfg)});}` +
    `if(window.Plotly)draw();else(window.__ternlabPlotlyQueue=window.__ternlabPlotlyQueue||[]).push(draw);})();</script>`
  );
}

// ---------------------------------------------------------------------------------------------
// Columns

function namesOf(t: arrow.Table): string[] {
  return t.schema.fields.map((f) => f.name);
}

function hasColumn(t: arrow.Table, name: string): boolean {
  return t.schema.fields.some((f) => f.name === name);
}

function missingColumn(t: arrow.Table, name: string, what: string): TernlabError {
  const names = namesOf(t);
  return new TernlabError(
    "E_OPTION",
    `column "${name}" is not in the ${what} (columns: ${names.length ? names.join(", ") : "none"}). ` +
      `Pass a ternlab metrics table (MetricsRecorder.steps / .epochs, loadMetrics()) or choose one of those columns.`,
  );
}

/** A column as plain numbers (JSON-friendly: typed arrays would serialise as objects); nulls → NaN. */
function column(t: arrow.Table, name: string, what: string): number[] {
  const v = t.getChild(name);
  if (!v) throw missingColumn(t, name, what);
  const out = new Array<number>(v.length);
  if (v.nullCount === 0) {
    const a = v.toArray() as ArrayLike<number | bigint>;
    for (let i = 0; i < out.length; i++) out[i] = Number(a[i]);
  } else {
    for (let i = 0; i < out.length; i++) {
      const x = v.get(i);
      out[i] = x === null || x === undefined ? NaN : Number(x);
    }
  }
  return out;
}

/** `<metric>/<layer>` columns in table order. */
function layerColumns(t: arrow.Table, metric: string): { layer: string; name: string }[] {
  return namesOf(t)
    .filter((n) => n.startsWith(metric + "/"))
    .map((name) => ({ layer: name.slice(metric.length + 1), name }));
}

function requireLayerColumns(t: arrow.Table, metric: string, what: string): { layer: string; name: string }[] {
  const cols = layerColumns(t, metric);
  if (cols.length === 0) throw missingColumn(t, `${metric}/<layer>`, what);
  return cols;
}

function anyFinite(a: number[]): boolean {
  return a.some((v) => Number.isFinite(v));
}

/** Wall time in seconds shown in s, min or h, whichever reads best for the longest run. */
function wallTimeScale(maxSeconds: number): { factor: number; title: string } {
  if (maxSeconds >= 2 * 3600) return { factor: 1 / 3600, title: "wall time (h)" };
  if (maxSeconds >= 120) return { factor: 1 / 60, title: "wall time (min)" };
  return { factor: 1, title: "wall time (s)" };
}

function finiteMax(a: number[]): number {
  let m = -Infinity;
  for (const v of a) if (Number.isFinite(v) && v > m) m = v;
  return m;
}

/**
 * The x values of a step table. `epoch` is fractional: a row's epoch plus the fraction of an
 * epoch's steps done by it, so the step curves line up with per-epoch points at whole numbers.
 */
function stepX(steps: arrow.Table, x: StepX | undefined): { x: number[]; title: string } {
  const which = x ?? "step";
  if (which === "step") return { x: column(steps, "step", "step table"), title: "step" };
  if (which === "wall_time") {
    const w = column(steps, "wall_time", "step table");
    const s = wallTimeScale(finiteMax(w));
    return { x: w.map((v) => v * s.factor), title: s.title };
  }
  if (which === "epoch") {
    const ep = column(steps, "epoch", "step table");
    // Steps per epoch from the completed epochs (all but the last), so a running epoch does not
    // stretch to fill a whole unit.
    const counts = new Map<number, number>();
    for (const e of ep) counts.set(e, (counts.get(e) ?? 0) + 1);
    const last = ep.length ? ep[ep.length - 1] : NaN;
    let perEpoch = 0;
    for (const [e, c] of counts) if (e !== last) perEpoch = Math.max(perEpoch, c);
    if (perEpoch === 0) perEpoch = counts.get(last) ?? 1;
    const seen = new Map<number, number>();
    const out = ep.map((e) => {
      const k = seen.get(e) ?? 0;
      seen.set(e, k + 1);
      return e - 1 + k / perEpoch; // epochs are numbered from 1: epoch e's steps span [e − 1, e)
    });
    return { x: out, title: "epoch" };
  }
  throw optionError("x", x, `"step", "epoch" or "wall_time"`);
}

/** Bucket means (NaN-aware) of x and each y down to at most maxPoints points. */
function decimate(x: number[], ys: number[][], maxPoints: number | undefined): { x: number[]; ys: number[][] } {
  const cap = maxPoints ?? 5000;
  if (typeof cap !== "number" || cap < 0 || !Number.isFinite(cap)) throw optionError("maxPoints", maxPoints, "a non-negative number (0 keeps every point)");
  if (cap === 0 || x.length <= cap) return { x, ys };
  const buckets = Math.max(1, Math.floor(cap));
  const mean = (a: number[], lo: number, hi: number) => {
    let s = 0;
    let k = 0;
    for (let i = lo; i < hi; i++) {
      if (!Number.isNaN(a[i])) {
        s += a[i];
        k++;
      }
    }
    return k ? s / k : NaN;
  };
  const bx: number[] = [];
  const bys: number[][] = ys.map(() => []);
  for (let b = 0; b < buckets; b++) {
    const lo = Math.floor((b * x.length) / buckets);
    const hi = Math.floor(((b + 1) * x.length) / buckets);
    bx.push(mean(x, lo, hi));
    ys.forEach((y, j) => bys[j].push(mean(y, lo, hi)));
  }
  return { x: bx, ys: bys };
}

/** Debiased exponential moving average (TensorBoard's smoothing); NaNs stay gaps. */
export function emaSmooth(y: number[], smooth: number): number[] {
  if (typeof smooth !== "number" || !(smooth >= 0 && smooth < 1)) throw optionError("smooth", smooth, "a number in [0, 1)");
  if (smooth === 0) return y.slice();
  let acc = 0;
  let weight = 0;
  return y.map((v) => {
    if (!Number.isFinite(v)) return NaN;
    acc = smooth * acc + (1 - smooth) * v;
    weight = smooth * weight + (1 - smooth);
    return acc / weight;
  });
}

function line(name: string, x: number[], y: number[], extra: Record<string, unknown> = {}): PlotlyTrace {
  return { type: "scatter", mode: "lines", name, x, y, ...extra };
}

// ---------------------------------------------------------------------------------------------
// Training curves

export interface LossCurveOptions extends StepPlotOptions {
  /** EMA smoothing weight in [0, 1): 0 draws the raw loss; above 0 the raw loss is drawn faintly under the smoothed one. */
  smooth?: number;
  /** Logarithmic y axis. */
  logY?: boolean;
}

/** Training loss per step. */
export function lossCurve(steps: arrow.Table, opts: LossCurveOptions = {}): Figure {
  const { x, title: xTitle } = stepX(steps, opts.x);
  const loss = column(steps, "loss", "step table");
  const smooth = opts.smooth ?? 0;
  const smoothed = emaSmooth(loss, smooth);
  const d = decimate(x, [loss, smoothed], opts.maxPoints);
  const data: PlotlyTrace[] =
    smooth > 0
      ? [
          line("loss", d.x, d.ys[0], { line: { color: PALETTE[0], width: 1 }, opacity: 0.3, showlegend: false, hoverinfo: "skip" }),
          line(`loss (EMA ${smooth})`, d.x, d.ys[1], { line: { color: PALETTE[0], width: 2 } }),
        ]
      : [line("loss", d.x, d.ys[0], { line: { color: PALETTE[0], width: 1.5 } })];
  return figure(data, baseLayout(opts, xTitle, "training loss", opts.logY ? { type: "log" } : {}));
}

export interface AccuracyCurveOptions extends FigureOptions {
  /** x axis: the epoch (default) or the wall time. */
  x?: "epoch" | "wall_time";
  /** Also draw the test top-5 accuracy. */
  top5?: boolean;
}

/** Train, test and (when recorded) validation accuracy per epoch, in percent. */
export function accuracyCurve(epochs: arrow.Table, opts: AccuracyCurveOptions = {}): Figure {
  const what = "epoch table";
  const xName = opts.x ?? "epoch";
  if (xName !== "epoch" && xName !== "wall_time") throw optionError("x", opts.x, `"epoch" or "wall_time"`);
  let x = column(epochs, xName, what);
  let xTitle = "epoch";
  if (xName === "wall_time") {
    const s = wallTimeScale(finiteMax(x));
    x = x.map((v) => v * s.factor);
    xTitle = s.title;
  }
  const series: [string, string, Record<string, unknown>][] = [
    ["train_accuracy", "train", { color: PALETTE[0] }],
    ["test_accuracy", "test", { color: PALETTE[1] }],
    ["val_accuracy", "validation", { color: PALETTE[4] }],
  ];
  if (opts.top5) series.push(["test_top5", "test top-5", { color: PALETTE[1], dash: "dot" }]);
  const present = series.filter(([c]) => hasColumn(epochs, c));
  if (present.length === 0 || (opts.top5 && !hasColumn(epochs, "test_top5"))) {
    throw missingColumn(epochs, opts.top5 && present.length ? "test_top5" : "test_accuracy", what);
  }
  const data: PlotlyTrace[] = [];
  for (const [c, name, lineStyle] of present) {
    const y = column(epochs, c, what);
    // No validation split: val_accuracy is all NaN, and an empty legend entry would only confuse.
    if (c === "val_accuracy" && !anyFinite(y) && y.length > 0) continue;
    data.push(line(name, x, y.map((v) => v * 100), { mode: x.length <= 50 ? "lines+markers" : "lines", line: { width: 2, ...lineStyle } }));
  }
  return figure(data, baseLayout(opts, xTitle, "accuracy (%)"));
}

export interface LayerPlotOptions extends StepPlotOptions {
  /** Only these layers (default all, in table order). */
  layers?: string[];
  /** Logarithmic y axis. */
  logY?: boolean;
  /** EMA smoothing weight in [0, 1) applied to every trace. */
  smooth?: number;
}

function pickLayers(cols: { layer: string; name: string }[], layers: string[] | undefined, t: arrow.Table, metric: string): { layer: string; name: string; color: string }[] {
  const all = cols.map((c, i) => ({ ...c, color: PALETTE[i % PALETTE.length] }));
  if (!layers) return all;
  return layers.map((l) => {
    const c = all.find((a) => a.layer === l);
    if (!c) throw missingColumn(t, `${metric}/${l}`, "step table");
    return c;
  });
}

function perLayerFigure(steps: arrow.Table, metric: string, yTitle: string, opts: LayerPlotOptions): Figure {
  const { x, title: xTitle } = stepX(steps, opts.x);
  const cols = pickLayers(requireLayerColumns(steps, metric, "step table"), opts.layers, steps, metric);
  const ys = cols.map((c) => emaSmooth(column(steps, c.name, "step table"), opts.smooth ?? 0));
  const d = decimate(x, ys, opts.maxPoints);
  const data = cols.map((c, i) => line(c.layer, d.x, d.ys[i], { line: { color: c.color, width: 1.5 }, legendgroup: c.layer }));
  return figure(data, baseLayout(opts, xTitle, yTitle, opts.logY ? { type: "log", exponentformat: "power" } : {}));
}

/** Flip rate (fraction of a layer's weights that changed state in the step), one trace per layer. */
export function flipRates(steps: arrow.Table, opts: LayerPlotOptions = {}): Figure {
  return perLayerFigure(steps, "flip_rate", "flip rate (fraction of weights per step)", opts);
}

/** Accept rate (accepted / proposed moves) of the update rule, one trace per layer. */
export function acceptRates(steps: arrow.Table, opts: LayerPlotOptions = {}): Figure {
  return perLayerFigure(steps, "accept_rate", "accept rate (accepted / proposed)", opts);
}

const SPARSITY_METRICS: [string, string, string][] = [
  ["s_w", "s_w (zero weights)", "solid"],
  ["s_a", "s_a (zero activations)", "dash"],
  ["active_fraction", "active MACs", "dot"],
];

function sparsityTraces(steps: arrow.Table, opts: LayerPlotOptions, axes: Record<string, string> = {}, showLegend = true): PlotlyTrace[] {
  const { x } = stepX(steps, opts.x);
  const present = SPARSITY_METRICS.filter(([m]) => layerColumns(steps, m).length > 0);
  if (present.length === 0) throw missingColumn(steps, "s_w/<layer>", "step table");
  // One colour per layer (the order of the first metric's columns), one dash style per metric.
  const layerOrder = layerColumns(steps, present[0][0]).map((c) => c.layer);
  const colorOf = (layer: string) => {
    let i = layerOrder.indexOf(layer);
    if (i < 0) i = layerOrder.push(layer) - 1;
    return PALETTE[i % PALETTE.length];
  };
  const series: { name: string; layer: string; metricLabel: string; dash: string; y: number[] }[] = [];
  for (const [m, label, dash] of present) {
    for (const c of pickLayers(layerColumns(steps, m), opts.layers, steps, m)) {
      series.push({ name: c.name, layer: c.layer, metricLabel: label, dash, y: emaSmooth(column(steps, c.name, "step table"), opts.smooth ?? 0) });
    }
  }
  const d = decimate(x, series.map((s) => s.y), opts.maxPoints);
  return series.map((s, i) =>
    line(`${s.layer}: ${s.metricLabel}`, d.x, d.ys[i], {
      line: { color: colorOf(s.layer), width: 1.5, dash: s.dash },
      legendgroup: s.layer,
      showlegend: showLegend,
      ...axes,
    }),
  );
}

/** Per layer: s_w (fraction of zero weights, solid), s_a (zero input activations, dashed) and the active MAC fraction (dotted). */
export function sparsity(steps: arrow.Table, opts: LayerPlotOptions = {}): Figure {
  const { title: xTitle } = stepX(steps, opts.x);
  return figure(sparsityTraces(steps, opts), baseLayout(opts, xTitle, "fraction", { range: [0, 1] }));
}

export interface DashboardOptions extends FigureOptions {
  /** EMA smoothing of the loss panel, in [0, 1) (default 0). */
  smooth?: number;
  maxPoints?: number;
}

/**
 * A 2×2 overview: loss per step, accuracy per epoch, flip rate per step (log y), and the accept
 * rate per step when the update rule reports one, else the sparsity counters. Used by the report
 * and the live notebook display, so it draws empty panels rather than failing on empty tables.
 */
export function trainingDashboard(steps: arrow.Table, epochs: arrow.Table, opts: DashboardOptions = {}): Figure {
  const cells = [
    { x: "x", y: "y", xd: [0, 0.44], yd: [0.58, 1] },
    { x: "x2", y: "y2", xd: [0.56, 1], yd: [0.58, 1] },
    { x: "x3", y: "y3", xd: [0, 0.44], yd: [0, 0.42] },
    { x: "x4", y: "y4", xd: [0.56, 1], yd: [0, 0.42] },
  ];
  const on = (i: number) => ({ xaxis: cells[i].x, yaxis: cells[i].y });
  const data: PlotlyTrace[] = [];

  const loss = lossCurve(steps, { smooth: opts.smooth, maxPoints: opts.maxPoints });
  // Series in the top legend, layers in a second one beside the per-layer panels.
  for (const t of loss.data) data.push({ ...t, ...on(0), legendgroup: "loss", line: { ...(t.line as object), color: "#444444" } });

  const acc = accuracyCurve(epochs);
  for (const t of acc.data) data.push({ ...t, ...on(1) });

  const hasFlips = layerColumns(steps, "flip_rate").length > 0;
  if (hasFlips) {
    const fr = flipRates(steps, { maxPoints: opts.maxPoints });
    for (const t of fr.data) data.push({ ...t, ...on(2), legend: "legend2" });
  }

  const acceptCols = layerColumns(steps, "accept_rate");
  const hasAccept = acceptCols.some((c) => anyFinite(column(steps, c.name, "step table")));
  let panel4 = "accept rate";
  let y4Title = "accepted / proposed";
  if (hasAccept) {
    const ar = acceptRates(steps, { maxPoints: opts.maxPoints });
    for (const t of ar.data) data.push({ ...t, ...on(3), showlegend: !hasFlips, legend: "legend2" });
  } else if (SPARSITY_METRICS.some(([m]) => layerColumns(steps, m).length > 0)) {
    panel4 = "sparsity: s_w solid, s_a dashed, active MACs dotted";
    y4Title = "fraction";
    data.push(...sparsityTraces(steps, { maxPoints: opts.maxPoints }, { ...on(3), legend: "legend2" }, !hasFlips));
  }

  const panelTitles = ["training loss", "accuracy", "flip rate", panel4];
  const layout: Record<string, unknown> = {
    paper_bgcolor: "white",
    plot_bgcolor: "white",
    font: FONT,
    colorway: PALETTE,
    showlegend: true,
    legend: { bgcolor: "rgba(255,255,255,0.85)", bordercolor: "#cccccc", borderwidth: 1, x: 1.02, xanchor: "left", y: 1, yanchor: "top" },
    legend2: { bgcolor: "rgba(255,255,255,0.85)", bordercolor: "#cccccc", borderwidth: 1, x: 1.02, xanchor: "left", y: 0.42, yanchor: "top", title: { text: "layer" } },
    hovermode: "closest",
    height: 720,
    margin: { l: 70, r: 20, t: opts.title ? 90 : 50, b: 60 },
    annotations: cells.map((c, i) => ({
      text: `<b>${panelTitles[i]}</b>`,
      xref: "paper",
      yref: "paper",
      x: (c.xd[0] + c.xd[1]) / 2,
      y: c.yd[1],
      xanchor: "center",
      yanchor: "bottom",
      showarrow: false,
      font: { size: 15 },
    })),
  };
  const xTitles = ["step", "epoch", "step", "step"];
  const yTitles = ["loss", "accuracy (%)", "fraction of weights per step", y4Title];
  cells.forEach((c, i) => {
    const suffix = i === 0 ? "" : String(i + 1);
    layout[`xaxis${suffix}`] = axis(xTitles[i], { domain: c.xd, anchor: c.y });
    layout[`yaxis${suffix}`] = axis(yTitles[i], { domain: c.yd, anchor: c.x, ...(i === 2 ? { type: "log", exponentformat: "power" } : {}) });
  });
  applyCommon(layout, opts);
  return figure(data, layout);
}

// ---------------------------------------------------------------------------------------------
// Thesis figures

const METRIC_LABELS: Record<string, string> = {
  test_accuracy: "test accuracy (%)",
  train_accuracy: "train accuracy (%)",
  val_accuracy: "validation accuracy (%)",
  test_top5: "test top-5 accuracy (%)",
  loss: "training loss",
  test_loss: "test loss",
  learning_rate: "learning rate",
  images_per_s: "throughput (images/s)",
  wall_time: "wall time (s)",
};

function isAccuracy(metric: string): boolean {
  return metric.endsWith("_accuracy") || metric === "test_top5";
}

export interface CompareRunsOptions extends FigureOptions {
  logY?: boolean;
}

/** One trace per run of an epoch-table metric (accuracies in percent) against the epoch or the wall time. */
export function compareRuns(
  runs: { name: string; epochs: arrow.Table }[],
  metric = "test_accuracy",
  x: "epoch" | "wall_time" = "epoch",
  opts: CompareRunsOptions = {},
): Figure {
  if (!Array.isArray(runs) || runs.length === 0) throw optionError("runs", runs, "a non-empty array of { name, epochs }");
  if (x !== "epoch" && x !== "wall_time") throw optionError("x", x, `"epoch" or "wall_time"`);
  const xs = runs.map((r) => column(r.epochs, x, `epoch table of run "${r.name}"`));
  let xTitle = "epoch";
  let factor = 1;
  if (x === "wall_time") {
    const s = wallTimeScale(Math.max(...xs.map(finiteMax)));
    factor = s.factor;
    xTitle = s.title;
  }
  const scale = isAccuracy(metric) ? 100 : 1;
  const data = runs.map((r, i) => {
    const y = column(r.epochs, metric, `epoch table of run "${r.name}"`);
    return line(
      r.name,
      xs[i].map((v) => v * factor),
      y.map((v) => v * scale),
      { mode: xs[i].length <= 50 ? "lines+markers" : "lines", line: { color: PALETTE[i % PALETTE.length], width: 2 } },
    );
  });
  const yTitle = METRIC_LABELS[metric] ?? (isAccuracy(metric) ? `${metric.replace(/_/g, " ")} (%)` : metric.replace(/_/g, " "));
  return figure(data, baseLayout(opts, xTitle, yTitle, opts.logY ? { type: "log" } : {}));
}

/** The derivative windows of the ternary activation (ALGORITHM.md §1.2). */
export type WindowShape = "rectangular" | "triangular" | "gaussian" | "logistic";
export const WINDOW_SHAPES: readonly WindowShape[] = ["rectangular", "triangular", "gaussian", "logistic"];

/** ∂φ_r/∂x as the backward pass sees it: a window of half-width a around each jump at ±r, integrating to 1 over each. */
export function windowDerivative(shape: WindowShape, x: number, r: number, a: number): number {
  const u = Math.abs(x) - r;
  switch (shape) {
    case "rectangular":
      return Math.abs(u) <= a ? 1 / (2 * a) : 0;
    case "triangular":
      return Math.abs(u) < a ? (a - Math.abs(u)) / (a * a) : 0;
    case "gaussian":
      return Math.exp(-(u * u) / (2 * a * a)) / (Math.sqrt(2 * Math.PI) * a);
    case "logistic": {
      // σ'(z) = e^{-|z|} / (1 + e^{-|z|})², the form that cannot overflow.
      const e = Math.exp(-Math.abs(u / a));
      return e / ((1 + e) * (1 + e)) / a;
    }
    default:
      throw optionError("shape", shape, WINDOW_SHAPES.map((s) => `"${s}"`).join(", "));
  }
}

/** The ternary activation φ_r (ties |x| = r go to ±1, as in the released code). */
export function ternaryActivation(x: number, r: number): number {
  return x >= r ? 1 : x <= -r ? -1 : 0;
}

function linspace(lo: number, hi: number, n: number): number[] {
  if (n === 1) return [lo];
  return Array.from({ length: n }, (_, i) => lo + ((hi - lo) * i) / (n - 1));
}

function positive(name: string, v: unknown, allowZero = false): number {
  if (typeof v !== "number" || !Number.isFinite(v) || (allowZero ? v < 0 : v <= 0)) {
    throw optionError(name, v, allowZero ? "a finite number ≥ 0" : "a finite number > 0");
  }
  return v;
}

function pointCount(v: unknown, dflt: number): number {
  const n = v ?? dflt;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 2) throw optionError("points", v, "an integer ≥ 2");
  return n;
}

export interface WindowFunctionsOptions extends FigureOptions {
  /** Threshold of the activation (default 1, the released code's). */
  r?: number;
  /** Half-width of the window (default 0.5, the released code's). */
  a?: number;
  shapes?: WindowShape[];
  /** x range (default ±(r + 3a), at least ±2). */
  range?: [number, number];
  points?: number;
  /** Also draw φ_r itself (default true). */
  activation?: boolean;
}

/** The four derivative windows of ALGORITHM.md §1.2 for given r and a (and φ_r for reference). */
export function windowFunctions(opts: WindowFunctionsOptions = {}): Figure {
  const r = positive("r", opts.r ?? 1, true);
  const a = positive("a", opts.a ?? 0.5);
  const shapes = opts.shapes ?? [...WINDOW_SHAPES];
  for (const s of shapes) if (!WINDOW_SHAPES.includes(s)) throw optionError("shapes", s, WINDOW_SHAPES.map((w) => `"${w}"`).join(", "));
  const half = Math.max(r + 3 * a, 2);
  const [lo, hi] = opts.range ?? [-half, half];
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo < hi)) throw optionError("range", opts.range, "[lo, hi] with lo < hi");
  const xs = linspace(lo, hi, pointCount(opts.points, 1201));
  const data: PlotlyTrace[] = [];
  if (opts.activation ?? true) {
    data.push(line(`φ_r(x), r = ${r}`, xs, xs.map((x) => ternaryActivation(x, r)), { line: { color: "#888888", width: 1.5, dash: "dash", shape: "hv" } }));
  }
  shapes.forEach((s) => {
    data.push(line(s, xs, xs.map((x) => windowDerivative(s, x, r, a)), { line: { color: PALETTE[WINDOW_SHAPES.indexOf(s)], width: 2 } }));
  });
  return figure(data, baseLayout(opts, "x (batch-norm output)", `∂φ/∂x (window half-width a = ${a})`));
}

/** The transition probability functions of DST (ALGORITHM.md §1.3). */
export type TransitionKind = "tanh" | "linear" | "logistic";
export const TRANSITION_KINDS: readonly TransitionKind[] = ["tanh", "linear", "logistic"];

/**
 * τ as a function of x = |ν|/Δ ∈ [0, 1]: `tanh(m·x)`, `x`, or `1/(1 + exp(−(x − ½)/T))`;
 * `param` is m for tanh and T for logistic.
 */
export function transitionProbability(kind: TransitionKind, x: number, param = kind === "tanh" ? 3 : 0.1): number {
  switch (kind) {
    case "tanh":
      return Math.tanh(param * x);
    case "linear":
      return x;
    case "logistic":
      return 1 / (1 + Math.exp(-(x - 0.5) / param));
    default:
      throw optionError("kind", kind, TRANSITION_KINDS.map((k) => `"${k}"`).join(", "));
  }
}

export interface TransitionProbabilitiesOptions extends FigureOptions {
  /** tanh slope(s) m (default 3, the released code's). */
  m?: number | number[];
  /** logistic temperature(s) T (default [0.05, 0.2]). */
  T?: number | number[];
  kinds?: TransitionKind[];
  points?: number;
}

/** τ(|ν|/Δ) for tanh (per m), linear, and logistic (per T) transitions. */
export function transitionProbabilities(opts: TransitionProbabilitiesOptions = {}): Figure {
  const ms = ([] as number[]).concat(opts.m ?? 3).map((m) => positive("m", m));
  const Ts = ([] as number[]).concat(opts.T ?? [0.05, 0.2]).map((T) => positive("T", T));
  const kinds = opts.kinds ?? [...TRANSITION_KINDS];
  for (const k of kinds) if (!TRANSITION_KINDS.includes(k)) throw optionError("kinds", k, TRANSITION_KINDS.map((t) => `"${t}"`).join(", "));
  const xs = linspace(0, 1, pointCount(opts.points, 201));
  const data: PlotlyTrace[] = [];
  let c = 0;
  const dashes = ["solid", "dash", "dot", "dashdot", "longdash"];
  for (const k of kinds) {
    const color = PALETTE[c++ % PALETTE.length];
    const params = k === "tanh" ? ms : k === "logistic" ? Ts : [NaN];
    params.forEach((p, i) => {
      const name = k === "tanh" ? `tanh, m = ${p}` : k === "logistic" ? `logistic, T = ${p}` : "linear (unbiased)";
      data.push(line(name, xs, xs.map((x) => transitionProbability(k, x, p)), { line: { color, width: 2, dash: dashes[i % dashes.length] } }));
    });
  }
  return figure(data, baseLayout(opts, "|ν| / Δ (remainder in grid steps)", "τ (transition probability)", { range: [0, 1.02] }));
}
