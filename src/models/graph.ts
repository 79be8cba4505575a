/**
 * A small builder for model graphs: each call appends one node and returns its index. The native
 * core receives the node list as it is (kinds match native/core/model.h's OpKind).
 */
import { NativeNodeSpec } from "../native";
import { TernlabError } from "../errors";
import { ResolvedModelOptions } from "../options";

export const OpKind = { input: 0, conv2d: 1, dense: 2, maxPool: 3, avgPool: 4, batchNorm: 5, activation: 6, flatten: 7, add: 8 } as const;
const WINDOWS = { rectangular: 0, triangular: 1, gaussian: 2, logistic: 3 } as const;

export interface ConvOptions {
  kernel?: number | [number, number];
  stride?: number | [number, number];
  padding?: number | [number, number];
  /** false: a full-precision layer (as ResNet's first conv); default: discrete weights. */
  discrete?: boolean;
  initSpread?: number;
  name?: string;
}

const pair = (v: number | [number, number] | undefined, d: number): [number, number] =>
  v === undefined ? [d, d] : typeof v === "number" ? [v, v] : v;

export class GraphBuilder {
  readonly nodes: NativeNodeSpec[] = [];
  private counts = new Map<string, number>();
  constructor(private readonly opts: ResolvedModelOptions, readonly inputShape: [number, number, number]) {
    this.nodes.push({ kind: OpKind.input, name: "input", inputs: [] });
  }
  get input(): number {
    return 0;
  }
  private name(prefix: string, given?: string): string {
    if (given) return given;
    const n = (this.counts.get(prefix) ?? 0) + 1;
    this.counts.set(prefix, n);
    return `${prefix}${n}`;
  }
  private push(spec: NativeNodeSpec): number {
    this.nodes.push(spec);
    return this.nodes.length - 1;
  }
  private levelsOf(name: string): number {
    return this.opts.layerWeightLevels[name] ?? this.opts.weightLevels;
  }
  conv2d(x: number, out: number, o: ConvOptions = {}): number {
    const [kh, kw] = pair(o.kernel, 3);
    const [sh, sw] = pair(o.stride, 1);
    const [ph, pw] = pair(o.padding, 0);
    const name = this.name("conv", o.name);
    return this.push({
      kind: OpKind.conv2d, name, inputs: [x], out, kh, kw, sh, sw, ph, pw,
      discrete: o.discrete ?? true, levels: this.levelsOf(name), initSpread: o.initSpread ?? 1,
    });
  }
  dense(x: number, out: number, o: Omit<ConvOptions, "kernel" | "stride" | "padding"> = {}): number {
    const name = this.name("dense", o.name);
    return this.push({
      kind: OpKind.dense, name, inputs: [x], out,
      discrete: o.discrete ?? true, levels: this.levelsOf(name), initSpread: o.initSpread ?? 1,
    });
  }
  /** Layer-name options must name layers of this graph. */
  checkLayerNames(where: string): void {
    const names = new Set(this.nodes.filter((n) => n.kind === OpKind.conv2d || n.kind === OpKind.dense).map((n) => n.name));
    for (const k of Object.keys(this.opts.layerWeightLevels))
      if (!names.has(k))
        throw new TernlabError("E_OPTION", `option "${where}.layerWeightLevels" names layer "${k}", which this model does not have; its weight layers are ${[...names].join(", ")}.`);
  }
  maxPool(x: number, size = 2, stride = size, padding = 0): number {
    return this.push({ kind: OpKind.maxPool, name: this.name("maxpool"), inputs: [x], kh: size, kw: size, sh: stride, sw: stride, ph: padding, pw: padding });
  }
  avgPool(x: number, size = 2, stride = size, padding = 0): number {
    return this.push({ kind: OpKind.avgPool, name: this.name("avgpool"), inputs: [x], kh: size, kw: size, sh: stride, sw: stride, ph: padding, pw: padding });
  }
  batchNorm(x: number): number {
    return this.push({ kind: OpKind.batchNorm, name: this.name("bn"), inputs: [x] });
  }
  activation(x: number): number {
    const a = this.opts.activation;
    return this.push({
      kind: OpKind.activation, name: this.name("act"), inputs: [x],
      act: { levels: a.levels, r: a.r, a: a.a, window: WINDOWS[a.window] },
    });
  }
  flatten(x: number): number {
    return this.push({ kind: OpKind.flatten, name: this.name("flatten"), inputs: [x] });
  }
  add(a: number, b: number): number {
    return this.push({ kind: OpKind.add, name: this.name("add"), inputs: [a, b] });
  }
  /** BN then φ: the released code's block tail. */
  bnAct(x: number): number {
    return this.activation(this.batchNorm(x));
  }
}
