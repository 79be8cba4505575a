// Memory a model holds once its buffers exist for a batch (weights, optimizer state, activations,
// gradients, scratch), per backend: the allocation plan is the model's (native/core/model.cpp),
// so the CPU backend shows the same activation/gradient plan the GPU uses (the CUDA backend adds
// its own scratch: converted operands, cuDNN workspace, partial sums).
//   node dist/bench/memory.js [--backend cpu|cuda] [--batch 256]
import { gxnorCifar, loadAddon, resnet18, updateConfig } from "./gpu_models";

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};

async function main(): Promise<void> {
  const addon = loadAddon();
  const kind = opt("backend", "cpu"), batch = Number(opt("batch", "256"));
  for (const [name, spec] of [["cifar", gxnorCifar(1)], ["resnet18-224", resnet18(1, 224, 1000)]] as const) {
    const m = new addon.NativeModel(spec, updateConfig(), { kind, threads: 0 });
    const per = spec.h * spec.w * spec.c;
    const images = new Uint8Array(batch * per), labels = new Int32Array(batch);
    // one evaluation pass allocates every activation and gradient buffer for the batch
    await m.evaluate({ images, labels, count: batch }, batch, 0);
    console.log(JSON.stringify({ model: name, backend: kind, batch, MiB: +(m.memoryInUse() / 2 ** 20).toFixed(1) }));
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
