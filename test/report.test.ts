import { strict as assert } from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { pathToFileURL } from "url";
import type { Browser, Page } from "playwright-core";
import { isTernlabError } from "../src/errors";
import { MetricsRecorder } from "../src/metrics";
import { lossCurve, windowFunctions } from "../src/plots";
import { figureToHtml, plotlyJs, plotlyScriptTag, writeReport } from "../src/report";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];

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

  it("plotly.js once, and many figure divs that use it, before or after it", async () => {
    const dir = tmpDir();
    const file = path.join(dir, "page.html");
    const f = lossCurve(run().steps);
    const g = windowFunctions();
    fs.writeFileSync(
      file,
      // require.js-style globals, as in classic Jupyter: plotly.js must still land on window.Plotly.
      `<!DOCTYPE html><html><head><meta charset="utf-8"><script>window.define=function(){};window.define.amd={};window.module={exports:{}};</script></head><body>` +
        figureToHtml(f, { includePlotly: "none" }) +
        plotlyScriptTag() +
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
});
