/**
 * What a person sees in a notebook frontend (issue 4: "Classic Notebook, nbconvert HTML, JupyterLab
 * and VS Code must each show something good"). This file checks the Classic Notebook, Debian 12's
 * `jupyter-notebook` 6.4, for real:
 *
 *  1. the kernelspec goes into a temporary prefix (JUPYTER_PATH/JUPYTER_DATA_DIR/JUPYTER_CONFIG_DIR/
 *     JUPYTER_RUNTIME_DIR all point into a temp folder: the user's own Jupyter files are not touched);
 *  2. a small notebook (model summary, a short real MNIST training, its Arrow metrics, a figure) is
 *     executed by `ternlab run`, so the saved outputs come from the real kernel;
 *  3. the output notebook is trusted (as it is for a person who ran it in the browser) and opened in
 *     a real Classic Notebook server with headless Chromium;
 *  4. the rendered page is checked (summary table, HTML table, Plotly plots from the run and from
 *     the figure, no page errors), a screenshot is saved, and then every cell is run again live in the
 *     browser against the server's own ternlab kernel and checked the same way.
 *
 * Skipped, with the reason, when Classic Notebook 6 (apt-get install jupyter-notebook) or
 * /usr/bin/chromium is missing (see .ci/kernel-deps.sh).
 */
import { strict as assert } from "assert";
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import type { Browser, Page } from "playwright-core";

const ROOT = path.resolve(__dirname, "..", "..");
const CLI = path.join(ROOT, "dist", "src", "cli", "main.js");
// Debian's Python: the Classic Notebook and nbformat are Debian packages (a pyenv python3 may come first on PATH).
const PYTHON = process.env.TERNLAB_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
/** Screenshots stay after the test (one fixed folder, overwritten by each run) so a person can look. */
const SHOTS = path.join(os.tmpdir(), "ternlab-notebook-screenshots");

/** The Classic Notebook's page global (notebook/static/notebook/js/main.js). */
declare const Jupyter: any;

const CELLS = [
  `const model = models.mlp({ hidden: [16], backend: "cpu" });\nmodel`,
  `const run = await train(model, { train: await datasets.loadMnist("train", { limit: 300 }), test: await datasets.loadMnist("test", { limit: 100 }) }, { epochs: 1, batchSize: 50 });\nrun`,
  `run.metrics`,
  `plots.trainingDashboard(run.metrics, run.epochMetrics)`,
];
const STEPS = 300 / 50;

function notebookJson(): string {
  return JSON.stringify({
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: "ternlab", display_name: "ternlab (TypeScript)", language: "typescript" } },
    cells: CELLS.map((source, i) => ({ id: `cell-${i}`, cell_type: "code", metadata: {}, source, outputs: [], execution_count: null })),
  }, null, 1);
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, out });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function request(method: string, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, timeout: 5000 }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the page shows, cell by cell (evaluated in the browser). */
interface CellView {
  prompt: unknown;
  outputTypes: string[];
  summaryTables: number;
  htmlTables: number;
  tableHeads: string[];
  tableRows: number;
  plots: number;
  plotBoxes: Array<{ w: number; h: number; traces: number }>;
  live: number;
  liveText: string;
  errors: number;
  text: string;
}
function cellViews(page: Page): Promise<CellView[]> {
  return page.evaluate(() =>
    Jupyter.notebook.get_cells().map((c: any) => {
      const el: HTMLElement = c.element[0];
      const table = el.querySelector(".output_area table:not(.ternlab-summary)");
      return {
        prompt: c.input_prompt_number,
        outputTypes: c.output_area.outputs.map((o: any) => o.output_type),
        summaryTables: el.querySelectorAll(".output_area table.ternlab-summary").length,
        htmlTables: el.querySelectorAll(".output_area table").length,
        tableHeads: table ? Array.from(table.querySelectorAll("thead th")).map((th) => (th.textContent ?? "").trim()) : [],
        tableRows: table ? table.querySelectorAll("tbody tr").length : 0,
        plots: el.querySelectorAll(".output_area .js-plotly-plot").length,
        plotBoxes: Array.from(el.querySelectorAll(".output_area .js-plotly-plot")).map((p) => {
          const r = p.getBoundingClientRect();
          return { w: Math.round(r.width), h: Math.round(r.height), traces: p.querySelectorAll(".main-svg .trace").length };
        }),
        live: el.querySelectorAll(".output_area .ternlab-live").length,
        liveText: (el.querySelector(".output_area .ternlab-live") as HTMLElement | null)?.innerText ?? "",
        errors: el.querySelectorAll(".output_area .output_error").length,
        text: ((el.querySelector(".output_wrapper") as HTMLElement | null)?.innerText ?? "").slice(0, 2000),
      };
    }),
  );
}

/** Waits until the figure outputs have been drawn by plotly.js (or gives up and lets the asserts speak). */
async function waitForPlots(page: Page, timeoutMs: number): Promise<void> {
  await page
    .waitForFunction(
      () => {
        const cells = Jupyter.notebook.get_cells();
        return [1, 3].every((i) => cells[i] && cells[i].element[0].querySelector(".output_area .js-plotly-plot .main-svg .trace"));
      },
      null,
      { timeout: timeoutMs, polling: 200 },
    )
    .catch(() => undefined);
}

async function screenshot(page: Page, name: string): Promise<string> {
  // Classic scrolls inside #site, not the page: make the viewport as tall as the notebook.
  const h = await page.evaluate(() => (document.getElementById("header")?.offsetHeight ?? 0) + (document.getElementById("notebook")?.scrollHeight ?? 0) + 40);
  await page.setViewportSize({ width: 1280, height: Math.max(900, Math.min(8000, h)) });
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`      screenshot: ${file}`);
  return file;
}

/** The checks shared by the saved and the live outputs. */
function assertRendered(cells: CellView[], where: string): void {
  assert.equal(cells.length, CELLS.length, where);
  const [summary, runCell, metrics, figure] = cells;
  const dump = (c: CellView) => JSON.stringify(c, null, 1);

  // 1. The model summary: an HTML table with the layers.
  assert.equal(summary.summaryTables, 1, `${where}: model summary table missing:\n${dump(summary)}`);
  for (const layer of ["dense1", "dense2", "bn1"]) assert.match(summary.text, new RegExp(`\\b${layer}\\b`), `${where}: layer ${layer} not shown`);

  // 2. The run: one live output updated in place (display_id), then the run's own result with a drawn Plotly chart.
  assert.deepEqual(runCell.outputTypes, ["display_data", "execute_result"], `${where}: run cell outputs:\n${dump(runCell)}`);
  assert.equal(runCell.live, 1, `${where}: the live training display is missing or shown more than once`);
  assert.match(runCell.liveText, /done/, `${where}: live display did not end as done: ${runCell.liveText}`);
  assert.match(runCell.liveText, new RegExp(`step ${STEPS}/${STEPS}`), `${where}: live display did not reach the last step: ${runCell.liveText}`);
  assert.match(runCell.text, /done · epoch 1\/1/, `${where}: run progress line missing:\n${runCell.text}`);
  assert.ok(runCell.plots >= 1, `${where}: no Plotly chart drawn in the run output:\n${dump(runCell)}`);

  // 3. The Arrow table: an HTML table with the metrics' columns and one row per step.
  assert.equal(metrics.htmlTables, 1, `${where}: Arrow table not rendered as an HTML table:\n${dump(metrics)}`);
  for (const col of ["step", "epoch", "loss", "train_accuracy"]) assert.ok(metrics.tableHeads.includes(col), `${where}: column ${col} missing: ${metrics.tableHeads}`);
  assert.equal(metrics.tableRows, STEPS, `${where}: expected ${STEPS} rows:\n${dump(metrics)}`);

  // 4. The figure: plotly.js drew it (text/html output, plotly.js shipped once in the notebook).
  assert.equal(figure.plots, 1, `${where}: figure not drawn by plotly.js:\n${dump(figure)}`);
  for (const c of [runCell, figure]) {
    for (const b of c.plotBoxes) {
      assert.ok(b.w >= 300 && b.h >= 200, `${where}: a plot is drawn too small to see: ${JSON.stringify(b)}`);
      assert.ok(b.traces >= 1, `${where}: a plot has no traces drawn: ${JSON.stringify(b)}`);
    }
  }
  for (const c of cells) assert.equal(c.errors, 0, `${where}: a cell shows an error:\n${dump(c)}`);
}

describe("notebook frontends: Classic Notebook (jupyter-notebook 6)", function () {
  this.timeout(180_000);
  let dir = "";
  let env: NodeJS.ProcessEnv = {};
  let server: ChildProcess | null = null;
  let serverLog = "";
  let base = "";
  let browser: Browser | null = null;
  let page: Page | null = null;
  const pageErrors: string[] = [];
  const consoleErrors: string[] = [];

  before(async function () {
    const probe = spawnSync(PYTHON, ["-c", "import notebook, nbformat.sign; print(notebook.__version__)"], { encoding: "utf8" });
    if (probe.status !== 0) {
      console.log(`      skipped: the Classic Notebook is not importable by ${PYTHON} (apt-get install jupyter-notebook; see .ci/kernel-deps.sh)`);
      this.skip();
    }
    if (!/^6\./.test(probe.stdout.trim())) {
      console.log(`      skipped: ${PYTHON} has notebook ${probe.stdout.trim()}, not the Classic Notebook 6 this test drives`);
      this.skip();
    }
    if (!fs.existsSync(CHROMIUM)) {
      console.log(`      skipped: ${CHROMIUM} is missing (apt-get install chromium; see .ci/kernel-deps.sh)`);
      this.skip();
    }

    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ternlab-classic-"));
    for (const d of ["prefix", "data", "config", "runtime", "nb"]) fs.mkdirSync(path.join(dir, d));
    env = {
      ...process.env,
      JUPYTER_PATH: path.join(dir, "prefix", "share", "jupyter"),
      JUPYTER_DATA_DIR: path.join(dir, "data"),
      JUPYTER_CONFIG_DIR: path.join(dir, "config"),
      JUPYTER_RUNTIME_DIR: path.join(dir, "runtime"),
      PYDEVD_DISABLE_FILE_VALIDATION: "1",
    };

    // 1. The kernelspec, in a temporary prefix that only this test's Jupyter sees.
    const inst = spawnSync(process.execPath, [CLI, "kernel", "install", "--prefix", path.join(dir, "prefix")], { env, encoding: "utf8" });
    assert.equal(inst.status, 0, inst.stderr);

    // 2. The notebook, executed by the real kernel.
    const nbDir = path.join(dir, "nb");
    fs.writeFileSync(path.join(nbDir, "in.ipynb"), notebookJson());
    const r = await run(process.execPath, [CLI, "run", path.join(nbDir, "in.ipynb"), path.join(nbDir, "out.ipynb"), "--kernel", "ternlab", "--timeout", "120"], env, 150_000);
    assert.equal(r.status, 0, `ternlab run failed:\n${r.out}`);

    // 3. Trusted, as for a person who ran it themselves (Classic runs no scripts of untrusted outputs).
    const trust = spawnSync(PYTHON, ["-m", "nbformat.sign", path.join(nbDir, "out.ipynb")], { env, encoding: "utf8" });
    assert.equal(trust.status, 0, `jupyter trust failed: ${trust.stdout}${trust.stderr}`);

    // 4. The Classic Notebook server, on a free loopback port, without auth.
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    const args = ["-m", "notebook", "--no-browser", `--port=${port}`, "--port-retries=0", "--ip=127.0.0.1", "--NotebookApp.token=", "--NotebookApp.password=", `--notebook-dir=${nbDir}`];
    if (process.getuid?.() === 0) args.push("--allow-root");
    server = spawn(PYTHON, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    server.stdout!.on("data", (d) => (serverLog += d));
    server.stderr!.on("data", (d) => (serverLog += d));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (server.exitCode !== null) assert.fail(`jupyter notebook exited (${server.exitCode}):\n${serverLog}`);
      const ok = await request("GET", `${base}/api/status`).then((x) => x.status === 200, () => false);
      if (ok) break;
      if (Date.now() > deadline) assert.fail(`jupyter notebook did not answer on ${base} within 30 s:\n${serverLog}`);
      await sleep(250);
    }
    const specs = JSON.parse((await request("GET", `${base}/api/kernelspecs`)).body);
    assert.ok(specs.kernelspecs.ternlab, `the server does not see the ternlab kernelspec: ${Object.keys(specs.kernelspecs)}`);
    assert.ok(String(specs.kernelspecs.ternlab.spec.argv.join(" ")).includes(ROOT), "the server's ternlab kernelspec is not this checkout's");

    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
    page.on("pageerror", (e) => pageErrors.push(String((e as Error)?.stack ?? e)));
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(`${m.text()} ${m.location()?.url ?? ""}`);
    });
  });

  after(async function () {
    await browser?.close().catch(() => undefined);
    if (server && server.exitCode === null) {
      // Shut the kernels down through the API first, then the server (it also cleans up kernels on SIGTERM).
      try {
        const kernels = JSON.parse((await request("GET", `${base}/api/kernels`)).body) as Array<{ id: string }>;
        await Promise.all(kernels.map((k) => request("DELETE", `${base}/api/kernels/${k.id}`).catch(() => undefined)));
      } catch {
        /* the server is already gone */
      }
      const exited = new Promise<void>((r) => server!.once("exit", () => r()));
      server.kill("SIGTERM");
      await Promise.race([exited, sleep(5000)]);
      if (server.exitCode === null && server.signalCode === null) {
        server.kill("SIGKILL");
        await Promise.race([exited, sleep(2000)]);
      }
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("saved outputs of `ternlab run`: MIME bundles as issue 4 asks (plotly.js once, PNG and Plotly JSON beside the HTML)", () => {
    const nb = JSON.parse(fs.readFileSync(path.join(dir, "nb", "out.ipynb"), "utf8"));
    const outputs = nb.cells.flatMap((c: any) => c.outputs);
    const html = (o: any) => { const h = o.data?.["text/html"]; return Array.isArray(h) ? h.join("") : typeof h === "string" ? h : ""; };
    const carriers = outputs.filter((o: any) => html(o).length > 1_000_000);
    assert.equal(carriers.length, 1, `plotly.js should travel in exactly one output of the notebook, found ${carriers.length}`);
    const fig = nb.cells[3].outputs.find((o: any) => o.output_type === "execute_result");
    assert.ok(fig, "the figure cell has no execute_result");
    for (const mime of ["application/vnd.plotly.v1+json", "text/html", "image/png", "text/plain"]) assert.ok(fig.data[mime], `figure bundle lacks ${mime}`);
  });

  it("renders the saved outputs: summary table, run with progress and chart, Arrow table, Plotly figure, no page errors", async () => {
    const p = page!;
    await p.goto(`${base}/notebooks/out.ipynb`, { waitUntil: "load" });
    await p.waitForFunction(() => (window as any).Jupyter?.notebook?._fully_loaded === true, null, { timeout: 30_000 });
    assert.equal(await p.evaluate(() => Jupyter.notebook.trusted), true, "the notebook is not trusted: its figure scripts would not run");
    await waitForPlots(p, 20_000);
    const cells = await cellViews(p);
    await screenshot(p, "classic-saved-outputs.png");
    assertRendered(cells, "saved outputs");
    if (consoleErrors.length) console.log(`      console errors (not from ternlab's outputs; Debian's notebook 6 asks for a widgets nbextension it does not ship):\n        ${consoleErrors.join("\n        ")}`);
    // Classic itself throws no page errors here; any that comes is from the outputs' scripts (plotly.js, drawing).
    assert.deepEqual(pageErrors, [], `JavaScript errors on the page:\n${pageErrors.join("\n")}`);
    assert.deepEqual(consoleErrors.filter((e) => /plotly|ternlab/i.test(e)), [], "console errors from ternlab's outputs");
  });

  it("runs every cell live in the browser against the server's ternlab kernel and renders the new outputs", async () => {
    const p = page!;
    await p.waitForFunction(() => Jupyter.notebook.kernel?.is_connected?.() === true && Jupyter.notebook.kernel_busy === false, null, { timeout: 60_000, polling: 200 });
    assert.equal(await p.evaluate(() => Jupyter.notebook.kernel.name), "ternlab");
    const savedFigureId = await p.evaluate(() => Jupyter.notebook.get_cell(3).element[0].querySelector(".ternlab-figure")?.id ?? null);
    await p.evaluate(() => {
      Jupyter.notebook.clear_all_output();
      Jupyter.notebook.execute_all_cells();
    });
    assert.equal(await p.evaluate(() => document.querySelectorAll(".output_area .js-plotly-plot").length), 0, "outputs were not cleared before the live run");
    await p.waitForFunction(
      () => !Jupyter.notebook.kernel_busy && Jupyter.notebook.get_cells().every((c: any) => typeof c.input_prompt_number === "number"),
      null,
      { timeout: 90_000, polling: 200 },
    );
    await waitForPlots(p, 20_000);
    const cells = await cellViews(p);
    await screenshot(p, "classic-live-run.png");
    assertRendered(cells, "live run");
    const liveFigureId = await p.evaluate(() => Jupyter.notebook.get_cell(3).element[0].querySelector(".ternlab-figure")?.id ?? null);
    assert.ok(liveFigureId && liveFigureId !== savedFigureId, "the figure shown is not the one the live kernel just sent");
    assert.deepEqual(pageErrors, [], `JavaScript errors on the page:\n${pageErrors.join("\n")}`);
  });

  // Two rendering problems this file found, now fixed: a PNG inside each figure div shows where
  // scripts cannot run.

  // src/display.ts ships plotly.js with the first figure output of the kernel session, not of the
  // notebook document: once that output is replaced (its cell re-run) the saved notebook carries
  // plotly.js nowhere. Each figure div then shows its PNG (the kernel puts one inside).
  it("figures still show (their PNG) after re-running the cells that carried plotly.js, saving and reopening", async () => {
    const p = page!;
    await p.evaluate(() => Jupyter.notebook.execute_cells([1, 3]));
    await p.waitForFunction(
      () => !Jupyter.notebook.kernel_busy && Jupyter.notebook.get_cells().every((c: any) => typeof c.input_prompt_number === "number"),
      null,
      { timeout: 90_000, polling: 200 },
    );
    await p.evaluate(() => Jupyter.notebook.save_notebook().then(() => true));
    const reopened = await browser!.newPage({ viewport: { width: 1280, height: 1600 } });
    try {
      await reopened.goto(`${base}/notebooks/out.ipynb`, { waitUntil: "load" });
      await reopened.waitForFunction(() => (window as any).Jupyter?.notebook?._fully_loaded === true, null, { timeout: 30_000 });
      // plotly.js travels once per kernel session, and the output that carried it was re-run
      // away: the figures cannot be drawn interactively here, so their PNG fallback must show.
      const seen = await reopened.evaluate(() =>
        [1, 3].map((i) => {
          const el: HTMLElement = Jupyter.notebook.get_cell(i).element[0];
          const visuals = Array.from(el.querySelectorAll(".output_area img, .output_area .js-plotly-plot")) as HTMLElement[];
          return visuals.filter((v) => v.getBoundingClientRect().width >= 200 && v.getBoundingClientRect().height >= 100).length;
        }),
      );
      assert.ok(seen[0] >= 1 && seen[1] >= 1, `figures not shown after reopening: run ${seen[0]}, figure ${seen[1]}`);
    } finally {
      await reopened.close();
    }
  });

  // A notebook written by `ternlab run` (or nbconvert) is untrusted in Classic until its user trusts
  // it: Classic then sanitizes text/html (no scripts, no inline styles, no <svg>) and never falls
  // back to the image/png of the same bundle, because it prefers text/html. The PNG inside the
  // figure div survives the sanitizer. (The live view's inline-SVG sparklines and progress bar
  // do not; the run's final output shows its chart as that PNG.)
  it("an untrusted notebook (as `ternlab run` writes it) still shows the figure and the run's chart", async () => {
    const nb = JSON.parse(fs.readFileSync(path.join(dir, "nb", "out.ipynb"), "utf8"));
    nb.metadata.ternlab_test = "an untrusted copy"; // another digest than the trusted notebook's
    delete nb.metadata.signature;
    fs.writeFileSync(path.join(dir, "nb", "untrusted.ipynb"), JSON.stringify(nb));
    const u = await browser!.newPage({ viewport: { width: 1280, height: 1600 } });
    try {
      await u.goto(`${base}/notebooks/untrusted.ipynb`, { waitUntil: "load" });
      await u.waitForFunction(() => (window as any).Jupyter?.notebook?._fully_loaded === true, null, { timeout: 30_000 });
      assert.equal(await u.evaluate(() => Jupyter.notebook.trusted), false);
      const seen = await u.evaluate(() =>
        [1, 3].map((i) => {
          const el: HTMLElement = Jupyter.notebook.get_cell(i).element[0];
          const visuals = Array.from(el.querySelectorAll(".output_area img, .output_area svg, .output_area .js-plotly-plot")) as HTMLElement[];
          return visuals.filter((v) => v.getBoundingClientRect().width >= 200 && v.getBoundingClientRect().height >= 100).length;
        }),
      );
      assert.ok(seen[0] >= 1, "untrusted: the run's chart is not shown");
      assert.ok(seen[1] >= 1, "untrusted: the figure is not shown (its image/png is not used)");
    } finally {
      await u.close();
    }
  });
});
