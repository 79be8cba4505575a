/**
 * Static figure export (SVG, PNG, PDF) through headless Chromium.
 *
 * Figures are plain Plotly objects; rendering them needs plotly.js and a browser. We drive
 * Debian's `chromium` (or `TERNLAB_CHROMIUM`) with playwright-core, load plotly.js from the
 * `plotly.js-dist-min` package (offline), and reuse one page for every export: launching costs a
 * second, an export after that tens of milliseconds. The browser closes when idle for a while
 * (so scripts can exit), on `close()`, and when the process exits.
 */
import * as fs from "fs";
import * as path from "path";
import type { Browser, Page } from "playwright-core";
import { TernlabError } from "./errors";
import type { Figure } from "./display";

export type { Figure };
export type FigureFormat = "svg" | "png" | "pdf";

export interface SaveOptions {
  /** CSS pixels (default: the figure's layout.width, else 700). */
  width?: number;
  /** CSS pixels (default: the figure's layout.height, else 500). */
  height?: number;
  /** Pixel density for PNG (default 1): a 600×400 figure at scale 2 is a 1200×800 PNG. */
  scale?: number;
}

const DEFAULT_WIDTH = 700;
const DEFAULT_HEIGHT = 500;
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

export function chromiumPath(): string {
  return process.env.TERNLAB_CHROMIUM || "/usr/bin/chromium";
}

/** Whether a browser executable exists where figures look for it. */
export function browserAvailable(): boolean {
  try {
    fs.accessSync(chromiumPath(), fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

let browser: Browser | null = null;
let pagePromise: Promise<Page> | null = null;
let queue: Promise<unknown> = Promise.resolve();
let idleTimer: NodeJS.Timeout | null = null;
let idleMs = Number(process.env.TERNLAB_FIGURES_IDLE_MS ?? 2000);
let exitHookInstalled = false;

/** How long the browser stays open after the last export (the kernel keeps it longer). */
export function setIdleTimeout(ms: number): void {
  idleMs = ms;
}

async function launch(): Promise<Page> {
  const exe = chromiumPath();
  if (!browserAvailable()) {
    throw new TernlabError(
      "E_IO",
      `figures: no Chromium at ${exe}; install Debian's chromium (apt-get install chromium) or set TERNLAB_CHROMIUM to a Chromium or Chrome executable`,
    );
  }
  const { chromium } = await import("playwright-core");
  try {
    browser = await chromium.launch({
      executablePath: exe,
      headless: true,
      args: CHROMIUM_ARGS,
      // An interrupt (SIGINT) stops a cell, not the browser; we close it ourselves.
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
  } catch (e) {
    browser = null;
    throw new TernlabError("E_IO", `figures: Chromium at ${exe} did not start (${(e as Error).message.split("\n")[0]}); check that it runs: ${exe} --headless --no-sandbox --dump-dom about:blank`, { cause: e });
  }
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      // Playwright kills its browsers on exit too; this is for the record and for older versions.
      void browser?.close().catch(() => undefined);
    });
  }
  const page = await browser.newPage();
  await page.setContent(`<!doctype html><html><head><meta charset="utf-8"><style id="page-style"></style></head><body style="margin:0"></body></html>`);
  await page.addScriptTag({ path: require.resolve("plotly.js-dist-min") });
  return page;
}

function getPage(): Promise<Page> {
  if (!pagePromise) {
    pagePromise = launch().catch((e) => {
      pagePromise = null;
      throw e;
    });
  }
  return pagePromise;
}

/** Runs exports one after another on the one page. */
function serial<T>(fn: () => Promise<T>): Promise<T> {
  if (idleTimer) clearTimeout(idleTimer);
  const p = queue.then(fn, fn);
  queue = p.then(
    () => undefined,
    () => undefined,
  ).then(() => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = setTimeout(() => void close(), idleMs);
    idleTimer.unref();
  });
  return p;
}

function dims(fig: Figure, opts: SaveOptions): { width: number; height: number; scale: number } {
  const pick = (name: "width" | "height", given: number | undefined, dflt: number) => {
    const v = given ?? (typeof fig.layout?.[name] === "number" ? (fig.layout[name] as number) : dflt);
    if (!Number.isFinite(v) || v <= 0 || v > 20000) {
      throw new TernlabError("E_OPTION", `figures: ${name} ${JSON.stringify(v)} is not a size in CSS pixels; give a number between 1 and 20000`);
    }
    return Math.round(v);
  };
  const scale = opts.scale ?? 1;
  if (!Number.isFinite(scale) || scale <= 0 || scale > 20) {
    throw new TernlabError("E_OPTION", `figures: scale ${JSON.stringify(scale)} is out of range; give a number in (0, 20] (2 doubles the PNG's pixels)`);
  }
  return { width: pick("width", opts.width, DEFAULT_WIDTH), height: pick("height", opts.height, DEFAULT_HEIGHT), scale };
}

function checkFigure(fig: unknown): asserts fig is Figure {
  const f = fig as Figure | null;
  if (!f || typeof f !== "object" || !Array.isArray(f.data)) {
    throw new TernlabError("E_OPTION", `figures: expected a Plotly figure {data: [...], layout: {...}}, got ${f === null ? "null" : typeof f}; build one with plots.*`);
  }
}

/** Renders a figure to SVG text, PNG bytes or PDF bytes. */
export async function render(fig: Figure, format: FigureFormat, opts: SaveOptions = {}): Promise<Buffer> {
  checkFigure(fig);
  if (!["svg", "png", "pdf"].includes(format)) {
    throw new TernlabError("E_OPTION", `figures: unknown format "${format}"; use "svg", "png" or "pdf"`);
  }
  const { width, height, scale } = dims(fig, opts);
  const plain = JSON.parse(JSON.stringify({ data: fig.data, layout: { ...(fig.layout ?? {}), width, height } }));
  return serial(async () => {
    const page = await getPage();
    const imageFormat = format === "png" ? "png" : "svg";
    let url: string;
    try {
      url = await page.evaluate(
        ([f, fmt, w, h, s]) => (window as any).Plotly.toImage(f, { format: fmt, width: w, height: h, scale: s }),
        [plain, imageFormat, width, height, format === "png" ? scale : 1] as const,
      );
    } catch (e) {
      throw new TernlabError("E_OPTION", `figures: plotly.js could not render the figure (${(e as Error).message.split("\n")[0]}); check its data and layout`, { cause: e });
    }
    if (format === "png") return Buffer.from(url.slice(url.indexOf(",") + 1), "base64");
    const comma = url.indexOf(",");
    const svg = url.slice(0, comma).endsWith(";base64") ? Buffer.from(url.slice(comma + 1), "base64").toString("utf8") : decodeURIComponent(url.slice(comma + 1));
    if (format === "svg") return Buffer.from(stableIds(svg), "utf8");
    // PDF: the vector SVG on a page exactly the figure's size.
    await page.evaluate(
      ([s, w, h]) => {
        document.getElementById("page-style")!.textContent = `@page{size:${w}px ${h}px;margin:0}html,body{margin:0;padding:0;width:${w}px;height:${h}px;overflow:hidden}`;
        let host = document.getElementById("pdf-host");
        if (!host) {
          host = document.createElement("div");
          host.id = "pdf-host";
          document.body.appendChild(host);
        }
        host.innerHTML = s;
      },
      [svg, width, height] as const,
    );
    try {
      return await page.pdf({ width: `${width}px`, height: `${height}px`, printBackground: true, pageRanges: "1", margin: { top: "0", right: "0", bottom: "0", left: "0" } });
    } finally {
      await page.evaluate(() => document.getElementById("pdf-host")?.remove());
    }
  });
}

/**
 * plotly.js names the SVG's clip paths and gradients after a random per-plot uid; replacing it with
 * a fixed one makes the same figure give the same file, so regenerated figures diff cleanly in git.
 */
export function stableIds(svg: string): string {
  const m = /id="defs-([0-9a-z]+)"/.exec(svg);
  let out = m ? svg.split(m[1]).join("ternlab") : svg;
  // the root tag's attribute order depends on what the reused page drew before: sort them
  out = out.replace(/^<svg([^>]*)>/, (_all, attrs: string) => {
    const list = [...attrs.matchAll(/([\w:-]+)="([^"]*)"/g)].map((a) => `${a[1]}="${a[2]}"`).sort();
    return `<svg ${list.join(" ")}>`;
  });
  // each trace's random uid, in order of appearance
  const traces = new Map<string, string>();
  out = out.replace(/\btrace([0-9a-f]{6})\b/g, (_all, uid: string) => {
    if (!traces.has(uid)) traces.set(uid, `t${traces.size}`);
    return `trace${traces.get(uid)}`;
  });
  return out;
}

/** Writes a figure to `file`; the extension (.svg, .png or .pdf) picks the format. */
export async function save(fig: Figure, file: string, opts: SaveOptions = {}): Promise<void> {
  const ext = path.extname(file).toLowerCase().slice(1);
  if (ext !== "svg" && ext !== "png" && ext !== "pdf") {
    throw new TernlabError("E_OPTION", `figures.save: "${file}" has ${ext ? `the extension ".${ext}"` : "no extension"}; use .svg, .png or .pdf`);
  }
  const bytes = await render(fig, ext, opts);
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      /* nothing to clean */
    }
    throw new TernlabError("E_IO", `figures.save: cannot write "${file}" (${(e as Error).message}); check that its folder is writable`, { cause: e });
  }
}

/** Shuts the browser (a later export starts it again). */
export async function close(): Promise<void> {
  if (idleTimer) {
    clearTimeout(idleTimer);
    idleTimer = null;
  }
  const p = pagePromise;
  pagePromise = null;
  browser = null;
  const page = p ? await p.catch(() => null) : null;
  await page?.context().browser()?.close().catch(() => undefined);
}
