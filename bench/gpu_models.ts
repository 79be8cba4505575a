// Model specs for the GPU tests, benchmark and results runs, built directly for the addon's
// NativeModel (the TypeScript `models.*` factories are the public way; these scripts talk to the
// addon so that they depend on nothing but the native build).
import * as path from "path";

export const OP = { input: 0, conv: 1, dense: 2, maxPool: 3, avgPool: 4, batchNorm: 5, activation: 6, flatten: 7, add: 8 };

export interface NodeSpec {
  kind: number;
  name: string;
  inputs: number[];
  out?: number;
  kh?: number; kw?: number; sh?: number; sw?: number; ph?: number; pw?: number;
  discrete?: boolean;
  levels?: number;
  initSpread?: number;
  act?: { levels: number; r: number; a: number; window: number };
}
export interface ModelSpec { h: number; w: number; c: number; classes: number; seed: number; nodes: NodeSpec[]; bnEps?: number; bnMomentum?: number }

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function loadAddon(): any {
  // dist/bench/ or dist/test/gpu/ → the repository root
  for (const up of ["../..", "../../.."]) {
    const p = path.resolve(__dirname, up, "build/Release/ternlab.node");
    try {
      return require(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "MODULE_NOT_FOUND") throw e;
    }
  }
  throw new Error("build/Release/ternlab.node not found: run npm run build");
}

class Builder {
  nodes: NodeSpec[] = [{ kind: OP.input, name: "input", inputs: [] }];
  last = 0;
  add(n: NodeSpec): number {
    this.nodes.push(n);
    this.last = this.nodes.length - 1;
    return this.last;
  }
  conv(name: string, out: number, k: number, pad: number, stride = 1, discrete = true): this {
    this.add({ kind: OP.conv, name, inputs: [this.last], out, kh: k, kw: k, sh: stride, sw: stride, ph: pad, pw: pad, discrete, levels: 1, initSpread: 1 });
    return this;
  }
  dense(name: string, out: number, spread = 1, discrete = true): this {
    this.add({ kind: OP.dense, name, inputs: [this.last], out, discrete, levels: 1, initSpread: spread });
    return this;
  }
  pool(name: string, k = 2, s = 2, pad = 0, max = true): this {
    this.add({ kind: max ? OP.maxPool : OP.avgPool, name, inputs: [this.last], kh: k, kw: k, sh: s, sw: s, ph: pad, pw: pad });
    return this;
  }
  bn(name: string): this {
    this.add({ kind: OP.batchNorm, name, inputs: [this.last] });
    return this;
  }
  act(name: string): this {
    this.add({ kind: OP.activation, name, inputs: [this.last], act: { levels: 1, r: 1, a: 0.5, window: 0 } });
    return this;
  }
  flatten(): this {
    this.add({ kind: OP.flatten, name: "flatten", inputs: [this.last] });
    return this;
  }
}

// The paper's CIFAR-10 net (ALGORITHM.md §1.4): 2×128C3 → MP2 → 2×256C3 → MP2 → 2×512C3 → MP2 →
// FC1024 → FC10, BN and φ after every layer but the last (BN only), MP before BN. `width` scales
// the channel counts (1 = the paper's).
export function gxnorCifar(seed = 1, width = 1): ModelSpec {
  const b = new Builder();
  const c = (x: number) => Math.max(1, Math.round(x * width));
  b.conv("conv1", c(128), 3, 1).bn("bn1").act("act1");
  b.conv("conv2", c(128), 3, 1).pool("pool2").bn("bn2").act("act2");
  b.conv("conv3", c(256), 3, 1).bn("bn3").act("act3");
  b.conv("conv4", c(256), 3, 1).pool("pool4").bn("bn4").act("act4");
  b.conv("conv5", c(512), 3, 1).bn("bn5").act("act5");
  b.conv("conv6", c(512), 3, 1).pool("pool6").bn("bn6").act("act6");
  b.flatten().dense("fc7", c(1024), 1.5).bn("bn7").act("act7");
  b.dense("fc8", 10, 1.5).bn("bn8");
  return { h: 32, w: 32, c: 3, classes: 10, seed, nodes: b.nodes, bnEps: 1e-4, bnMomentum: 0.1 };
}

// The paper's MNIST net: 32C5 → MP2 → BN → φ → 64C5 → MP2 → BN → φ → FC512 → BN → φ → FC10 → BN.
export function gxnorMnist(seed = 1): ModelSpec {
  const b = new Builder();
  b.conv("conv1", 32, 5, 0).pool("pool1").bn("bn1").act("act1");
  b.conv("conv2", 64, 5, 0).pool("pool2").bn("bn2").act("act2");
  b.flatten().dense("fc3", 512).bn("bn3").act("act3");
  b.dense("fc4", 10).bn("bn4");
  return { h: 28, w: 28, c: 1, classes: 10, seed, nodes: b.nodes, bnEps: 1e-4, bnMomentum: 0.1 };
}

// A small convnet with every op kind the model graph has (conv, strided conv, max and average
// pooling, a residual add, dense), for the CPU/GPU training agreement test.
export function tinyNet(seed = 7): ModelSpec {
  const b = new Builder();
  b.conv("conv1", 16, 3, 1).bn("bn1").act("act1");
  b.conv("conv2", 16, 3, 1).bn("bn2");
  const skipFrom = b.last;
  b.act("act2").conv("conv3", 16, 3, 1).bn("bn3");
  b.add({ kind: OP.add, name: "res", inputs: [skipFrom, b.last] });
  b.act("act3").conv("conv4", 32, 3, 1, 2).pool("pool4").pool("avg5", 2, 2, 0, false).bn("bn4").act("act4");
  b.flatten().dense("fc5", 10).bn("bn5");
  return { h: 16, w: 16, c: 3, classes: 10, seed, nodes: b.nodes, bnEps: 1e-4, bnMomentum: 0.1 };
}

// ResNet-18 (ternary except the first conv and the last dense layer), for ImageNet-shaped input.
export function resnet18(seed = 1, size = 224, classes = 1000): ModelSpec {
  const b = new Builder();
  const big = size >= 128;
  if (big) b.conv("conv1", 64, 7, 3, 2, false).pool("pool1", 3, 2, 1).bn("bn1").act("act1");
  else b.conv("conv1", 64, 3, 1, 1, false).bn("bn1").act("act1");
  let chans = 64, lastAdd = 0;
  const stages = [64, 128, 256, 512];
  stages.forEach((oc, si) => {
    for (let blk = 0; blk < 2; ++blk) {
      const stride = si > 0 && blk === 0 ? 2 : 1;
      const inp = b.last;
      const p = `s${si + 1}b${blk + 1}`;
      b.conv(`${p}.conv1`, oc, 3, 1, stride).bn(`${p}.bn1`).act(`${p}.act1`);
      b.conv(`${p}.conv2`, oc, 3, 1).bn(`${p}.bn2`);
      const main = b.last;
      let skip = inp;
      if (stride !== 1 || chans !== oc) {
        b.last = inp;
        b.conv(`${p}.down`, oc, 1, 0, stride).bn(`${p}.downbn`);
        skip = b.last;
      } else if (b.nodes[inp].kind === OP.activation) {
        // the skip path carries the block input (int8 states); add takes real values, so take
        // the BN output that fed the activation
        skip = b.nodes[inp].inputs[0];
      }
      b.add({ kind: OP.add, name: `${p}.add`, inputs: [main, skip] });
      lastAdd = b.last;
      if (!(si === stages.length - 1 && blk === 1)) b.act(`${p}.act2`);  // the last block feeds the pool its real values
      chans = oc;
    }
  });
  const final = size / (big ? 32 : 8);
  b.last = lastAdd;  // pool the residual stream (real values), not the last activation
  b.pool("avgpool", final, final, 0, false).flatten().dense("fc", classes, 1, false).bn("bnfc");
  return { h: size, w: size, c: 3, classes, seed, nodes: b.nodes, bnEps: 1e-4, bnMomentum: 0.1 };
}

export function updateConfig(): Record<string, number> {
  return { proposal: 0, tau: 0, m: 3, temperature: 1, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
}
