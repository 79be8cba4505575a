// How fast could one training step be at all? The work of one step of a model (the products' MACs
// and the elements every implementation must move), divided by the card's measured ceilings, gives a
// floor: no kernel design beats it. Set beside compiled PyTorch's step from the same run, it says
// what issue 3's "≥ 2× compiled PyTorch" target asks of the hardware.
//   node dist/bench/work.js [--bench FILE.json] [--batch 256] [--int8-tops T] [--bf16-tflops F] [--copy-gbps G]
// --bench reads a `node dist/bench/gpu.js --out FILE.json` result: PyTorch's measured ceilings (int8
// 8192³ `torch._int_mm`, bf16 8192³ matmul where the file has it, device-to-device copy) and the
// compiled PyTorch step of each model. The options override them; without a file the ceilings
// default to those measured on an H200 (../shared/gpu/README.md: 960 TOPS, 789 TFLOP/s, 4 250 GB/s).
//
// The floor's model, stated so that it can be argued with (all of it is a lower bound):
// - products: forward MACs at the int8 rate (ternary layers) or the bf16 rate (float layers: the
//   ResNet stem and last dense layer); backward 2 × the forward MACs at the bf16 rate (data and
//   filter gradients; the first layer needs no data gradient). Rates are the 8192³ peaks, which
//   small-K and 64-channel layers do not reach.
// - bytes: per element that a batch norm normalises, 20 B: forward — the sum
//   written (2 B, int16/bf16) and read once for the statistics and once to apply BN + φ (the
//   statistics of the whole batch must exist before any output is normalised) (4 B), the int8
//   states written and read by the next product (2 B); backward — the gradient at the BN output
//   read twice (Σdy, Σdy·x̂ before dx) (4 B), the saved sum read twice to recompute x̂ (4 B), the
//   gradient at the product's output written and read by the two products (4 B). A max-pool
//   between a product and its BN is taken as fused into the product (its outputs before pooling
//   are not counted); residual adds, the loss, the input batch and the weight updates are left
//   out (they only add).
// - floor without overlap = products + bytes; with perfect overlap = max(products, bytes).
import * as fs from "fs";
import { opt } from "./args";
import { gxnorCifar, resnet18, ModelSpec, OP } from "./gpu_models";

interface Work { int8Macs: number; bf16Macs: number; backwardMacs: number; bnElements: number; layers: number }

/** The per-image work of a model spec, by shape inference over its nodes. */
export function workOf(spec: ModelSpec): Work {
  const shapes: Array<[number, number, number]> = [];
  const w: Work = { int8Macs: 0, bf16Macs: 0, backwardMacs: 0, bnElements: 0, layers: 0 };
  spec.nodes.forEach((n, i) => {
    const [h, wd, c] = i === 0 ? [spec.h, spec.w, spec.c] : shapes[n.inputs[0]];
    let out: [number, number, number] = [h, wd, c];
    if (n.kind === OP.conv || n.kind === OP.maxPool || n.kind === OP.avgPool) {
      const oh = Math.floor((h + 2 * n.ph! - n.kh!) / n.sh!) + 1, ow = Math.floor((wd + 2 * n.pw! - n.kw!) / n.sw!) + 1;
      out = [oh, ow, n.kind === OP.conv ? n.out! : c];
    } else if (n.kind === OP.dense) out = [1, 1, n.out!];
    else if (n.kind === OP.flatten) out = [1, 1, h * wd * c];
    shapes.push(out);
    if (n.kind === OP.batchNorm) w.bnElements += h * wd * c;
    if (n.kind !== OP.conv && n.kind !== OP.dense) return;
    const k = n.kind === OP.conv ? n.kh! * n.kw! * c : h * wd * c;
    const macs = out[0] * out[1] * out[2] * k;
    if (n.discrete) w.int8Macs += macs;
    else w.bf16Macs += macs;
    // the first product (input = the image) needs only its filter gradient
    w.backwardMacs += n.inputs[0] === 0 ? macs : 2 * macs;
    w.layers++;
  });
  return w;
}

export const BYTES_PER_BN_ELEMENT = 20;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Row = Record<string, any>;

/** The floor lines for a gpu.js result list (its PyTorch ceilings and compiled steps, where present). */
export function floorReport(results: Row[], over: { int8?: number; bf16?: number; copy?: number; batch?: number } = {}): string[] {
  const ceil = results.find((r) => r.kind === "ceilings") ?? {};
  const int8 = (over.int8 ?? ceil.int8_TOPS ?? 960) * 1e12, bf16 = (over.bf16 ?? ceil.bf16_TFLOPS ?? 789) * 1e12;
  const copy = (over.copy ?? ceil.copy_GBps ?? 4250) * 1e9, batch = over.batch ?? 256;
  const lines = [`ceilings: int8 ${(int8 / 1e12).toFixed(0)} TOPS, bf16 ${(bf16 / 1e12).toFixed(0)} TFLOP/s, copy ${(copy / 1e9).toFixed(0)} GB/s` +
    ` (${ceil.int8_TOPS ? "PyTorch's, measured in this run" : "defaults"}${ceil.int8_TOPS && !ceil.bf16_TFLOPS ? "; bf16: default" : ""}); batch ${batch}`];
  for (const [name, spec] of [["cifar", gxnorCifar()], ["resnet", resnet18()]] as const) {
    const w = workOf(spec);
    const productsMs = 1e3 * batch * (2 * w.int8Macs / int8 + 2 * w.bf16Macs / bf16 + 2 * w.backwardMacs / bf16);
    const bytesMs = (1e3 * batch * w.bnElements * BYTES_PER_BN_ELEMENT) / copy;
    const torch = results.find((r) => r.kind === "pytorch" && r.model === name && r.mode === "compile" && r.ms_per_step);
    lines.push(`${name}: ${w.layers} products, ${((w.int8Macs + w.bf16Macs) / 1e6).toFixed(0)} M MACs/image forward ` +
      `(${(w.bf16Macs / 1e6).toFixed(0)} M of them float), ${(w.bnElements / 1e6).toFixed(2)} M BN'd elements/image`);
    lines.push(`  floor per step: products ${productsMs.toFixed(2)} ms, bytes ${bytesMs.toFixed(2)} ms -> ` +
      `${(productsMs + bytesMs).toFixed(2)} ms without overlap, ${Math.max(productsMs, bytesMs).toFixed(2)} ms with perfect overlap`);
    if (torch) {
      const budget = torch.ms_per_step / 2;
      lines.push(`  compiled PyTorch ${torch.ms_per_step.toFixed(2)} ms/step -> 2x needs ${budget.toFixed(2)} ms: ` +
        `the products alone at peak are ${((100 * productsMs) / budget).toFixed(0)} % of it, products + bytes ${((100 * (productsMs + bytesMs)) / budget).toFixed(0)} %`);
    }
  }
  return lines;
}

function main(): void {
  const file = opt("bench", "");
  const results: Row[] = file ? JSON.parse(fs.readFileSync(file, "utf8")).results : [];
  const num = (name: string) => {
    const v = opt(name, "");
    if (v === "") return undefined;
    if (!(Number(v) > 0)) throw new Error(`--${name} ${v}: expected a positive number`);
    return Number(v);
  };
  if (file) console.log(`from ${file}`);
  for (const l of floorReport(results, { int8: num("int8-tops"), bf16: num("bf16-tflops"), copy: num("copy-gbps"), batch: num("batch") })) console.log(l);
}

if (require.main === module) main();
