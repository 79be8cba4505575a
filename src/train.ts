/**
 * train(): runs a model's training natively, epoch by epoch, off the JS thread. Progress arrives
 * as batched step reports; metrics grow in Arrow tables; a run folder (outDir) gets checkpoints,
 * metrics.arrow and report.html. Cancellation stops at the next step and leaves the model usable.
 */
import * as fs from "fs";
import * as path from "path";
import * as arrow from "apache-arrow";
import { CHECKPOINT_FORMAT, CheckpointMeta, encodeCheckpoint, loadCheckpoint, saveCheckpoint } from "./checkpoint";
import { Dataset, split } from "./datasets/dataset";
import { TernlabError } from "./errors";
import { LiveRun, LiveView, beginLive } from "./live";
import { MetricsRecorder, loadMetrics, saveMetrics } from "./metrics";
import { LOSSES, Model, checkDataFits } from "./model";
import { NativeStepReport } from "./native";
import { ResolvedTrainOptions, TrainOptions, parseOptions, trainOptionsSchema } from "./options";
import { trainingDashboard } from "./plots";
import { figureBundle } from "./display";
import { writeReport } from "./report";
import { epochValues } from "./schedules";

export interface TrainData {
  train: Dataset;
  test?: Dataset;
  validation?: Dataset;
}

export interface Progress {
  /** "step": new step reports arrived; "epoch": an epoch ended and was evaluated. */
  event: "step" | "epoch";
  step: number; // steps done in this run's schedule (global)
  totalSteps: number;
  epoch: number; // current epoch (0-based)
  epochs: number;
  loss: number;
  trainAccuracy: number;
  testAccuracy: number | null; // latest epoch's
  imagesPerSecond: number;
  elapsedSeconds: number;
  etaSeconds: number | null;
}

export const CHECKPOINT_FILE = "checkpoint.safetensors";
/** The checkpoint of the epoch with the best validation accuracy (runs with a validation split). */
export const BEST_CHECKPOINT_FILE = "checkpoint-best-validation.safetensors";
export const METRICS_FILE = "metrics.arrow";
export const REPORT_FILE = "report.html";

let runCounter = 0;

/** A training run: its status, progress and metrics, live while it trains. */
export class Run implements LiveRun {
  readonly id = `ternlab-run-${process.pid.toString(36)}-${(++runCounter).toString(36)}-${Date.now().toString(36)}`;
  status: LiveRun["status"] = "running";
  progress: LiveRun["progress"] = { step: 0, totalSteps: 0, epoch: 0, epochs: 0, elapsedSeconds: 0, etaSeconds: null };
  latest: Record<string, number> = {};
  error: Error | null = null;
  outDir: string | null = null;
  /** With a validation split: the epoch (from 1) of best validation accuracy and its test accuracy. */
  bestValidation: { epoch: number; valAccuracy: number; testAccuracy: number } | null = null;
  cancelReason: string | null = null;
  private cancelHook: (() => void) | null = null;

  constructor(
    readonly model: Model,
    readonly recorder: MetricsRecorder,
    readonly options: ResolvedTrainOptions,
  ) {}

  /** One row per step (Arrow). */
  get metrics(): arrow.Table {
    return this.recorder.steps;
  }
  /** One row per epoch (Arrow). */
  get epochMetrics(): arrow.Table {
    return this.recorder.epochs;
  }
  /** The latest epoch's test accuracy (fraction), or null. */
  get testAccuracy(): number | null {
    const t = this.recorder.epochs;
    if (t.numRows === 0) return null;
    const v = t.getChild("test_accuracy")?.get(t.numRows - 1) as number | undefined;
    return v === undefined || Number.isNaN(v) ? null : v;
  }
  cancel(reason = "cancelled"): void {
    if (this.status !== "running") return;
    this.cancelReason = reason;
    this.cancelHook?.();
  }
  /** @internal */
  onCancel(hook: () => void): void {
    this.cancelHook = hook;
  }

  figure() {
    return trainingDashboard(this.metrics, this.epochMetrics, { title: `${this.model.factory} — ${this.status}` });
  }

  toString(): string {
    const p = this.progress;
    const acc = this.testAccuracy;
    return (
      `Run ${this.status}: epoch ${Math.min(p.epoch + 1, p.epochs)}/${p.epochs}, step ${p.step}/${p.totalSteps}` +
      (Number.isFinite(this.latest.loss) ? `, loss ${this.latest.loss.toFixed(4)}` : "") +
      (acc !== null ? `, test accuracy ${(acc * 100).toFixed(2)} %` : "") +
      (this.outDir ? `, folder ${this.outDir}` : "")
    );
  }

  [Symbol.for("Jupyter.display")](): Record<string, unknown> {
    const p = this.progress;
    const pct = p.totalSteps ? (100 * p.step) / p.totalSteps : 0;
    const eta = p.etaSeconds === null || this.status !== "running" ? "" : ` · ETA ${formatSeconds(p.etaSeconds)}`;
    const bar =
      `<div style="font-family:sans-serif"><b>${this.status}</b> · epoch ${Math.min(p.epoch + 1, p.epochs)}/${p.epochs} · ` +
      `step ${p.step}/${p.totalSteps} · ${formatSeconds(p.elapsedSeconds)}${eta}` +
      `<div style="background:#eee;width:100%;height:8px;border-radius:4px"><div style="background:#1f77b4;width:${pct.toFixed(1)}%;height:8px;border-radius:4px"></div></div></div>`;
    // plotly.js travels once per notebook (display.ts keeps track), not with every run shown.
    const fig = figureBundle(this.figure());
    return { ...fig, "text/plain": this.toString(), "text/html": bar + String(fig["text/html"]) };
  }
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  const r = Math.round(s - 60 * m);
  return m > 0 ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}

/** The promise of a run, with the run itself available at once (for cancel and live display). */
export interface TrainingJob extends Promise<Run> {
  run: Run;
  cancel(reason?: string): void;
}

function normaliseData(data: Dataset | TrainData): TrainData {
  if ((data as TrainData).train) return data as TrainData;
  if ((data as Dataset).images instanceof Uint8Array) return { train: data as Dataset };
  throw new TernlabError("E_OPTION", `train: data must be a Dataset or { train, test?, validation? } of Datasets.`);
}

export function train(model: Model, data: Dataset | TrainData, options: TrainOptions): TrainingJob {
  const opts = parseOptions(trainOptionsSchema, options, "train");
  const sets = normaliseData(data);
  checkDataFits(model, sets.train, "train");
  if (sets.test) checkDataFits(model, sets.test, "train (test set)");
  if (sets.validation) checkDataFits(model, sets.validation, "train (validation set)");
  if (opts.validationFraction > 0 && !sets.validation) {
    const s = split(sets.train, opts.validationFraction, model.options.seed);
    sets.train = s.train;
    sets.validation = s.val;
  }
  const recorder = new MetricsRecorder({ layers: model.discreteLayers, backend: model.backend });
  const run = new Run(model, recorder, opts);
  const promise = runTraining(run, sets) as TrainingJob;
  promise.run = run;
  promise.cancel = (reason?: string) => run.cancel(reason);
  return promise;
}

async function runTraining(run: Run, sets: TrainData): Promise<Run> {
  const { model, options: opts } = run;
  let recorder = run.recorder;
  let cancelled = false;
  run.onCancel(() => {
    cancelled = true;
    model.native.cancel();
  });
  const signal = opts.signal as AbortSignal | undefined;
  if (signal) {
    if (signal.aborted) run.cancel("aborted");
    signal.addEventListener("abort", () => run.cancel("aborted"), { once: true });
  }
  const spe = sets.train.count >= opts.batchSize ? Math.floor(sets.train.count / opts.batchSize) : 1;
  const batch = Math.min(opts.batchSize, sets.train.count);
  const totalSteps = spe * opts.epochs;
  let startEpoch = 0;
  let wallOffset = 0;

  if (opts.resumeFrom) {
    const resumed = await resume(run, opts.resumeFrom, spe);
    startEpoch = resumed.epoch + 1;
    wallOffset = resumed.wallTime;
    recorder = resumed.recorder;
    (run as { recorder: MetricsRecorder }).recorder = recorder;
  }
  run.outDir = opts.outDir ? path.resolve(opts.outDir) : null;
  if (run.outDir) await fs.promises.mkdir(run.outDir, { recursive: true });

  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  run.progress = { step: startEpoch * spe, totalSteps, epoch: startEpoch, epochs: opts.epochs, elapsedSeconds: 0, etaSeconds: null };
  const view: LiveView = beginLive(run);
  const report = (event: Progress["event"]) => {
    const p = run.progress;
    const done = p.step - startEpoch * spe;
    p.elapsedSeconds = elapsed();
    p.etaSeconds = done > 0 ? (p.elapsedSeconds / done) * (p.totalSteps - p.step) : null;
    view.update();
    if (typeof opts.onProgress === "function") {
      (opts.onProgress as (p: Progress) => void)({
        event, step: p.step, totalSteps: p.totalSteps, epoch: p.epoch, epochs: p.epochs,
        loss: run.latest.loss ?? NaN, trainAccuracy: run.latest.train_accuracy ?? NaN,
        testAccuracy: run.testAccuracy, imagesPerSecond: run.latest.images_per_s ?? NaN,
        elapsedSeconds: p.elapsedSeconds, etaSeconds: p.etaSeconds,
      });
    }
  };
  const onSteps = (rows: NativeStepReport[]) => {
    for (const r of rows) {
      const row: Record<string, number> = {
        step: r.step, epoch: r.epoch + 1, loss: r.loss, train_accuracy: r.trainAccuracy, learning_rate: r.learningRate,
        images_per_s: r.batch / r.seconds, wall_time: wallOffset + elapsed(),
      };
      for (const l of r.layers) {
        row[`flip_rate/${l.name}`] = l.flips / l.weights;
        row[`s_w/${l.name}`] = l.zeroWeights / l.weights;
        row[`s_a/${l.name}`] = l.integerInput ? l.zeroInputs / l.inputs : NaN;
        row[`active_fraction/${l.name}`] = l.integerInput ? l.activeMacs / l.macs : NaN;
        row[`accept_rate/${l.name}`] = NaN; // DST has no accept step; the samplers fill this
      }
      recorder.addStep(row);
      run.latest = row;
      run.progress.step = r.step + 1;
      view.update(); // every row, so a live chart gets each step even when reports arrive batched
    }
    report("step");
  };
  const dataOf = (d: Dataset) => ({ images: d.images, labels: d.labels, count: d.count, scale: opts.inputScale, offset: opts.inputOffset });
  const evaluate = async (d: Dataset | undefined) =>
    d ? model.native.evaluate(dataOf(d), opts.evalBatchSize, LOSSES[opts.loss]) : null;

  try {
    for (let epoch = startEpoch; epoch < opts.epochs; epoch++) {
      if (cancelled) throw cancelError(run);
      run.progress.epoch = epoch;
      const lr = epochValues(opts.learningRate, epoch, opts.epochs, spe);
      const res = await model.native.train(
        dataOf(sets.train),
        { epoch, batch, firstStep: epoch * spe, begin: 0, end: spe, loss: LOSSES[opts.loss], shuffle: opts.shuffle, lr,
          augmentFlip: opts.augment.flip, augmentPad: opts.augment.crop, augmentCutout: opts.augment.cutout },
        onSteps,
      );
      if (res.cancelled || cancelled) throw cancelError(run);
      const test = await evaluate(sets.test);
      const val = await evaluate(sets.validation);
      const row = recorder.epochSummary(epoch + 1); // tables number epochs from 1, as people do
      row.test_loss = test ? test.loss : NaN;
      row.test_accuracy = test && test.count ? test.top1 / test.count : NaN;
      row.test_top5 = test && test.count ? test.top5 / test.count : NaN;
      row.val_accuracy = val && val.count ? val.top1 / val.count : NaN;
      row.wall_time = wallOffset + elapsed();
      recorder.addEpoch(row);
      // Model selection on the held-out split (ALGORITHM.md §1.4): the honest figure is the test
      // accuracy of the epoch with the best validation accuracy; its checkpoint is kept too.
      const improved = Number.isFinite(row.val_accuracy) && (run.bestValidation === null || row.val_accuracy > run.bestValidation.valAccuracy);
      if (improved) run.bestValidation = { epoch: epoch + 1, valAccuracy: row.val_accuracy, testAccuracy: row.test_accuracy };
      if (run.outDir) {
        await writeRunFolder(run, epoch, wallOffset + elapsed(), epoch === opts.epochs - 1);
        if (improved)
          await saveCheckpoint(path.join(run.outDir, BEST_CHECKPOINT_FILE), checkpointBytes(model, epoch, wallOffset + elapsed(), trainConfig(opts)));
      }
      report("epoch");
    }
    run.status = "done";
  } catch (e) {
    const err = (e as TernlabError).code === "E_CANCELLED" || cancelled ? cancelError(run) : e;
    run.status = (err as TernlabError).code === "E_CANCELLED" ? "cancelled" : "failed";
    run.error = err as Error;
    if (run.outDir && recorder.stepCount > 0) await saveMetrics(path.join(run.outDir, METRICS_FILE), recorder.steps, recorder.epochs).catch(() => undefined);
    throw err;
  } finally {
    view.end();
  }
  return run;
}

function cancelError(run: Run): TernlabError {
  return new TernlabError(
    "E_CANCELLED",
    `training was ${run.cancelReason === "interrupted" ? "interrupted" : "cancelled"} at step ${run.progress.step} ` +
      `(epoch ${run.progress.epoch + 1}/${run.progress.epochs}); the model keeps the weights of the last finished step` +
      (run.outDir ? ` and ${run.outDir}/${CHECKPOINT_FILE} those of the last finished epoch (resume with resumeFrom)` : "") + ".",
  );
}

function layerLevels(model: Model): (tensor: string) => number | null {
  const discrete = new Map(model.layers.filter((l) => l.discrete).map((l) => [`${l.name}.weight`, l.levels]));
  return (t) => discrete.get(t) ?? null;
}

/** The checkpoint of a model at the end of `epoch`, as bytes. */
export function checkpointBytes(model: Model, epoch: number, wallTime: number, train: Record<string, unknown>): Buffer {
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT,
    step: model.step,
    epoch,
    model: { factory: model.factory, args: model.factoryArgs, spec: model.spec },
    train,
    wallTime,
    backend: model.backend,
    created: new Date().toISOString(),
  };
  return encodeCheckpoint(model.state(), layerLevels(model), meta);
}

function trainConfig(opts: ResolvedTrainOptions): Record<string, unknown> {
  const { onProgress, signal, ...rest } = opts;
  void onProgress;
  void signal;
  return rest;
}

async function writeRunFolder(run: Run, epoch: number, wallTime: number, final: boolean): Promise<void> {
  const dir = run.outDir!;
  await saveCheckpoint(path.join(dir, CHECKPOINT_FILE), checkpointBytes(run.model, epoch, wallTime, trainConfig(run.options)));
  await saveMetrics(path.join(dir, METRICS_FILE), run.recorder.steps, run.recorder.epochs);
  if (final && run.options.report) {
    await writeReport(path.join(dir, REPORT_FILE), {
      title: `ternlab: ${run.options.name ?? run.model.factory}`,
      steps: run.recorder.steps,
      epochs: run.recorder.epochs,
      config: { model: { factory: run.model.factory, ...run.model.factoryArgs }, train: trainConfig(run.options), backend: run.model.backend },
      summary: run.model.summary().toHtml(),
    });
  }
}

async function resume(run: Run, from: string, spe: number): Promise<{ epoch: number; wallTime: number; recorder: MetricsRecorder }> {
  let file = path.resolve(from);
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, CHECKPOINT_FILE);
  const ck = await loadCheckpoint(file);
  const model = run.model;
  if (JSON.stringify(ck.meta.model.spec) !== JSON.stringify(model.spec))
    throw new TernlabError(
      "E_CHECKPOINT",
      `checkpoint "${file}" holds a different model (${ck.meta.model.factory}) than the one given; build the same model with the same options (seed included) to resume.`,
    );
  if (ck.meta.step !== (ck.meta.epoch + 1) * spe)
    throw new TernlabError(
      "E_CHECKPOINT",
      `checkpoint "${file}" was taken at step ${ck.meta.step} (epoch ${ck.meta.epoch + 1}), which does not match ${spe} steps per epoch; resume with the batch size and data it was trained with.`,
    );
  model.loadState(ck.tensors, ck.meta.step);
  let recorder: MetricsRecorder;
  const metricsFile = path.join(path.dirname(file), METRICS_FILE);
  if (fs.existsSync(metricsFile)) {
    const m = await loadMetrics(metricsFile);
    recorder = MetricsRecorder.fromTables(m.steps, m.epochs, model.backend);
    recorder.truncateToStep(ck.meta.step - 1);
  } else {
    recorder = new MetricsRecorder({ layers: model.discreteLayers, backend: model.backend });
  }
  return { epoch: ck.meta.epoch, wallTime: ck.meta.wallTime, recorder };
}
