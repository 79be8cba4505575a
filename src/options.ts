/**
 * Every option of ternlab, validated in one place (DESIGN.md "Options"): unknown keys, wrong types
 * and out-of-range values give E_OPTION naming the key path, the value and what is allowed.
 */
import { z } from "zod";
import { TernlabError } from "./errors";

const positive = z.number().positive().finite();
const nonNegative = z.number().min(0).finite();

export const scheduleSchema = z.union([
  nonNegative,
  z.object({ kind: z.literal("constant"), value: nonNegative }).strict(),
  z
    .object({
      kind: z.literal("geometric"),
      start: nonNegative,
      end: nonNegative,
      per: z.enum(["epoch", "step"]).default("epoch"),
      warmupEpochs: z.number().int().min(0).default(0),
    })
    .strict(),
  z.object({ kind: z.literal("linear"), start: nonNegative, end: nonNegative, per: z.enum(["epoch", "step"]).default("step") }).strict(),
  z.object({ kind: z.literal("cosine"), start: nonNegative, end: nonNegative, per: z.enum(["epoch", "step"]).default("step") }).strict(),
  z.object({ kind: z.literal("exponential"), start: nonNegative, rate: positive, per: z.enum(["epoch", "step"]).default("epoch") }).strict(),
  z
    .object({
      kind: z.literal("step"),
      start: nonNegative,
      factor: positive,
      at: z.array(z.number().int().min(1)).min(1),
    })
    .strict(),
]);
export type ScheduleSpec = z.input<typeof scheduleSchema>;

export const activationSchema = z
  .object({
    levels: z.number().int().min(0).max(6).default(1),
    r: positive.default(1),
    a: positive.default(0.5),
    window: z.enum(["rectangular", "triangular", "gaussian", "logistic"]).default("rectangular"),
  })
  .strict();

export const samplerSchema = z
  .object({
    rule: z.literal("dst").default("dst"),
    proposal: z.enum(["adam", "sgd"]).default("adam"),
    tau: z.enum(["tanh", "linear", "logistic"]).default("tanh"),
    m: positive.default(3),
    temperature: positive.default(1),
  })
  .strict();

export const modelOptionsSchema = z
  .object({
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
    backend: z.enum(["cpu", "cuda", "auto"]).default("auto"),
    threads: z.number().int().min(0).max(1024).default(0),
    weightLevels: z.number().int().min(0).max(6).default(1),
    /** Per-layer Z_N, by layer name (e.g. { conv1: 2 }); the rest use weightLevels. */
    layerWeightLevels: z.record(z.string(), z.number().int().min(0).max(6)).default({}),
    activation: activationSchema.default(activationSchema.parse({})),
    sampler: samplerSchema.default(samplerSchema.parse({})),
    adam: z
      .object({ beta1: z.number().min(0).max(1).default(0.9), beta2: z.number().min(0).max(1).default(0.999), eps: positive.default(1e-8) })
      .strict()
      .default({ beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
    bnEps: positive.default(1e-4),
    bnMomentum: z.number().min(0).max(1).default(0.1),
    input: z.tuple([z.number().int().min(1), z.number().int().min(1), z.number().int().min(1)]).optional(),
    classes: z.number().int().min(2).optional(),
  })
  .strict();
export type ModelOptions = z.input<typeof modelOptionsSchema>;
export type ResolvedModelOptions = z.output<typeof modelOptionsSchema>;

export const trainOptionsSchema = z
  .object({
    epochs: z.number().int().min(1).max(1_000_000),
    batchSize: z.number().int().min(1).max(1 << 20).default(100),
    learningRate: scheduleSchema.default({ kind: "geometric", start: 0.01, end: 0.001, per: "epoch", warmupEpochs: 0 }),
    loss: z.enum(["squaredHinge", "crossEntropy"]).default("squaredHinge"),
    shuffle: z.boolean().default(true),
    /** Training batches only, drawn per step and sample from Philox (same on every backend, across resume). */
    augment: z
      .object({
        /** horizontal flip with probability ½ */
        flip: z.boolean().default(false),
        /** random crop of the image zero-padded by this many pixels (a shift in [−crop, crop]² each way) */
        crop: z.number().int().min(0).max(64).default(0),
        /** cutout: a square of this side set to mid-grey (pixel 128), centred uniformly over the image, after flip and crop */
        cutout: z.number().int().min(0).max(256).default(0),
      })
      .strict()
      .default({ flip: false, crop: 0, cutout: 0 }),
    inputScale: z.number().finite().default(2 / 255),
    inputOffset: z.number().finite().default(-1),
    evalBatchSize: z.number().int().min(1).default(1000),
    validationFraction: z.number().min(0).max(0.5).default(0),
    outDir: z.string().min(1).optional(),
    resumeFrom: z.string().min(1).optional(),
    report: z.boolean().default(true),
    onProgress: z.any().optional(),
    signal: z.any().optional(),
    name: z.string().optional(),
  })
  .strict();
export type TrainOptions = Omit<z.input<typeof trainOptionsSchema>, "onProgress" | "signal"> & {
  /** Called as step reports arrive (batched) and after each epoch's evaluation. */
  onProgress?: (p: import("./train").Progress) => void;
  /** Aborting it cancels the training at the next step. */
  signal?: AbortSignal;
};
export type ResolvedTrainOptions = z.output<typeof trainOptionsSchema>;

function valueAt(root: unknown, path: PropertyKey[]): unknown {
  let v: unknown = root;
  for (const k of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

function show(v: unknown): string {
  if (typeof v === "function") return "a function";
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 80 ? s.slice(0, 77) + "..." : s;
  } catch {
    return String(v);
  }
}

/** Parses `value` with `schema`; on failure throws E_OPTION naming `where.path`, the value and the rule. */
export function parseOptions<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const r = schema.safeParse(value ?? {});
  if (r.success) return r.data;
  const lines = r.error.issues.slice(0, 3).map((issue) => {
    const path = [where, ...issue.path.map(String)].join(".");
    if (issue.code === "unrecognized_keys") {
      const keys = (issue as { keys: string[] }).keys;
      return `option "${path}" has unknown key(s) ${keys.map((k) => `"${k}"`).join(", ")}`;
    }
    const got = valueAt(value, issue.path);
    return `option "${path}" is ${got === undefined ? "missing" : show(got)}: ${issue.message}`;
  });
  throw new TernlabError("E_OPTION", lines.join("; ") + ".");
}
