/**
 * The model factories. Each is a pure function from options to a graph; `models.*` in index.ts
 * wraps them into ready Models.
 */
import { ResolvedModelOptions } from "../options";
import { GraphBuilder } from "./graph";

export interface Architecture {
  input: [number, number, number];
  classes: number;
  build(g: GraphBuilder): void;
}

/** A ternary MLP: flatten → [dense → BN → φ]* → dense → BN. */
export function mlp(o: ResolvedModelOptions, hidden: number[]): Architecture {
  return {
    input: o.input ?? [28, 28, 1],
    classes: o.classes ?? 10,
    build(g) {
      let x = g.flatten(g.input);
      for (const h of hidden) x = g.bnAct(g.dense(x, h));
      g.batchNorm(g.dense(x, o.classes ?? 10));
    },
  };
}

/** The paper's MNIST network: 32C5 → MP2 → BN → φ → 64C5 → MP2 → BN → φ → FC512 → BN → φ → FC10 → BN. */
export function mnistCnn(o: ResolvedModelOptions, width = 1): Architecture {
  const c = (n: number) => Math.max(1, Math.round(n * width));
  return {
    input: o.input ?? [28, 28, 1],
    classes: o.classes ?? 10,
    build(g) {
      let x = g.bnAct(g.maxPool(g.conv2d(g.input, c(32), { kernel: 5 })));
      x = g.bnAct(g.maxPool(g.conv2d(x, c(64), { kernel: 5 })));
      x = g.bnAct(g.dense(g.flatten(x), c(512)));
      g.batchNorm(g.dense(x, o.classes ?? 10));
    },
  };
}

/**
 * The paper's CIFAR-10 VGG net: 2×128C3 → MP2 → 2×256C3 → MP2 → 2×512C3 → MP2 → FC1024 → FC10;
 * BN and φ after every layer but the last (BN only), max-pool before BN, padding 1. Dense layers
 * start from U(−1.5, 1.5) as in the released code.
 */
export function cifarVgg(o: ResolvedModelOptions, width = 1): Architecture {
  const c = (n: number) => Math.max(1, Math.round(n * width));
  return {
    input: o.input ?? [32, 32, 3],
    classes: o.classes ?? 10,
    build(g) {
      let x = g.input;
      for (const [ch, pool] of [[128, false], [128, true], [256, false], [256, true], [512, false], [512, true]] as const) {
        const y = g.conv2d(x, c(ch), { kernel: 3, padding: 1 });
        x = g.bnAct(pool ? g.maxPool(y) : y);
      }
      x = g.bnAct(g.dense(g.flatten(x), c(1024), { initSpread: 1.5 }));
      g.batchNorm(g.dense(x, o.classes ?? 10, { initSpread: 1.5 }));
    },
  };
}

/**
 * ResNet-18 with ternary weights and activations except the first conv and the last dense layer
 * (full precision, as usual in the literature). The residual stream stays real-valued: each block
 * quantises its input with φ, and adds its BN output to the stream (shortcut: identity, or a
 * ternary 1×1 conv + BN when the shape changes). For inputs below 64×64 the stem is a 3×3 conv
 * without the max-pool (the CIFAR variant).
 */
export function resnet18(o: ResolvedModelOptions): Architecture {
  const input = o.input ?? [224, 224, 3];
  const classes = o.classes ?? 1000;
  return {
    input,
    classes,
    build(g) {
      const small = input[0] < 64;
      let h = small
        ? g.batchNorm(g.conv2d(g.input, 64, { kernel: 3, padding: 1, discrete: false }))
        : g.maxPool(g.batchNorm(g.conv2d(g.input, 64, { kernel: 7, stride: 2, padding: 3, discrete: false })), 3, 2, 1);
      let channels = 64;
      for (const [out, stride] of [[64, 1], [64, 1], [128, 2], [128, 1], [256, 2], [256, 1], [512, 2], [512, 1]] as const) {
        const t = g.activation(h);
        let y = g.bnAct(g.conv2d(t, out, { kernel: 3, stride, padding: 1 }));
        y = g.batchNorm(g.conv2d(y, out, { kernel: 3, padding: 1 }));
        const shortcut = stride !== 1 || out !== channels ? g.batchNorm(g.conv2d(t, out, { kernel: 1, stride })) : h;
        h = g.add(y, shortcut);
        channels = out;
      }
      const spatial = small ? Math.ceil(input[0] / 8) : Math.ceil(input[0] / 32);
      const pooled = g.avgPool(h, spatial, spatial);
      g.dense(g.flatten(pooled), classes, { discrete: false });
    },
  };
}

/**
 * AlexNet (the torchvision layout: 64-192-384-256-256, FC 4096-4096), ternary except the first
 * conv and the last dense layer. Small inputs (< 64×64) use a 3×3 stride-1 stem and 2×2 pools.
 */
export function alexnet(o: ResolvedModelOptions): Architecture {
  const input = o.input ?? [224, 224, 3];
  const classes = o.classes ?? 1000;
  return {
    input,
    classes,
    build(g) {
      const small = input[0] < 64;
      let x = small
        ? g.conv2d(g.input, 64, { kernel: 3, padding: 1, discrete: false })
        : g.conv2d(g.input, 64, { kernel: 11, stride: 4, padding: 2, discrete: false });
      x = g.bnAct(small ? g.maxPool(x, 2) : g.maxPool(x, 3, 2));
      x = g.conv2d(x, 192, { kernel: small ? 3 : 5, padding: small ? 1 : 2 });
      x = g.bnAct(small ? g.maxPool(x, 2) : g.maxPool(x, 3, 2));
      x = g.bnAct(g.conv2d(x, 384, { kernel: 3, padding: 1 }));
      x = g.bnAct(g.conv2d(x, 256, { kernel: 3, padding: 1 }));
      x = g.conv2d(x, 256, { kernel: 3, padding: 1 });
      x = g.bnAct(small ? g.maxPool(x, 2) : g.maxPool(x, 3, 2));
      x = g.bnAct(g.dense(g.flatten(x), 4096));
      x = g.bnAct(g.dense(x, 4096));
      g.dense(x, classes, { discrete: false });
    },
  };
}
