// Memory a model holds once its buffers exist for a batch (weights, optimizer state, activations,
// gradients, scratch), per backend: the allocation plan is the model's (native/core/model.cpp),
// so the CPU backend shows the same activation/gradient plan the GPU uses (the CUDA backend adds
// its own scratch: converted operands, cuDNN workspace, partial sums).
//   node dist/bench/memory.js [--backend cpu|cuda] [--batch 256] [--evaluate] [--buffers]
// The buffers are allocated without computing (ensureCapacity); --evaluate then runs one
// evaluation pass and checks that it holds the same bytes. --buffers lists the arena's plan.
import { gxnorCifar, loadAddon, ModelSpec, OP, resnet18, updateConfig } from "./gpu_models";
import { flag, opt } from "./args";


interface Planned { node: number; layer: string; use: string; from: number; to: number; offset: number; bytes: number }
interface Report {
  batch: number; shared: boolean; steps: number; arena: number;
  weights: number; weightGradients: number; optimizer: number; batchNorm: number; other: number;
  buffers: Planned[];
}

const MiB = (b: number) => +(b / 2 ** 20).toFixed(1);

// Outputs by what reads them in backward (those live past the loss step, steps / 2): a conv's or
// pool's output there holds its BN's x̂, an activation's int8 states are the next conv's x, a BN's
// or add's output is the input of φ′ (an unfused activation).
function category(p: Planned, r: Report, spec: ModelSpec): string {
  if (p.use !== "output") return p.use;
  if (p.to <= r.steps / 2) return "output (forward only)";
  const kind = spec.nodes[p.node].kind;
  if (kind === OP.activation) return "output (φ states)";
  if (kind === OP.batchNorm || kind === OP.add) return "output (φ′ input)";
  return "output (holding x̂)";
}

// The arena's buffers by category: their own bytes (what separate buffers would hold) and what is
// live at the step where the most is live (the least any placement of them can take).
export function breakdown(r: Report, spec: ModelSpec): Record<string, unknown> {
  const category_ = (p: Planned) => category(p, r, spec);
  const own: Record<string, number> = {};
  for (const p of r.buffers) own[category_(p)] = (own[category_(p)] ?? 0) + p.bytes;
  let peak = 0, peakStep = 0;
  for (let t = 1; t <= r.steps; ++t) {
    const live = r.buffers.reduce((s, p) => s + (p.from <= t && t <= p.to ? p.bytes : 0), 0);
    if (live > peak) [peak, peakStep] = [live, t];
  }
  const atPeak: Record<string, number> = {};
  for (const p of r.buffers)
    if (p.from <= peakStep && peakStep <= p.to) atPeak[category_(p)] = (atPeak[category_(p)] ?? 0) + p.bytes;
  const mib = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, MiB(v)]));
  const nodes = r.steps / 2;
  const where = peakStep < nodes ? `forward of node ${peakStep}` : peakStep === nodes ? "loss" : peakStep === r.steps ? "update" : `backward of node ${r.steps - peakStep}`;
  return {
    arena: MiB(r.arena), arenaUnshared: MiB(r.buffers.reduce((s, p) => s + p.bytes, 0)), peakLive: MiB(peak), peakAt: where,
    arenaBuffers: mib(own), liveAtPeak: mib(atPeak),
    fixed: mib({ weights: r.weights, weightGradients: r.weightGradients, optimizer: r.optimizer, batchNorm: r.batchNorm, other: r.other }),
  };
}

async function main(): Promise<void> {
  const addon = loadAddon();
  const kind = opt("backend", "cpu"), batch = Number(opt("batch", "256"));
  for (const [name, spec] of [["cifar", gxnorCifar(1)], ["resnet18-224", resnet18(1, 224, 1000)]] as const) {
    const m = new addon.NativeModel(spec, updateConfig(), { kind, threads: 0 });
    m.ensureCapacity(batch);
    const bytes = m.memoryInUse();
    const report: Report = JSON.parse(m.memoryReport());
    const out: Record<string, unknown> = { model: name, backend: kind, batch, MiB: MiB(bytes) };
    if (flag("evaluate")) {
      // a real pass allocates nothing more: the plan is all the model holds
      const per = spec.h * spec.w * spec.c;
      const images = new Uint8Array(batch * per), labels = new Int32Array(batch);
      await m.evaluate({ images, labels, count: batch }, batch, 0);
      out.MiBAfterEvaluate = MiB(m.memoryInUse());
      if (m.memoryInUse() !== bytes) throw new Error(`${name}: ${m.memoryInUse()} bytes after an evaluation pass, ${bytes} planned`);
    }
    console.log(JSON.stringify(out));
    console.log(JSON.stringify(breakdown(report, spec)));
    if (flag("buffers"))
      for (const p of report.buffers) console.log(JSON.stringify({ layer: p.layer, use: p.use, from: p.from, to: p.to, offset: p.offset, MiB: MiB(p.bytes) }));
  }
}
if (require.main === module)
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
