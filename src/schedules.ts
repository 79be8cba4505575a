/**
 * Schedules (ALGORITHM.md §3): pure functions of the position in training returning a number.
 * The training loop evaluates them in TypeScript and hands native code one value per step.
 */
import { ScheduleSpec, parseOptions, scheduleSchema } from "./options";

export interface SchedulePosition {
  epoch: number; // 0-based
  step: number; // 0-based global step
  epochs: number;
  stepsPerEpoch: number;
}

type Resolved = Exclude<ReturnType<typeof scheduleSchema.parse>, number>;

/** Fraction of the way through training, per epoch or per step, in [0, 1]. */
function progress(per: "epoch" | "step", p: SchedulePosition, skipEpochs = 0): number {
  if (per === "epoch") {
    const span = p.epochs - 1 - skipEpochs;
    return span <= 0 ? 0 : Math.min(1, Math.max(0, (p.epoch - skipEpochs) / span));
  }
  const total = p.epochs * p.stepsPerEpoch - 1 - skipEpochs * p.stepsPerEpoch;
  return total <= 0 ? 0 : Math.min(1, Math.max(0, (p.step - skipEpochs * p.stepsPerEpoch) / total));
}

export function scheduleValue(spec: ScheduleSpec, p: SchedulePosition, where = "schedule"): number {
  const s = parseOptions(scheduleSchema, spec, where);
  if (typeof s === "number") return s;
  return valueOf(s, p);
}

function valueOf(s: Resolved, p: SchedulePosition): number {
  switch (s.kind) {
    case "constant":
      return s.value;
    case "geometric": {
      // The released GXNOR code's schedule: optional epochs at η = 0 ("initial rounding"), then
      // v0·(v1/v0)^(t/t1).
      if (p.epoch < s.warmupEpochs) return 0;
      if (s.start === 0 || s.end === 0) return s.start;
      return s.start * Math.pow(s.end / s.start, progress(s.per, p, s.warmupEpochs));
    }
    case "linear":
      return s.start + (s.end - s.start) * progress(s.per, p);
    case "cosine":
      return s.end + 0.5 * (s.start - s.end) * (1 + Math.cos(Math.PI * progress(s.per, p)));
    case "exponential":
      return s.start * Math.pow(s.rate, s.per === "epoch" ? p.epoch : p.step);
    case "step": {
      let v = s.start;
      for (const e of s.at) if (p.epoch >= e) v *= s.factor;
      return v;
    }
  }
}

/** One value per step of an epoch, as native code takes them. */
export function epochValues(spec: ScheduleSpec, epoch: number, epochs: number, stepsPerEpoch: number): Float32Array {
  const s = parseOptions(scheduleSchema, spec, "learningRate");
  const out = new Float32Array(stepsPerEpoch);
  for (let b = 0; b < stepsPerEpoch; b++) {
    const p = { epoch, step: epoch * stepsPerEpoch + b, epochs, stepsPerEpoch };
    out[b] = typeof s === "number" ? s : valueOf(s, p);
  }
  return out;
}
