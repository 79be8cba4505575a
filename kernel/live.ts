/**
 * Live training display: one output per run that updates in place.
 *
 * `train()` calls `start(run)` (src/live.ts); we send one display_data carrying a display_id and
 * then, at most every `intervalMs`, an update_display_data with a progress bar (ETA included) and
 * charts of loss, accuracy, flip rate and accept rate as they grow. The HTML form draws its charts
 * as inline SVG (no plotly.js per update, renders in every frontend and in saved notebooks); the
 * application/vnd.plotly.v1+json form is there for frontends with a Plotly renderer.
 */
import type { LiveHost, LiveRun, LiveView } from "../src/live";
import type { Message } from "./wire";
import { DisplayOutput, PLOTLY_MIME, escapeHtml } from "../src/display";

type Send = (out: DisplayOutput, displayId: string, update: boolean, parent: Message | null) => void;

/** The series a live view charts, in the order of its panels. */
export const LIVE_SERIES = [
  { key: "loss", title: "loss", color: "#1f77b4" },
  { key: "accuracy", title: "train accuracy", color: "#2ca02c" },
  { key: "flip_rate", title: "flip rate", color: "#d62728" },
  { key: "accept_rate", title: "accept rate", color: "#9467bd" },
] as const;
type SeriesKey = (typeof LIVE_SERIES)[number]["key"];

const MAX_POINTS = 400;

/** One scalar per chart from a run's latest metrics (per-layer columns averaged). */
export function pickScalars(latest: Readonly<Record<string, number>>): Partial<Record<SeriesKey, number>> {
  const mean = (prefix: string): number | undefined => {
    if (typeof latest[prefix] === "number") return latest[prefix];
    const vs = Object.entries(latest).filter(([k, v]) => k.startsWith(prefix + "/") && Number.isFinite(v)).map(([, v]) => v);
    return vs.length ? vs.reduce((a, b) => a + b, 0) / vs.length : undefined;
  };
  const out: Partial<Record<SeriesKey, number>> = {};
  const acc = latest.train_accuracy ?? latest.accuracy ?? latest.top1;
  if (Number.isFinite(latest.loss)) out.loss = latest.loss;
  if (Number.isFinite(acc)) out.accuracy = acc;
  const f = mean("flip_rate");
  if (f !== undefined) out.flip_rate = f;
  const a = mean("accept_rate");
  if (a !== undefined) out.accept_rate = a;
  return out;
}

/** Points of one run, thinned (every other point dropped) when they exceed MAX_POINTS. */
class Series {
  step: number[] = [];
  values: Record<SeriesKey, number[]> = { loss: [], accuracy: [], flip_rate: [], accept_rate: [] };
  private stride = 1;
  private seen = 0;
  private lastStep = -1;

  record(step: number, scalars: Partial<Record<SeriesKey, number>>): void {
    if (step === this.lastStep || Object.keys(scalars).length === 0) return;
    this.lastStep = step;
    if (this.seen++ % this.stride !== 0) return;
    this.step.push(step);
    for (const s of LIVE_SERIES) this.values[s.key].push(scalars[s.key] ?? NaN);
    if (this.step.length > MAX_POINTS) {
      const keep = (a: number[]) => a.filter((_, i) => i % 2 === 0);
      this.step = keep(this.step);
      for (const s of LIVE_SERIES) this.values[s.key] = keep(this.values[s.key]);
      this.stride *= 2;
    }
  }
}

export function formatDuration(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return "--:--";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(2, "0"), ss = String(sec).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function fmt(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "–";
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
}

function sparkline(xs: number[], ys: number[], color: string, w = 220, h = 90): string {
  const pts = xs.map((x, i) => [x, ys[i]] as const).filter(([, y]) => Number.isFinite(y));
  if (pts.length === 0) return `<svg width="${w}" height="${h}" xmlns="http://www.w3.org/2000/svg"><text x="${w / 2}" y="${h / 2}" text-anchor="middle" font-size="11" fill="#999">no data</text></svg>`;
  const x0 = pts[0][0], x1 = pts[pts.length - 1][0];
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
  const px = (x: number) => 4 + ((x - x0) / Math.max(1e-12, x1 - x0)) * (w - 8);
  const py = (y: number) => h - 14 - ((y - y0) / (y1 - y0)) * (h - 22);
  const d = pts.map(([x, y], i) => `${i ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join("");
  return (
    `<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" xmlns="http://www.w3.org/2000/svg">` +
    `<rect x="0.5" y="0.5" width="${w - 1}" height="${h - 1}" fill="#fff" stroke="#ddd"/>` +
    `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.5"/>` +
    `<text x="4" y="${h - 3}" font-size="9" fill="#777">${fmt(y0)} … ${fmt(y1)}</text></svg>`
  );
}

/** The MIME bundle of a run as it is now. */
export function liveBundle(run: LiveRun, series: Series | null): DisplayOutput {
  const p = run.progress;
  // progress.epoch counts from 0 (the epoch in progress); people count from 1.
  const epoch = Math.min(p.epoch + 1, Math.max(1, p.epochs));
  const frac = p.totalSteps > 0 ? Math.min(1, p.step / p.totalSteps) : 0;
  const pct = Math.round(frac * 100);
  const scalars = pickScalars(run.latest ?? {});
  const statusColor = { running: "#1f77b4", done: "#2ca02c", cancelled: "#ff7f0e", failed: "#d62728" }[run.status] ?? "#1f77b4";
  const eta = run.status === "running" ? `ETA ${formatDuration(p.etaSeconds)}` : run.status;
  const metricsLine = LIVE_SERIES.filter((s) => scalars[s.key] !== undefined).map((s) => `${s.title} ${fmt(scalars[s.key])}`).join(" · ");
  const barWidth = 30;
  const filled = Math.round(frac * barWidth);
  const text =
    `run ${run.id} [${"=".repeat(filled)}${filled < barWidth ? ">" : ""}${" ".repeat(Math.max(0, barWidth - filled - 1))}] ${pct}% ` +
    `epoch ${epoch}/${p.epochs} step ${p.step}/${p.totalSteps} ${formatDuration(p.elapsedSeconds)} elapsed, ${eta}` +
    (metricsLine ? `\n${metricsLine}` : "");
  // A chart without a single value (e.g. accept rate under DST, which has no accept step) is left out.
  const charts = series
    ? LIVE_SERIES.filter((s) => series.values[s.key].some(Number.isFinite)).map((s) => `<div style="display:inline-block;margin:4px 8px 0 0"><div style="font-size:11px;color:#444">${s.title}</div>${sparkline(series.step, series.values[s.key], s.color)}</div>`).join("")
    : "";
  const html =
    `<div class="ternlab-live" style="font-family:sans-serif;font-size:12px">` +
    `<div><b>run ${escapeHtml(run.id)}</b> <span style="color:${statusColor}">${escapeHtml(run.status)}</span> · epoch ${epoch}/${p.epochs} · step ${p.step}/${p.totalSteps} · ${formatDuration(p.elapsedSeconds)} elapsed · ${escapeHtml(eta)}</div>` +
    `<div style="width:400px;max-width:100%;height:12px;background:#eee;border-radius:3px;margin:4px 0"><div style="width:${pct}%;height:100%;background:${statusColor};border-radius:3px"></div></div>` +
    (metricsLine ? `<div>${escapeHtml(metricsLine)}</div>` : "") +
    `<div>${charts}</div></div>`;
  const data: Record<string, unknown> = { "text/html": html, "text/plain": text };
  if (series) {
    const present = LIVE_SERIES.map((s, i) => ({ s, i })).filter(({ s }) => series.values[s.key].some(Number.isFinite));
    if (present.length > 0) {
      const n = present.length;
      const layout: Record<string, unknown> = {
        height: 260,
        margin: { l: 40, r: 10, t: 30, b: 30 },
        showlegend: false,
        title: { text: `run ${run.id}: ${run.status} ${pct}%`, font: { size: 12 } },
        grid: { rows: 1, columns: n, pattern: "independent" },
        annotations: present.map(({ s }, k) => ({ text: s.title, showarrow: false, xref: `x${k ? k + 1 : ""} domain`, yref: `y${k ? k + 1 : ""} domain`, x: 0.5, y: 1.08, font: { size: 11 } })),
      };
      data[PLOTLY_MIME] = {
        data: present.map(({ s }, k) => ({ type: "scatter", mode: "lines", name: s.title, x: series.step, y: series.values[s.key].map((v) => (Number.isFinite(v) ? v : null)), xaxis: `x${k ? k + 1 : ""}`, yaxis: `y${k ? k + 1 : ""}`, line: { color: s.color } })),
        layout,
      };
    }
  }
  return { data, metadata: {} };
}

/** The kernel's LiveHost (registered with setLiveHost at start-up). */
export class LiveDisplay implements LiveHost {
  constructor(
    private readonly send: Send,
    private readonly currentParent: () => Message | null,
    private readonly intervalMs: number,
  ) {}

  start(run: LiveRun): LiveView {
    // Every message of this run belongs to the cell that started it, even if it ends later.
    const parent = this.currentParent();
    const displayId = run.id.startsWith("ternlab-run-") ? run.id : `ternlab-run-${run.id}`;
    const series = new Series();
    let last = 0;
    let timer: NodeJS.Timeout | null = null;
    let ended = false;
    const record = () => {
      try {
        series.record(run.progress.step, pickScalars(run.latest ?? {}));
      } catch {
        /* a run without metrics yet */
      }
    };
    const flush = (update: boolean) => {
      timer = null;
      last = Date.now();
      this.send(liveBundle(run, series), displayId, update, parent);
    };
    record();
    flush(false);
    return {
      update: () => {
        if (ended) return;
        record();
        if (timer) return;
        const wait = this.intervalMs - (Date.now() - last);
        if (wait <= 0) flush(true);
        else timer = setTimeout(() => flush(true), wait);
      },
      end: () => {
        if (ended) return;
        ended = true;
        if (timer) clearTimeout(timer);
        record();
        flush(true);
      },
    };
  }
}
