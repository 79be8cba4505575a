/**
 * figures.save: static SVG, PNG and PDF through headless Chromium, at the size asked for.
 */
import { strict as assert } from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as figures from "../src/figures";
import { isTernlabError } from "../src/errors";

const fig = {
  data: [
    { type: "scatter", mode: "lines", name: "loss", x: [0, 1, 2, 3], y: [2.3, 1.1, 0.7, 0.5] },
    { type: "bar", name: "acc", x: [0, 1, 2, 3], y: [0.1, 0.6, 0.8, 0.9], yaxis: "y2" },
  ],
  layout: { title: { text: "thesis figure" }, yaxis2: { overlaying: "y", side: "right" } },
};

function pngSize(file: string): { width: number; height: number } {
  const b = fs.readFileSync(file);
  assert.deepEqual([...b.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "PNG signature");
  assert.equal(b.subarray(12, 16).toString("latin1"), "IHDR");
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}

function svgSize(file: string): { width: number; height: number } {
  const s = fs.readFileSync(file, "utf8");
  const root = /<svg\b[^>]*>/.exec(s)?.[0];
  assert.ok(root, "an <svg> root element");
  assert.match(s.trimEnd(), /<\/svg>$/);
  return { width: Number(/\bwidth="([\d.]+)"/.exec(root)![1]), height: Number(/\bheight="([\d.]+)"/.exec(root)![1]) };
}

function pdfPages(file: string): { boxes: number[][]; header: string } {
  const b = fs.readFileSync(file).toString("latin1");
  const boxes = [...b.matchAll(/\/MediaBox\s*\[\s*([\d.\s-]+)\]/g)].map((m) => m[1].trim().split(/\s+/).map(Number));
  assert.match(b.slice(0, 8), /^%PDF-1\.\d/);
  assert.match(b.trimEnd(), /%%EOF$/);
  return { boxes, header: b.slice(0, 8) };
}

describe("figures: export through headless Chromium", function () {
  this.timeout(60_000);
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ternlab-figures-"));
  });
  after(async () => {
    await figures.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("writes an SVG with the requested width and height", async () => {
    const f = path.join(dir, "fig.svg");
    await figures.save(fig, f, { width: 640, height: 480 });
    assert.deepEqual(svgSize(f), { width: 640, height: 480 });
    assert.match(fs.readFileSync(f, "utf8"), /thesis figure/);
  });

  it("the same figure gives a byte-identical SVG (no random ids), so regenerated figures diff cleanly", async () => {
    const a = path.join(dir, "a.svg"), b = path.join(dir, "b.svg");
    await figures.save(fig, a, { width: 500, height: 300 });
    await figures.save(fig, b, { width: 500, height: 300 });
    assert.ok(fs.readFileSync(a).equals(fs.readFileSync(b)));
    assert.match(fs.readFileSync(a, "utf8"), /id="defs-ternlab"/);
  });

  it("writes a PNG of width×scale by height×scale pixels", async () => {
    const f = path.join(dir, "fig.png");
    await figures.save(fig, f, { width: 500, height: 300, scale: 2 });
    assert.deepEqual(pngSize(f), { width: 1000, height: 600 });
    const g = path.join(dir, "default.png");
    await figures.save({ data: fig.data, layout: { width: 321, height: 123 } }, g);
    assert.deepEqual(pngSize(g), { width: 321, height: 123 }, "the layout's size when none is given");
  });

  it("writes a one-page vector PDF whose MediaBox is the figure's size (CSS px → pt)", async () => {
    const f = path.join(dir, "fig.pdf");
    await figures.save(fig, f, { width: 400, height: 300 });
    const { boxes } = pdfPages(f);
    assert.equal(boxes.length, 1, "one page");
    const [x0, y0, x1, y1] = boxes[0];
    assert.equal(x0, 0);
    assert.equal(y0, 0);
    assert.ok(Math.abs(x1 - 300) <= 1, `width ${x1} pt, want 300`);
    assert.ok(Math.abs(y1 - 225) <= 1, `height ${y1} pt, want 225`);
  });

  it("reuses one browser page for many exports (each after the first is quick)", async () => {
    const t0 = Date.now();
    for (let i = 0; i < 6; i++) {
      await figures.save({ data: [{ type: "scatter", y: [i, i + 1, i * 2] }], layout: {} }, path.join(dir, `many-${i}.${["svg", "png", "pdf"][i % 3]}`), { width: 300, height: 200 });
    }
    const perExport = (Date.now() - t0) / 6;
    assert.ok(perExport < 1000, `${perExport} ms per export: is the browser relaunched each time?`);
    assert.deepEqual(pngSize(path.join(dir, "many-1.png")), { width: 300, height: 200 });
  });

  it("rejects an unknown extension and bad sizes with E_OPTION", async () => {
    await assert.rejects(figures.save(fig, path.join(dir, "fig.gif")), (e: unknown) => isTernlabError(e, "E_OPTION") && /\.gif.*use \.svg, \.png or \.pdf/.test((e as Error).message));
    await assert.rejects(figures.save(fig, path.join(dir, "fig")), (e: unknown) => isTernlabError(e, "E_OPTION") && /no extension/.test((e as Error).message));
    await assert.rejects(figures.save(fig, path.join(dir, "w.png"), { width: -5 }), (e: unknown) => isTernlabError(e, "E_OPTION") && /width -5/.test((e as Error).message));
    await assert.rejects(figures.save(fig, path.join(dir, "s.png"), { scale: 0 }), (e: unknown) => isTernlabError(e, "E_OPTION") && /scale 0/.test((e as Error).message));
    await assert.rejects(figures.save({ nope: 1 } as any, path.join(dir, "x.png")), (e: unknown) => isTernlabError(e, "E_OPTION"));
  });

  it("says clearly when no browser is installed (E_IO naming the path and the fix)", async () => {
    await figures.close();
    const saved = process.env.TERNLAB_CHROMIUM;
    process.env.TERNLAB_CHROMIUM = path.join(dir, "no-such-chromium");
    try {
      assert.equal(figures.browserAvailable(), false);
      await assert.rejects(figures.save(fig, path.join(dir, "x.svg")), (e: unknown) =>
        isTernlabError(e, "E_IO") && /no Chromium at .*no-such-chromium.*apt-get install chromium.*TERNLAB_CHROMIUM/.test((e as Error).message));
    } finally {
      if (saved === undefined) delete process.env.TERNLAB_CHROMIUM;
      else process.env.TERNLAB_CHROMIUM = saved;
    }
    await figures.save(fig, path.join(dir, "again.svg"), { width: 200, height: 100 });
    assert.deepEqual(svgSize(path.join(dir, "again.svg")), { width: 200, height: 100 });
  });

  it("a script that exported figures can exit on its own (the idle browser closes)", () => {
    const script = `const f = require(${JSON.stringify(path.resolve(__dirname, "..", "src", "figures.js"))});
f.save({ data: [{ type: "scatter", y: [1, 2] }], layout: {} }, ${JSON.stringify(path.join(dir, "script.png"))}).then(() => console.log("saved"));`;
    const t0 = Date.now();
    const r = require("child_process").spawnSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 30_000, env: { ...process.env, TERNLAB_FIGURES_IDLE_MS: "200" } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /saved/);
    assert.ok(Date.now() - t0 < 20_000);
    assert.ok(fs.existsSync(path.join(dir, "script.png")));
  });
});
