// Figures of the GPU results runs (bench/gpu_train.ts JSON files) for docs/results.md: test accuracy
// against training wall time, one trace per run, and training accuracy beside it.
//   node dist/bench/gpu_figures.js   (writes docs/figures/gpu-*.svg and .pdf; needs Chromium)
import * as fs from "fs";
import * as path from "path";
import * as figures from "../src/figures";
import { PALETTE } from "../src/plots";

const root = path.resolve(__dirname, "../..");
const results = path.join(root, "bench/results");

interface Rows { summary: Record<string, unknown>; rows: Array<Record<string, number>> }

function load(rel: string): Rows {
  return JSON.parse(fs.readFileSync(path.join(results, rel), "utf8")) as Rows;
}

function figure(title: string, runs: Array<[string, string]>) {
  const data = runs.flatMap(([label, rel], k) => {
    const r = load(rel);
    const color = PALETTE[k % PALETTE.length];
    const x = r.rows.map((row) => row.wall_s);
    return [
      { type: "scatter", mode: "lines", name: `${label}: test`, x, y: r.rows.map((row) => 100 * row.test_acc), line: { color, width: 2 } },
      { type: "scatter", mode: "lines", name: `${label}: train (running)`, x, y: r.rows.map((row) => 100 * row.train_acc), line: { color, width: 1, dash: "dot" } },
    ];
  });
  return {
    data,
    layout: {
      title: { text: title, font: { size: 15 } },
      xaxis: { title: { text: "training wall time (s)" } },
      yaxis: { title: { text: "accuracy (%)" } },
      legend: { orientation: "h", y: -0.2 },
      margin: { t: 50, l: 60, r: 20, b: 110 },
      width: 720,
      height: 480,
      template: "plotly_white",
    },
  };
}

async function main(): Promise<void> {
  const out = path.join(root, "docs/figures");
  const cifar = figure("CIFAR-10, the paper's net, DST on one H200 (2026-11-28)", [
    ["batch 500, η 0.01→1e-4", "gpu-2026-11-28-session2/1-first-cudnn-build/cifar10-9min.json"],
    ["batch 2000, η 0.04→4e-5", "gpu-2026-11-28-session2/3-final/cifar10-batch2000.json"],
  ]);
  const mnist = figure("MNIST, the paper's net, DST on one H200 (2026-11-28)", [
    ["batch 1000, η 0.01→1e-6", "gpu-2026-11-28-session2/2-fused-backward-in-sums/mnist.json"],
    ["batch 5000, η 0.05→5e-5", "gpu-2026-11-28-session2/3-final/mnist-batch5000.json"],
  ]);
  (mnist.layout as Record<string, unknown>).yaxis = { title: { text: "accuracy (%)" }, range: [97, 100] };
  for (const [name, fig] of [["gpu-cifar10-h200", cifar], ["gpu-mnist-h200", mnist]] as const)
    for (const ext of ["svg", "pdf"]) {
      const file = path.join(out, `${name}.${ext}`);
      await figures.save(fig, file);
      console.log(`wrote ${path.relative(root, file)}`);
    }
  await figures.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
