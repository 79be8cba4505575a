import { strict as assert } from "assert";
import { isTernlabError } from "../src/errors";
import { MetricsRecorder } from "../src/metrics";
import {
  Figure,
  WINDOW_SHAPES,
  acceptRates,
  accuracyCurve,
  compareRuns,
  emaSmooth,
  flipRates,
  lossCurve,
  sparsity,
  trainingDashboard,
  transitionProbabilities,
  transitionProbability,
  windowDerivative,
  windowFunctions,
} from "../src/plots";

/** 2 epochs × 4 steps, 2 layers. */
function run(opts: { accept?: boolean; val?: boolean } = {}) {
  const rec = new MetricsRecorder({ layers: ["conv1", "fc"], backend: "cpu" });
  for (let s = 1; s <= 8; s++) {
    rec.addStep({
      step: s,
      epoch: s <= 4 ? 1 : 2,
      loss: 10 - s,
      wall_time: s * 30,
      "flip_rate/conv1": s / 100,
      "flip_rate/fc": s / 200,
      ...(opts.accept ? { "accept_rate/conv1": 0.5, "accept_rate/fc": 0.25 } : {}),
      "s_w/conv1": 0.4,
      "s_w/fc": 0.6,
      "s_a/conv1": 0.3,
      "s_a/fc": 0.2,
      "active_fraction/conv1": 0.42,
      "active_fraction/fc": 0.32,
    });
  }
  rec.addEpoch({ epoch: 1, step: 4, train_accuracy: 0.5, test_accuracy: 0.6, wall_time: 120, ...(opts.val ? { val_accuracy: 0.55 } : {}) });
  rec.addEpoch({ epoch: 2, step: 8, train_accuracy: 0.75, test_accuracy: 0.8, wall_time: 240, ...(opts.val ? { val_accuracy: 0.7 } : {}) });
  return rec;
}

const byName = (f: Figure, name: string) => {
  const t = f.data.find((d) => d.name === name);
  assert.ok(t, `trace "${name}" (have ${f.data.map((d) => d.name).join(", ")})`);
  return t;
};

/** Equal up to float rounding (fractions shown as percent are x·100). */
function near(a: number[], b: number[], tol = 1e-9): boolean {
  return a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= tol);
}

function isOptionError(column: string) {
  return (e: unknown) => isTernlabError(e, "E_OPTION") && e.message.includes(`"${column}"`) && /columns: /.test(e.message);
}

describe("plots: training curves", () => {
  it("lossCurve: loss against step, epoch or wall time", () => {
    const { steps } = run();
    const f = lossCurve(steps, { title: "MNIST" });
    assert.equal(f.data.length, 1);
    assert.deepEqual(f.data[0].x, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(f.data[0].y, [9, 8, 7, 6, 5, 4, 3, 2]);
    assert.deepEqual((f.layout.title as { text: string }).text, "MNIST");
    assert.equal(((f.layout.xaxis as { title: { text: string } }).title.text), "step");
    assert.equal(f.layout.plot_bgcolor, "white");
    assert.deepEqual(lossCurve(steps, { x: "epoch" }).data[0].x, [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75]);
    const wall = lossCurve(steps, { x: "wall_time" });
    assert.deepEqual(wall.data[0].x, [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]);
    assert.equal((wall.layout.xaxis as { title: { text: string } }).title.text, "wall time (min)");
    // The figure is plain JSON.
    assert.deepEqual(JSON.parse(JSON.stringify(f)), { data: f.data, layout: f.layout });
  });

  it("lossCurve: EMA smoothing is debiased and drawn over the raw curve", () => {
    const { steps } = run();
    const f = lossCurve(steps, { smooth: 0.5 });
    assert.equal(f.data.length, 2);
    assert.deepEqual(f.data[0].y, [9, 8, 7, 6, 5, 4, 3, 2]);
    const y = f.data[1].y as number[];
    assert.equal(y[0], 9);
    assert.ok(Math.abs(y[1] - (0.25 * 9 + 0.5 * 8) / 0.75) < 1e-12);
    assert.deepEqual(emaSmooth([1, NaN, 1], 0.9), [1, NaN, 1]);
    assert.throws(() => lossCurve(steps, { smooth: 1 }), (e: unknown) => isTernlabError(e, "E_OPTION") && /"smooth"/.test(e.message));
  });

  it("decimates long curves to maxPoints bucket means", () => {
    const rec = new MetricsRecorder({ layers: [], backend: "cpu" });
    for (let s = 1; s <= 1000; s++) rec.addStep({ step: s, epoch: 1, loss: s });
    const f = lossCurve(rec.steps, { maxPoints: 10 });
    assert.equal((f.data[0].x as number[]).length, 10);
    assert.equal((f.data[0].y as number[])[0], 50.5);
    assert.equal((lossCurve(rec.steps, { maxPoints: 0 }).data[0].x as number[]).length, 1000);
  });

  it("accuracyCurve: train and test in percent; validation only when recorded", () => {
    const f = accuracyCurve(run().epochs);
    assert.deepEqual(f.data.map((d) => d.name), ["train", "test"]);
    assert.deepEqual(byName(f, "test").x, [1, 2]);
    assert.ok(near(byName(f, "test").y as number[], [60, 80]));
    assert.ok(near(byName(f, "train").y as number[], [50, 75]));
    assert.match((f.layout.yaxis as { title: { text: string } }).title.text, /%/);
    const v = accuracyCurve(run({ val: true }).epochs);
    assert.ok(near(byName(v, "validation").y as number[], [55, 70]));
  });

  it("flipRates: one trace per layer, optional log axis", () => {
    const f = flipRates(run().steps, { logY: true });
    assert.deepEqual(f.data.map((d) => d.name), ["conv1", "fc"]);
    assert.deepEqual(byName(f, "fc").y, [1, 2, 3, 4, 5, 6, 7, 8].map((s) => s / 200));
    assert.equal((f.layout.yaxis as { type: string }).type, "log");
    assert.deepEqual(flipRates(run().steps, { layers: ["fc"] }).data.map((d) => d.name), ["fc"]);
    assert.throws(() => flipRates(run().steps, { layers: ["nope"] }), isOptionError("flip_rate/nope"));
  });

  it("acceptRates and sparsity: per layer", () => {
    const a = acceptRates(run({ accept: true }).steps);
    assert.deepEqual(byName(a, "fc").y, new Array(8).fill(0.25));
    const s = sparsity(run().steps);
    assert.equal(s.data.length, 6);
    assert.deepEqual(byName(s, "fc: s_w (zero weights)").y, new Array(8).fill(0.6));
    assert.deepEqual(byName(s, "conv1: active MACs").y, new Array(8).fill(0.42));
    // One colour per layer across the metrics.
    const color = (n: string) => (byName(s, n).line as { color: string }).color;
    assert.equal(color("conv1: s_w (zero weights)"), color("conv1: s_a (zero activations)"));
    assert.notEqual(color("conv1: s_w (zero weights)"), color("fc: s_w (zero weights)"));
  });

  it("trainingDashboard: 2×2 panels; accept rate when recorded, else sparsity", () => {
    const r = run({ accept: true });
    const f = trainingDashboard(r.steps, r.epochs, { title: "run" });
    const axesOf = (name: string, axis: string) => f.data.filter((d) => d.name === name && d.yaxis === axis);
    assert.equal(axesOf("loss", "y").length, 1);
    assert.ok(near(axesOf("test", "y2")[0].y as number[], [60, 80]));
    assert.deepEqual(axesOf("conv1", "y3")[0].y, [1, 2, 3, 4, 5, 6, 7, 8].map((s) => s / 100));
    assert.deepEqual(axesOf("conv1", "y4")[0].y, new Array(8).fill(0.5));
    for (const a of ["xaxis", "xaxis2", "xaxis3", "xaxis4", "yaxis", "yaxis2", "yaxis3", "yaxis4"]) assert.ok(f.layout[a], a);
    assert.equal((f.layout.yaxis3 as { type: string }).type, "log");

    const g = trainingDashboard(run().steps, run().epochs);
    assert.ok(g.data.some((d) => d.yaxis === "y4" && d.name === "conv1: s_w (zero weights)"));
    assert.ok(!g.data.some((d) => d.yaxis === "y4" && d.name === "conv1"));
  });

  it("trainingDashboard draws empty tables (the start of a live run)", () => {
    const rec = new MetricsRecorder({ layers: ["a"], backend: "cpu" });
    const f = trainingDashboard(rec.steps, rec.epochs);
    assert.ok(f.data.length > 0);
    assert.ok(f.data.every((d) => (d.x as unknown[]).length === 0));
  });

  it("a missing column is an E_OPTION naming it and listing the columns present", () => {
    const { steps, epochs } = run();
    assert.throws(() => lossCurve(epochs.select(["epoch", "step"])), isOptionError("loss"));
    assert.throws(() => accuracyCurve(steps.select(["epoch", "loss"])), isOptionError("test_accuracy"));
    assert.throws(() => accuracyCurve(epochs.select(["epoch", "test_accuracy"]), { top5: true }), isOptionError("test_top5"));
    assert.throws(() => flipRates(steps.select(["step", "loss"])), isOptionError("flip_rate/<layer>"));
    assert.throws(() => compareRuns([{ name: "a", epochs }], "nope"), isOptionError("nope"));
  });

  it("compareRuns: one trace per run, accuracy in percent, against epoch or wall time", () => {
    const a = run().epochs;
    const b = run({ val: true }).epochs;
    const f = compareRuns([{ name: "dst", epochs: a }, { name: "metropolis", epochs: b }]);
    assert.deepEqual(f.data.map((d) => d.name), ["dst", "metropolis"]);
    assert.ok(near(f.data[1].y as number[], [60, 80]));
    assert.deepEqual(f.data[0].x, [1, 2]);
    const w = compareRuns([{ name: "dst", epochs: a }], "val_accuracy", "wall_time");
    assert.deepEqual(w.data[0].x, [2, 4]);
    assert.equal((w.layout.xaxis as { title: { text: string } }).title.text, "wall time (min)");
  });
});

/** ∫ f over [lo, hi] by the midpoint rule with n panels. */
function integrate(f: (x: number) => number, lo: number, hi: number, n = 200000): number {
  const h = (hi - lo) / n;
  let s = 0;
  for (let i = 0; i < n; i++) s += f(lo + (i + 0.5) * h);
  return s * h;
}

function trapezoid(x: number[], y: number[]): number {
  let s = 0;
  for (let i = 1; i < x.length; i++) s += ((y[i] + y[i - 1]) / 2) * (x[i] - x[i - 1]);
  return s;
}

describe("plots: the paper's figures", () => {
  it("every derivative window integrates to 1 over each jump", () => {
    for (const shape of WINDOW_SHAPES) {
      // Finite windows with the released code's r = 1, a = 0.5, over the jump at +1.
      if (shape === "rectangular" || shape === "triangular") {
        const I = integrate((x) => windowDerivative(shape, x, 1, 0.5), 0, 3);
        assert.ok(Math.abs(I - 1) < 1e-4, `${shape}: ∫ = ${I}`);
      }
      // Infinite tails need the jumps far apart: r = 10, a = 0.5; each half-line holds one jump.
      for (const a of [0.25, 0.5, 1]) {
        const I = integrate((x) => windowDerivative(shape, x, 10, a), 0, 40);
        assert.ok(Math.abs(I - 1) < 1e-4, `${shape}, a = ${a}: ∫ over one jump = ${I}`);
        const both = integrate((x) => windowDerivative(shape, x, 10, a), -40, 40);
        assert.ok(Math.abs(both - 2) < 2e-4, `${shape}, a = ${a}: ∫ over both jumps = ${both}`);
      }
    }
  });

  it("windowFunctions draws the windows it computes (trace area 2: two jumps)", () => {
    const f = windowFunctions({ r: 5, a: 0.5, range: [-12, 12], points: 24001, title: "windows" });
    assert.deepEqual(f.data.map((d) => d.name), ["φ_r(x), r = 5", ...WINDOW_SHAPES]);
    for (const shape of WINDOW_SHAPES) {
      const t = byName(f, shape);
      const area = trapezoid(t.x as number[], t.y as number[]);
      assert.ok(Math.abs(area - 2) < 5e-3, `${shape}: area ${area}`);
    }
    const phi = f.data[0];
    const at = (x: number) => (phi.y as number[])[(phi.x as number[]).findIndex((v) => Math.abs(v - x) < 1e-9)];
    assert.deepEqual([at(-6), at(-4), at(0), at(5), at(6)], [-1, 0, 0, 1, 1]);
    // The code's rectangular window: height 1/(2a) = 1 on r − a ≤ |x| ≤ r + a.
    assert.equal(windowDerivative("rectangular", 1.5, 1, 0.5), 1);
    assert.equal(windowDerivative("rectangular", -0.6, 1, 0.5), 1);
    assert.equal(windowDerivative("rectangular", 0.4, 1, 0.5), 0);
    assert.equal(windowDerivative("triangular", 1, 1, 0.5), 2);
    assert.throws(() => windowFunctions({ a: 0 }), (e: unknown) => isTernlabError(e, "E_OPTION") && /"a"/.test(e.message));
  });

  it("transitionProbabilities: tanh(m·x), x, logistic((x − ½)/T) on [0, 1]", () => {
    const f = transitionProbabilities({ m: [1, 3], T: 0.1, points: 11 });
    assert.deepEqual(f.data.map((d) => d.name), ["tanh, m = 1", "tanh, m = 3", "linear (unbiased)", "logistic, T = 0.1"]);
    const x = f.data[0].x as number[];
    assert.equal(x.length, 11);
    assert.equal(x[10], 1);
    assert.deepEqual(byName(f, "linear (unbiased)").y, x);
    assert.ok(Math.abs((byName(f, "tanh, m = 3").y as number[])[10] - Math.tanh(3)) < 1e-15);
    assert.equal((byName(f, "logistic, T = 0.1").y as number[])[5], 0.5);
    assert.ok(transitionProbability("logistic", 0.4, 1e-3) < 1e-20, "T → 0 tends to nearest rounding");
    assert.ok(transitionProbability("logistic", 0.6, 1e-3) > 1 - 1e-15);
  });

  it("figures are plain data", () => {
    const f = trainingDashboard(run().steps, run().epochs);
    assert.deepEqual(Object.keys(f), ["data", "layout"]);
    assert.deepEqual(JSON.parse(JSON.stringify(f)), f);
  });
});
