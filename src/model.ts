/**
 * Model: a discrete network living in native memory, with its summary, evaluation and state.
 */
import { Dataset } from "./datasets/dataset";
import { TernlabError } from "./errors";
import { Architecture } from "./models/zoo";
import { GraphBuilder } from "./models/graph";
import { NativeModel, NativeModelSpec, NativeTensor, addon } from "./native";
import { ResolvedModelOptions } from "./options";
import { escapeHtml } from "./metrics";

export interface LayerSummary {
  name: string;
  kind: string;
  inputs: number[];
  shape: [number, number, number];
  dtype: "int8" | "float32";
  weights: number;
  discrete: boolean;
  levels: number;
  bytesPerWeight: number;
  optimizerBytesPerWeight: number;
  params: number;
}

export interface EvaluateResult {
  loss: number;
  top1: number;
  top5: number;
  count: number;
}

const PROPOSALS = { adam: 0, sgd: 1 } as const;
const TAUS = { tanh: 0, linear: 1, logistic: 2 } as const;
export const LOSSES = { squaredHinge: 0, crossEntropy: 1 } as const;

/** Picks the backend: "auto" is CUDA when this build has it and a GPU answers, else the CPU. */
function createNative(spec: NativeModelSpec, o: ResolvedModelOptions): { native: NativeModel; backend: "cpu" | "cuda" } {
  const a = addon();
  const update = {
    proposal: PROPOSALS[o.sampler.proposal],
    tau: TAUS[o.sampler.tau],
    m: o.sampler.m,
    temperature: o.sampler.temperature,
    beta1: o.adam.beta1,
    beta2: o.adam.beta2,
    eps: o.adam.eps,
  };
  if (o.backend === "cuda" || (o.backend === "auto" && a.buildInfo().cuda)) {
    try {
      return { native: new a.NativeModel(spec, update, { kind: "cuda", threads: o.threads }), backend: "cuda" };
    } catch (e) {
      if (o.backend === "cuda") throw e;
      const code = (e as TernlabError).code;
      if (code !== "E_BACKEND" && code !== "E_CUDA") throw e;
    }
  }
  return { native: new a.NativeModel(spec, update, { kind: "cpu", threads: o.threads }), backend: "cpu" };
}

export class Model {
  readonly native: NativeModel;
  readonly backend: "cpu" | "cuda";
  readonly spec: NativeModelSpec;
  readonly layers: LayerSummary[];

  /** `factory` and `factoryArgs` rebuild the same model (checkpoints record them). */
  constructor(
    readonly factory: string,
    readonly factoryArgs: Record<string, unknown>,
    readonly options: ResolvedModelOptions,
    arch: Architecture,
  ) {
    const g = new GraphBuilder(options, arch.input);
    arch.build(g);
    g.checkLayerNames(factory);
    this.spec = {
      h: arch.input[0], w: arch.input[1], c: arch.input[2], classes: arch.classes,
      seed: options.seed, bnEps: options.bnEps, bnMomentum: options.bnMomentum, nodes: g.nodes,
    };
    const { native, backend } = createNative(this.spec, options);
    this.native = native;
    this.backend = backend;
    this.layers = (JSON.parse(native.summary()) as { layers: LayerSummary[] }).layers;
  }

  get inputShape(): [number, number, number] {
    return [this.spec.h, this.spec.w, this.spec.c];
  }
  get classes(): number {
    return this.spec.classes;
  }
  /** The layers with discrete weights: the ones that get flip rates, s_w, s_a, active fraction. */
  get discreteLayers(): string[] {
    return this.layers.filter((l) => l.discrete).map((l) => l.name);
  }
  /** The global step the model has been trained to. */
  get step(): number {
    return this.native.getStep();
  }

  summary(): ModelSummary {
    return new ModelSummary(this);
  }

  /** Loss and top-1/top-5 accuracy (fractions) on a dataset, with batch-norm running statistics. */
  async evaluate(
    data: Dataset,
    opts: { batchSize?: number; loss?: keyof typeof LOSSES; inputScale?: number; inputOffset?: number } = {},
  ): Promise<EvaluateResult> {
    checkDataFits(this, data, "evaluate");
    const r = await this.native.evaluate(
      { images: data.images, labels: data.labels, count: data.count, scale: opts.inputScale ?? 2 / 255, offset: opts.inputOffset ?? -1 },
      opts.batchSize ?? 1000,
      LOSSES[opts.loss ?? "squaredHinge"],
    );
    return { loss: r.loss, top1: r.count ? r.top1 / r.count : NaN, top5: r.count ? r.top5 / r.count : NaN, count: r.count };
  }

  /** All tensors of the model's state (weights as int8 states, BN, optimizer moments). */
  state(): NativeTensor[] {
    return this.native.getState();
  }
  loadState(tensors: { name: string; dtype: string; data: Uint8Array }[], step: number): void {
    this.native.setState(tensors);
    this.native.setStep(step);
  }

  [Symbol.for("Jupyter.display")](): Record<string, unknown> {
    return this.summary().mimeBundle();
  }
}

export function checkDataFits(model: Model, data: Dataset, where: string): void {
  const [h, w, c] = model.inputShape;
  if (data.height !== h || data.width !== w || data.channels !== c)
    throw new TernlabError(
      "E_SHAPE",
      `${where}: dataset "${data.name}" holds ${data.height}x${data.width}x${data.channels} images but the model takes ${h}x${w}x${c}. ` +
        `Load it with size [${h}, ${w}] (and channels ${c}), or build the model with input [${data.height}, ${data.width}, ${data.channels}].`,
    );
  if (data.numClasses > model.classes)
    throw new TernlabError(
      "E_SHAPE",
      `${where}: dataset "${data.name}" has ${data.numClasses} classes but the model outputs ${model.classes}. Build the model with classes: ${data.numClasses}.`,
    );
}

/** What `model.summary()` shows: layers, shapes, states, bytes per weight. */
export class ModelSummary {
  readonly rows: LayerSummary[];
  readonly discreteWeights: number;
  readonly floatWeights: number;
  readonly weightBytes: number;
  readonly optimizerBytes: number;
  readonly backend: string;
  constructor(readonly model: Model) {
    this.rows = model.layers;
    this.discreteWeights = this.rows.filter((r) => r.discrete).reduce((s, r) => s + r.weights, 0);
    this.floatWeights = this.rows.filter((r) => !r.discrete).reduce((s, r) => s + r.weights, 0);
    this.weightBytes = this.rows.reduce((s, r) => s + r.weights * r.bytesPerWeight, 0);
    this.optimizerBytes = this.rows.reduce((s, r) => s + r.weights * r.optimizerBytesPerWeight, 0);
    this.backend = model.backend;
  }
  private states(r: LayerSummary): string {
    if (!r.weights) return "";
    if (!r.discrete) return "float32";
    const n = r.levels;
    return n === 0 ? "{-1,+1}" : n === 1 ? "{-1,0,+1}" : `Z_${n} (${2 ** n + 1} states)`;
  }
  toString(): string {
    const head = ["layer", "kind", "output", "weights", "states", "bytes/weight", "optimizer bytes/weight"];
    const body = this.rows.map((r) => [
      r.name, r.kind, r.shape.join("x"), r.weights ? String(r.weights) : "", this.states(r),
      r.weights ? String(r.bytesPerWeight) : "", r.weights ? String(r.optimizerBytesPerWeight) : "",
    ]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
    const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ");
    return [
      line(head), ...body.map(line),
      `discrete weights: ${this.discreteWeights} (int8 states, ${this.discreteWeights} bytes; 2 bits each in a checkpoint)` +
        `, full-precision weights: ${this.floatWeights}, optimizer state: ${this.optimizerBytes} bytes, backend: ${this.backend}`,
    ].join("\n");
  }
  toHtml(): string {
    const th = ["layer", "kind", "output", "weights", "states", "bytes/weight", "optimizer bytes/weight"].map((h) => `<th>${h}</th>`).join("");
    const rows = this.rows
      .map((r) =>
        "<tr>" +
        [r.name, r.kind, r.shape.join("×"), r.weights || "", this.states(r), r.weights ? r.bytesPerWeight : "", r.weights ? r.optimizerBytesPerWeight : ""]
          .map((c) => `<td>${escapeHtml(String(c))}</td>`)
          .join("") +
        "</tr>",
      )
      .join("");
    return (
      `<table class="ternlab-summary"><thead><tr>${th}</tr></thead><tbody>${rows}</tbody></table>` +
      `<p>${this.discreteWeights.toLocaleString("en")} discrete weights (1 byte each in memory, 2 bits in a checkpoint); ` +
      `${this.floatWeights.toLocaleString("en")} full-precision weights; optimizer state ${this.optimizerBytes.toLocaleString("en")} bytes; backend ${this.backend}.</p>`
    );
  }
  mimeBundle(): Record<string, unknown> {
    return { "text/plain": this.toString(), "text/html": this.toHtml() };
  }
  [Symbol.for("Jupyter.display")](): Record<string, unknown> {
    return this.mimeBundle();
  }
}
