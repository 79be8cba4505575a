// npm run bench:gpu — ternlab's CUDA backend against GXNOR in PyTorch, on the same card, in one run:
// training images/s, ms/step and device memory for the paper's CIFAR-10 net (batch 256, 32×32) and
// ResNet-18 (batch 256, 224×224); kernel figures (int8 TOPS of the forward products against
// torch._int_mm's measured peak, the fused DST update's GB/s against a device-to-device copy).
//   node dist/bench/gpu.js [--models cifar,resnet] [--batch 256] [--steps 20] [--no-torch] [--no-kernels] [--no-own]
//                          [--variants "NAME:VAR=V,VAR=V;NAME2:…"] [--profile] [--out FILE.json]
// --variants adds training runs of the same build with backend switches set (e.g. a fixed cuDNN
// algorithm: "data1:TERNLAB_CUDNN_ALGO_DATA=1"), each printed against the default of the same run.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { gxnorCifar, loadAddon, resnet18, updateConfig, ModelSpec } from "./gpu_models";
import { args, flag, opt } from "./args";
import { floorReport } from "./work";

const root = path.resolve(__dirname, "../..");
const batch = Number(opt("batch", "256"));
const steps = Number(opt("steps", "20"));
const models = opt("models", "cifar,resnet").split(",");
// Training variants of the same build: a name, the backend switches it sets (read by the backend
// at every product, so set for the whole run) and what the printout calls it. Built in:
// "own" (only ternlab's hand-written kernels), "cudnn-int8" (cuDNN's int8 forward gives float
// outputs, so exact int16 sums, the default, stay on our kernels: this variant keeps float outputs
// to put every ternary forward on cuDNN), "stem-int8" (the float stem on int8 tensor cores; opt-in,
// measured slower: NOTES.md, session 6). More from --variants, parsed once: a malformed entry
// stops the run before any work.
interface Variant { env: Record<string, string>; label: string }
const builtIn: Record<string, Variant> = {
  own: { env: { TERNLAB_CUDNN: "0" }, label: "own kernels only" },
  "cudnn-int8": { env: { TERNLAB_CUDNN_INT8: "1", TERNLAB_EXACT_SUMS: "0" }, label: "int8 forward through cuDNN too" },
  "stem-int8": { env: { TERNLAB_STEM: "int8" }, label: "float stem on int8 tensor cores" },
};
const envVariants = new Map<string, Variant>(opt("variants", "").split(";").filter((v) => v.trim()).map((v) => {
  const [name, vars] = v.split(":");
  if (!name || !vars) throw new Error(`--variants: "${v}" is not NAME:VAR=V,VAR=V`);
  return [name.trim(), { label: name.trim(), env: Object.fromEntries(vars.split(",").map((kv) => {
    const [k, val] = kv.split("=");
    if (!k || val === undefined) throw new Error(`--variants: "${kv}" in "${v}" is not VAR=V`);
    return [k.trim(), val.trim()];
  })) }];
}));
const variantOf = (name: string): Variant | undefined => builtIn[name] ?? envVariants.get(name);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Row = Record<string, any>;
const results: Row[] = [];
const log = (r: Row) => { results.push(r); };

function jsonLines(out: string): Row[] {
  return out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

function kernels(): void {
  const bin = path.join(root, "build/gpu_kernels");
  // rebuilt when a source it includes is newer (a stale binary would time the previous kernels)
  const sources = ["bench", "native/cuda", "native/core"].flatMap((d) => fs.existsSync(path.join(root, d)) ?
    fs.readdirSync(path.join(root, d)).filter((f) => /\.(cu|cuh|h)$/.test(f)).map((f) => path.join(root, d, f)) : []);
  const built = fs.existsSync(bin) ? fs.statSync(bin).mtimeMs : 0;
  if (sources.some((f) => fs.statSync(f).mtimeMs > built)) {
    const nvcc = fs.existsSync("/usr/local/cuda/bin/nvcc") ? "/usr/local/cuda/bin/nvcc" : "nvcc";
    const r = spawnSync(nvcc, ["-std=c++17", "-O3", "-gencode", "arch=compute_90,code=sm_90", "-gencode", "arch=compute_80,code=sm_80",
      path.join(root, "bench/gpu_kernels.cu"), path.join(root, "native/cuda/cudnn_conv.cu"), "-ldl", "-o", bin], { encoding: "utf8" });
    if (r.status !== 0) { console.log(`kernel benchmark not built: ${r.error ?? r.stderr}`); return; }
  }
  const r = spawnSync(bin, [String(batch)], { encoding: "utf8", maxBuffer: 1 << 24 });
  if (r.status !== 0) console.log(`kernel benchmark failed: ${r.stderr}`);
  for (const row of jsonLines(r.stdout ?? "")) log({ source: "kernels", ...row });
}

function torch(): void {
  // eager, torch.compile (the issue's baseline) and torch.compile with CUDA graphs (mode
  // "reduce-overhead"): the compiled step of the CIFAR net is bound by Python's kernel launches at
  // batch 256, which CUDA graphs remove (session 7: 3.1–4.4 against 6.2–9.9 ms a step)
  const py = spawnSync("python3", [path.join(root, "bench/pytorch_gxnor.py"), "--models", models.join(","), "--batch", String(batch),
    "--steps", String(steps), "--modes", "eager,compile,compile-graphs"], { encoding: "utf8", maxBuffer: 1 << 24, env: { ...process.env, PYTHONUNBUFFERED: "1" } });
  if (py.status !== 0) console.log(`pytorch baseline failed (${py.status}): ${(py.stderr ?? "").slice(-2000)}`);
  for (const row of jsonLines(py.stdout ?? "")) log({ source: "pytorch", ...row });
  if (flag("no-kernels")) return;
  // single layers' backward products, beside the kernel program's cuDNN survey of the same shapes
  const layers = spawnSync("python3", [path.join(root, "bench/pytorch_conv_layers.py"), "--batch", String(batch)],
    { encoding: "utf8", maxBuffer: 1 << 24 });
  if (layers.status !== 0) console.log(`pytorch layer timings failed (${layers.status}): ${(layers.stderr ?? "").slice(-2000)}`);
  for (const row of jsonLines(layers.stdout ?? "")) log({ source: "pytorch", ...row });
}

// variant "default": the backend as shipped (cuDNN products where cuDNN 9 loads); the others as
// variantOf says, measured in the same run for the comparison.
async function ternlab(name: string, spec: ModelSpec, variant = "default"): Promise<void> {
  const addon = loadAddon();
  const env = variantOf(variant)?.env ?? {};
  Object.assign(process.env, env);
  try {
    await ternlabRun(name, spec, variant, addon);
  } finally {
    for (const k of Object.keys(env)) delete process.env[k];
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function ternlabRun(name: string, spec: ModelSpec, variant: string, addon: any): Promise<void> {
  const m = new addon.NativeModel(spec, updateConfig(), { kind: "cuda", threads: 0 });
  const per = spec.h * spec.w * spec.c, batches = 4, count = batch * batches;
  const images = new Uint8Array(count * per);
  for (let i = 0; i < images.length; ++i) images[i] = (i * 2654435761) >>> 24;
  const labels = Int32Array.from({ length: count }, (_, i) => (i * 7919) % spec.classes);
  const seconds: number[] = [];
  let step = 0, epoch = 0;
  const t0 = Date.now();
  const warm = 3;
  while (seconds.length < warm + steps) {
    const end = Math.min(batches, warm + steps - seconds.length);
    await m.train({ images, labels, count }, { epoch, batch, firstStep: step, begin: 0, end, loss: 0, shuffle: true, lr: new Float32Array(batches).fill(0.01) },
      (rows: Array<{ seconds: number }>) => { for (const r of rows) seconds.push(r.seconds); });
    step += end; epoch++;
  }
  const timed = seconds.slice(warm).sort((a, b) => a - b);
  const med = timed[Math.floor(timed.length / 2)];
  log({ source: "ternlab", variant, model: name, batch, ms_per_step: med * 1000, images_per_s: batch / med, device_MiB: m.memoryInUse() / 2 ** 20,
    wall_s: (Date.now() - t0) / 1000, backend: JSON.parse(m.summary()).backend });
}

// One more short run with TERNLAB_CUDA_PROFILE=1: where a step's time goes, op by op (GPU time
// between events recorded around each op, unsynchronised: the top-level rows sum to the step's
// GPU time less what runs outside any op; "(of which ...)" rows are parts of the row above them).
async function profile(name: string, spec: ModelSpec): Promise<void> {
  process.env.TERNLAB_CUDA_PROFILE = "1";
  try {
    const addon = loadAddon();
    const m = new addon.NativeModel(spec, updateConfig(), { kind: "cuda", threads: 0 });
    const per = spec.h * spec.w * spec.c, count = batch * 3;
    const images = new Uint8Array(count * per).map((_, i) => (i * 2654435761) >>> 24);
    const labels = Int32Array.from({ length: count }, (_, i) => i % spec.classes);
    await m.train({ images, labels, count }, { epoch: 0, batch, firstStep: 0, begin: 0, end: 3, loss: 0, shuffle: true, lr: new Float32Array(3).fill(0.01) }, () => undefined);
    const text = String(JSON.parse(m.summary()).backend).split(" | profile: ")[1] ?? "";
    log({ source: "profile", model: name, steps: 3, text });
  } finally {
    delete process.env.TERNLAB_CUDA_PROFILE;
  }
}

const fmt = (x: number | undefined, d = 0) => (x === undefined || !Number.isFinite(x) ? "n/a" : x.toFixed(d));

async function main(): Promise<void> {
  const date = new Date().toISOString();
  if (!flag("no-kernels")) kernels();
  for (const name of models) {
    const spec = name === "cifar" ? gxnorCifar(1) : resnet18(1, 224, 1000);
    // the stem variant where the model has a float stem (ResNet-18), even with --no-own
    const variants = [...(flag("no-own") ? ["default"] : ["default", "own", "cudnn-int8"]), ...(name === "resnet" ? ["stem-int8"] : []),
      ...envVariants.keys()];
    for (const variant of variants) {
      try {
        await ternlab(name, spec, variant);
      } catch (e) {
        log({ source: "ternlab", variant, model: name, error: (e as Error).message });
      }
    }
  }
  if (flag("profile"))
    for (const name of models) await profile(name, name === "cifar" ? gxnorCifar(1) : resnet18(1, 224, 1000)).catch((e) => log({ source: "profile", model: name, error: String(e) }));
  if (!flag("no-torch")) torch();

  const device = results.find((r) => r.kind === "device")?.describe ?? results.find((r) => r.source === "ternlab")?.backend;
  const ceil = results.find((r) => r.kind === "ceilings");
  console.log(`\nternlab bench:gpu  ${date}  ${device ?? "?"}  ${ceil ? `torch ${ceil.torch} on ${ceil.device}` : ""}`);
  console.log(`command: node dist/bench/gpu.js ${args.join(" ")}`.trim());
  console.log("\ntraining (batch " + batch + "): images/s, ms/step, device memory");
  for (const name of models) {
    const t = results.find((r) => r.source === "ternlab" && r.model === name && r.variant === "default");
    const eager = results.find((r) => r.kind === "pytorch" && r.model === name && r.mode === "eager");
    const comp = results.find((r) => r.kind === "pytorch" && r.model === name && r.mode === "compile");
    const graphs = results.find((r) => r.kind === "pytorch" && r.model === name && r.mode === "compile-graphs");
    console.log(`  ${name.padEnd(7)} ternlab ${t?.error ? "error: " + t.error : `${fmt(t?.images_per_s)} img/s ${fmt(t?.ms_per_step, 2)} ms ${fmt(t?.device_MiB)} MiB`}`);
    for (const [label, p] of [["eager", eager], ["compile", comp], ["compile + CUDA graphs", graphs]] as Array<[string, Row | undefined]>) {
      if (!p) continue;
      if (p.error) { console.log(`          torch ${label}: error ${p.error}`); continue; }
      // (with CUDA graphs the peak omits the graphs' memory pools, allocated before the peak is reset)
      const peak = label.includes("graphs") ? "(peak n/a)" : `${fmt(p.peak_MiB)} MiB peak`;
      console.log(`          torch ${label.padEnd(7)} ${fmt(p.images_per_s)} img/s ${fmt(p.ms_per_step, 2)} ms ${peak}  ` +
        `-> ternlab/torch ${t?.images_per_s ? (t.images_per_s / p.images_per_s).toFixed(2) : "n/a"}x`);
    }
    for (const v of [...Object.keys(builtIn), ...envVariants.keys()]) {
      const r = results.find((x) => x.source === "ternlab" && x.model === name && x.variant === v);
      if (!r) continue;
      const { env, label } = variantOf(v)!;
      console.log(`          ternlab, ${label} (${Object.entries(env).map(([k, x]) => `${k}=${x}`).join(" ")}) ${r.error ? "error: " + r.error :
        `${fmt(r.images_per_s)} img/s ${fmt(r.ms_per_step, 2)} ms ${fmt(r.device_MiB)} MiB` +
        (t?.images_per_s && r.images_per_s ? `  -> vs default ${(r.images_per_s / t.images_per_s).toFixed(2)}x` : "")}`);
    }
    if (t?.backend) console.log(`          backend: ${t.backend}`);
  }
  const prods = results.filter((r) => r.kind === "product");
  if (prods.length) {
    console.log(`\nproducts (int8 peak by torch._int_mm 8192^3: ${fmt(ceil?.int8_TOPS)} TOPS; bf16 by an 8192^3 matmul: ${fmt(ceil?.bf16_TFLOPS)} TFLOP/s)`);
    for (const p of prods)
      console.log(`  ${p.op.padEnd(22)} ${p.shape.padEnd(28)} ${fmt(p.ms, 3).padStart(8)} ms ${fmt(p.TOPS).padStart(5)} T(FL)OPS` +
        (p.op === "forward int8" && ceil ? `  ${((100 * p.TOPS) / ceil.int8_TOPS).toFixed(0)}% of peak` : ""));
    for (const c of results.filter((r) => r.kind === "int8 forward v1 vs v2"))
      console.log(`  int8 forward v1 -> v2  ${c.shape.padEnd(28)} ${fmt(c.ms_v1, 3).padStart(8)} -> ${fmt(c.ms_v2, 3)} ms ` +
        `${fmt(c.TOPS_v1)} -> ${fmt(c.TOPS_v2)} TOPS  ${c.speedup.toFixed(2)}x${c.identical ? "" : "  MISMATCH: outputs differ"}`);
    for (const st of results.filter((r) => r.kind === "stem"))
      console.log(`  stem: fp32 ${fmt(st.ms_fp32, 3)} ms -> int8 x3 ${fmt(st.ms_int8, 3)} ms, grouped ${fmt(st.ms_grouped, 3)} ms` +
        `${st.grouped_identical === false ? " (MISMATCH: grouped differs)" : ""}; outputs differ by ${Number(st.rel_diff).toExponential(2)} normwise; ` +
        `ms by images per pass: ${Object.entries(st.ms_by_chunk ?? {}).map(([k, v]) => `${k}: ${Number(v).toFixed(3)}`).join(", ")}`);
    for (const c of results.filter((r) => r.kind === "cudnn survey")) {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const algos = (c.algos ?? []) as Array<any>;
      const chosen = algos.find((a) => a.algo === c.chosen);
      const det = algos.filter((a) => a.deterministic).sort((a, b) => a.ms - b.ms)[0];
      console.log(`  cuDNN ${c.op.padEnd(16)} ${c.shape.padEnd(28)} chosen ${c.chosen} ${fmt(chosen?.ms, 3)} ms; fastest deterministic ` +
        `${det ? `${det.algo} ${fmt(det.ms, 3)} ms` : "none"}; all: ${algos.map((a) => `${a.algo}${a.deterministic ? "" : "*"} ${fmt(a.ms, 3)}`).join(", ")} (* nondeterministic)`);
    }
    for (const c of results.filter((r) => r.kind === "cudnn graph survey")) {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const engines = (c.engines ?? []) as Array<any>;
      const chosen = engines.find((e) => e.engine === c.chosen && e.ms >= 0);
      const ok = (e: { deterministic: boolean; reduced: boolean; down_convert: boolean; ms: number }) => e.deterministic && !e.reduced && !e.down_convert && e.ms >= 0;
      const best = engines.filter(ok).sort((a, b) => a.ms - b.ms)[0];
      const any = engines.filter((e) => e.ms >= 0).sort((a, b) => a.ms - b.ms)[0];
      console.log(`  cuDNN graph ${c.op.padEnd(16)} ${c.output.padEnd(4)} ${c.shape.padEnd(28)} chosen ${c.chosen} ${fmt(chosen?.ms, 3)} ms; ` +
        `fastest qualifying ${best ? `${best.engine} ${fmt(best.ms, 3)} ms` : "none"}; fastest of all ${any ? `${any.engine} ${fmt(any.ms, 3)} ms` : "none"} (${engines.length} engines)`);
    }
    const torchLayers = results.filter((r) => r.kind === "torch conv layer");
    if (torchLayers.length) {
      console.log("  backward products per layer, ms (data / filter): ternlab's cuDNN pick (legacy API, deterministic) against PyTorch's cuDNN " +
        "(v8 API, channels_last): benchmark with any algorithm | benchmark, deterministic only | heuristics");
      const survey = (op: string, shape: string) => {
        const c = results.find((r) => r.kind === "cudnn survey" && r.op === op && r.shape === shape);
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        return c ? (c.algos as Array<any>).find((a) => a.algo === c.chosen)?.ms : undefined;
      };
      for (const shape of [...new Set(torchLayers.map((r) => r.shape as string))]) {
        const t = (mode: string) => {
          const r = torchLayers.find((x) => x.shape === shape && x.mode === mode);
          return r?.error ? "error" : `${fmt(r?.data_ms, 3)} / ${fmt(r?.filter_ms, 3)}`;
        };
        console.log(`    ${shape.padEnd(28)} ternlab ${fmt(survey("backward data", shape), 3)} / ${fmt(survey("backward filter", shape), 3)}   ` +
          `torch ${t("benchmark")} | ${t("benchmark-deterministic")} | ${t("heuristics")}`);
      }
    }
    for (const e of results.filter((r) => r.kind === "elementwise"))
      console.log(`  bn fwd ${fmt(e.bn_forward_ms, 3)} ms, bn bwd ${fmt(e.bn_backward_ms, 3)} ms (int16 input: ${fmt(e.bn_forward_i16_ms, 3)} / ${fmt(e.bn_backward_i16_ms, 3)} ms; fused with φ: ${fmt(e.bn_act_forward_i16_ms, 3)} / ${fmt(e.act_bn_backward_i16_ms, 3)} ms), act ${fmt(e.act_forward_ms, 3)} ms on ${e.shape} (${fmt(e.tensor_MB)} MB)`);
  }
  console.log("\nthe floor of a training step (bench/work.ts: the work over the card's ceilings)");
  for (const l of floorReport(results, { batch })) console.log("  " + l);
  const dst = results.find((r) => r.kind === "dst"), copy = results.find((r) => r.kind === "copy");
  if (dst) console.log(`\nDST update (fused Adam + Philox + flip count), ${dst.weights} weights: ${fmt(dst.ms, 3)} ms, ${fmt(dst.GBps)} GB/s; ` +
    `device-to-device copy ${fmt(copy?.GBps)} GB/s (torch: ${fmt(ceil?.copy_GBps)} GB/s) -> ${copy ? ((100 * dst.GBps) / copy.GBps).toFixed(0) : "n/a"}%`);
  for (const p of results.filter((r) => r.source === "profile")) {
    console.log(`\nprofile of ${p.model} (${p.steps} steps, ms/calls, GPU time between events around each op):`);
    const items = String(p.text ?? p.error).split("; ").map((t) => {
      const m = /^(.*) ([\d.]+) ms\/(\d+)$/.exec(t);
      return m ? { op: m[1], ms: Number(m[2]), calls: Number(m[3]) } : { op: t, ms: 0, calls: 0 };
    }).sort((a, b) => b.ms - a.ms);
    for (const it of items) console.log(`  ${it.op.padEnd(30)} ${it.ms.toFixed(1).padStart(8)} ms ${String(it.calls).padStart(5)} calls`);
    const top = items.filter((it) => !it.op.trim().startsWith("(of which")).reduce((a, it) => a + it.ms, 0);
    console.log(`  ${"all ops, per step".padEnd(30)} ${(top / Number(p.steps)).toFixed(2).padStart(8)} ms`);
  }
  const out = opt("out", "");
  if (out) fs.writeFileSync(out, JSON.stringify({ date, args, results }, null, 1));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
