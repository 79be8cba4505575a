/**
 * The only file that touches the native addon (DESIGN.md). Everything the addon throws comes back
 * as a TernlabError with the native Status's code.
 */
import * as path from "path";
import { TernlabError, fromNativeError } from "./errors";

export interface NativeLayerCounters {
  name: string;
  weights: number;
  inputs: number;
  macs: number;
  zeroWeights: number;
  zeroInputs: number;
  activeMacs: number;
  flips: number;
  integerInput: boolean;
}

export interface NativeStepReport {
  step: number;
  epoch: number;
  loss: number;
  trainAccuracy: number;
  learningRate: number;
  seconds: number;
  batch: number;
  layers: NativeLayerCounters[];
}

export interface NativeTensor {
  name: string;
  dtype: "int8" | "float32";
  shape: number[];
  data: Uint8Array;
}

export interface NativeData {
  images: Uint8Array;
  labels: Int32Array;
  count: number;
  scale: number;
  offset: number;
}

export interface NativeNodeSpec {
  kind: number;
  name: string;
  inputs: number[];
  out?: number;
  kh?: number;
  kw?: number;
  sh?: number;
  sw?: number;
  ph?: number;
  pw?: number;
  discrete?: boolean;
  levels?: number;
  initSpread?: number;
  act?: { levels: number; r: number; a: number; window: number };
}

export interface NativeModelSpec {
  h: number;
  w: number;
  c: number;
  classes: number;
  seed: number;
  bnEps: number;
  bnMomentum: number;
  nodes: NativeNodeSpec[];
}

export interface NativeUpdateConfig {
  proposal: number;
  tau: number;
  m: number;
  temperature: number;
  beta1: number;
  beta2: number;
  eps: number;
}

export interface NativeModel {
  summary(): string;
  train(
    data: NativeData,
    plan: { epoch: number; batch: number; firstStep: number; begin: number; end: number; loss: number; shuffle: boolean; lr: Float32Array; augmentFlip?: boolean; augmentPad?: number; augmentCutout?: number },
    onSteps: (rows: NativeStepReport[]) => void,
  ): Promise<{ steps: number; cancelled: boolean }>;
  evaluate(data: NativeData, batch: number, loss: number): Promise<{ loss: number; count: number; top1: number; top5: number }>;
  cancel(): void;
  getState(): NativeTensor[];
  setState(tensors: { name: string; dtype: string; data: Uint8Array }[]): void;
  getStep(): number;
  setStep(step: number): void;
  memoryInUse(): number;
  /** JSON: the activation arena's plan (each buffer's layer, use, live steps, offset, bytes) and the other buffers by category. */
  memoryReport(): string;
  /** Allocates the buffers for batches up to `batch` without computing (train and evaluate do it themselves). */
  ensureCapacity(batch: number): void;
}

export interface Addon {
  NativeModel: new (spec: NativeModelSpec, update: NativeUpdateConfig, backend: { kind: string; threads: number }) => NativeModel;
  buildInfo(): { cuda: boolean; kernelPath: string; bestKernelPath: string; hardwareThreads: number };
  philox(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number): Uint32Array;
  setKernelPath(path: string): boolean;
  packStates(q: Int8Array, levels: number): Buffer;
  unpackStates(packed: Uint8Array, n: number, levels: number): Int8Array;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  ops: Record<string, (...args: any[]) => any>;
}

let cached: Addon | null = null;

/** The addon, loaded once. */
export function addon(): Addon {
  if (cached) return cached;
  const file = path.resolve(__dirname, "../../build/Release/ternlab.node");
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    cached = wrapErrors(require(file)) as Addon;
  } catch (e) {
    throw new TernlabError(
      "E_BACKEND",
      `the native addon ${file} could not be loaded (${(e as Error).message}). Build it with "npm ci" or "npm run build".`,
    );
  }
  return cached;
}

/** Re-throws native errors ("[E_CODE] …") as TernlabErrors, for functions and promises alike. */
function wrapErrors<T extends object>(obj: T): T {
  const wrapFn = (fn: (...a: unknown[]) => unknown, self: unknown) =>
    function (this: unknown, ...args: unknown[]) {
      try {
        const r = fn.apply(self ?? this, args);
        if (r && typeof (r as Promise<unknown>).then === "function")
          return (r as Promise<unknown>).catch((e) => {
            throw fromNativeError(e);
          });
        return r;
      } catch (e) {
        throw fromNativeError(e);
      }
    };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (k === "NativeModel") {
      const Ctor = v as new (...a: unknown[]) => object;
      out[k] = function (...args: unknown[]) {
        let inst: object;
        try {
          inst = new Ctor(...args);
        } catch (e) {
          throw fromNativeError(e);
        }
        const proxy: Record<string, unknown> = {};
        for (const name of ["summary", "train", "evaluate", "cancel", "getState", "setState", "getStep", "setStep", "memoryInUse", "memoryReport", "ensureCapacity"])
          proxy[name] = wrapFn((inst as Record<string, (...a: unknown[]) => unknown>)[name], inst);
        return proxy;
      };
    } else if (typeof v === "function") out[k] = wrapFn(v as (...a: unknown[]) => unknown, obj);
    else if (v && typeof v === "object") out[k] = wrapErrors(v as object);
    else out[k] = v;
  }
  return out as T;
}
