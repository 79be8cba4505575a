import { strict as assert } from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { pathToFileURL } from "url";
import type { Browser, Page } from "playwright-core";
import { isTernlabError } from "../src/errors";
import { MetricsRecorder } from "../src/metrics";
import { lossCurve, windowFunctions } from "../src/plots";
import { CHROMIUM_ARGS, figureToHtml, plotlyJs, plotlyScriptTag, saveFigure, writeReport } from "../src/report";

const CHROMIUM = "/usr/bin/chromium";

function run(): MetricsRecorder {
  const rec = new MetricsRecorder({ layers: ["conv1", "fc"], scheduled: ["temperature"], backend: "cpu" });
  let step = 0;
  for (let e = 1; e <= 3; e++) {
    for (let i = 0; i < 20; i++) {
      step++;
      rec.addStep({
        step,
        epoch: e,
        loss: 2 / Math.sqrt(step),
        train_accuracy: 0.5 + step / 200,
        learning_rate: 0.1,
        wall_time: step * 0.5,
        temperature: 1 / step,
        "flip_rate/conv1": 0.1 / step,
        "flip_rate/fc": 0.05 / step,
        "accept_rate/conv1": 0.5,
        "accept_rate/fc": 0.4,
        "s_w/conv1": 0.5,
        "s_w/fc": 0.45,
      });
    }
    rec.addEpoch({ ...rec.epochSummary(e), test_accuracy: 0.8 + e / 50, val_accuracy: 0.79 + e / 60, test_loss: 1 / e });
  }
  return rec;
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "ternlab-report-"));
}

describe("report: HTML", () => {
  it("writes a self-contained report: plotly.js inlined, figure JSON, final epoch, config", async () => {
    const dir = tmpDir();
    const file = path.join(dir, "report.html");
    const rec = run();
    await writeReport(file, { title: "MNIST <GXNOR>", steps: rec.steps, epochs: rec.epochs, config: { model: "mnist", lr: 0.1, big: 10n }, summary: "<p id='summary'>hello</p>" });
    const html = fs.readFileSync(file, "utf8");
    assert.ok(html.includes(plotlyJs()), "plotly.js is inlined in full");
    assert.ok(html.includes("plotly.js v3"), "the plotly.js banner is there");
    assert.ok(!/<script[^>]+src=/.test(html), "no external scripts");
    assert.ok(html.includes("<title>MNIST &lt;GXNOR&gt;</title>"));
    assert.ok(html.includes(`"name":"conv1"`), "per-layer traces are in the figure JSON");
    assert.ok(html.includes("<p id='summary'>hello</p>"));
    assert.ok(html.includes("test accuracy at the best validation epoch"));
    assert.ok(html.includes("&quot;model&quot;: &quot;mnist&quot;"), "the config, escaped");
    assert.ok(html.includes("&quot;big&quot;: &quot;10&quot;"));
    assert.deepEqual(fs.readdirSync(dir), ["report.html"], "no temporary file left");
  });

  it("figureToHtml: inline carries plotly.js, none only the div and its script", () => {
    const f = lossCurve(run().steps);
    const inline = figureToHtml(f, { includePlotly: "inline", divId: "a" });
    const none = figureToHtml(f, { includePlotly: "none", divId: "b" });
    assert.ok(inline.startsWith(plotlyScriptTag()));
    assert.ok(!none.includes(plotlyJs().slice(0, 200)));
    assert.ok(none.includes(`id="b"`) && none.includes("Plotly.newPlot"));
    assert.throws(() => figureToHtml(f, { includePlotly: "cdn" as "none" }), (e: unknown) => isTernlabError(e, "E_OPTION") && /includePlotly/.test(e.message));
  });
});

describe("report: in headless Chromium, offline", function () {
  let browser: Browser | null = null;

  before(async function () {
    if (!fs.existsSync(CHROMIUM)) this.skip();
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });

  after(async () => {
    await browser?.close();
  });

  /** Opens a file with every non-file request refused; returns the page, its errors and the refused URLs. */
  async function open(file: string): Promise<{ page: Page; errors: string[]; blocked: string[] }> {
    const page = await browser!.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    const blocked: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    await page.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith("file:")) return route.continue();
      blocked.push(url);
      return route.abort();
    });
    await page.goto(pathToFileURL(file).href, { waitUntil: "load" });
    return { page, errors, blocked };
  }

  async function renderedPlots(page: Page): Promise<number> {
    await page.waitForFunction(
      (n) => document.querySelectorAll(".js-plotly-plot svg.main-svg").length >= n,
      1,
      { timeout: 60000 },
    );
    return page.evaluate(() => Array.from(document.querySelectorAll(".js-plotly-plot")).filter((el) => el.querySelector("svg.main-svg") && el.querySelector(".scatterlayer .trace")).length);
  }

  it("the report renders every chart without a network", async () => {
    const dir = tmpDir();
    const file = path.join(dir, "report.html");
    const rec = run();
    await writeReport(file, { title: "run", steps: rec.steps, epochs: rec.epochs, config: { a: 1 } });
    const { page, errors, blocked } = await open(file);
    await page.waitForFunction(() => document.querySelectorAll(".js-plotly-plot .scatterlayer .trace").length > 0, undefined, { timeout: 60000 });
    const plots = await renderedPlots(page);
    assert.equal(plots, 4, "dashboard, loss, accuracy, flip rate");
    // The dashboard has its four subplots.
    const subplots = await page.evaluate(() => document.querySelector(".js-plotly-plot")!.querySelectorAll(".cartesianlayer .subplot").length);
    assert.equal(subplots, 4);
    assert.deepEqual(errors, []);
    assert.deepEqual(blocked, [], "the report asked for nothing from the network");
    await page.close();
  });

  it("plotly.js once, then many figure divs that use it", async () => {
    const dir = tmpDir();
    const file = path.join(dir, "page.html");
    const f = lossCurve(run().steps);
    const g = windowFunctions();
    fs.writeFileSync(
      file,
      `<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>${plotlyScriptTag()}` +
        figureToHtml(f, { includePlotly: "none" }) +
        figureToHtml(g, { includePlotly: "none" }) +
        figureToHtml(f, { includePlotly: "none" }) +
        `</body></html>`,
    );
    const { page, errors, blocked } = await open(file);
    await page.waitForFunction(() => document.querySelectorAll(".js-plotly-plot .scatterlayer .trace").length > 0, undefined, { timeout: 60000 });
    assert.equal(await renderedPlots(page), 3);
    assert.deepEqual(errors, []);
    assert.deepEqual(blocked, []);
    await page.close();
  });

  it("saveFigure writes PNG, SVG and PDF", async function () {
    const dir = tmpDir();
    const f = windowFunctions({ title: "windows" });
    const magic: Record<string, (b: Buffer) => boolean> = {
      "w.png": (b) => b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
      "w.svg": (b) => /^<svg[\s>]/.test(b.toString("utf8", 0, 100)),
      "w.pdf": (b) => b.toString("latin1", 0, 5) === "%PDF-",
    };
    for (const [name, ok] of Object.entries(magic)) {
      const p = path.join(dir, name);
      await saveFigure(f, p, { width: 600, height: 400, executablePath: CHROMIUM });
      const b = fs.readFileSync(p);
      assert.ok(b.length > 1000 && ok(b), `${name}: ${b.length} bytes, starts ${b.subarray(0, 16).toString("hex")}`);
    }
    const svg = fs.readFileSync(path.join(dir, "w.svg"), "utf8");
    assert.ok(svg.includes("windows"), "the SVG holds the title text");
    await assert.rejects(saveFigure(f, path.join(dir, "w.bmp")), (e: unknown) => isTernlabError(e, "E_OPTION") && /"bmp"/.test(e.message));
  });
});
