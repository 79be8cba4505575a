/**
 * `ternlab train`: the main job. Trains a model with a terminal progress bar (ETA, live loss and
 * accuracy), prints per-epoch test accuracy and leaves a run folder with metrics.arrow, a
 * checkpoint and report.html.
 */
import * as path from "path";
import { Command, InvalidArgumentError, Option } from "commander";
import * as cliProgress from "cli-progress";
import { loadDataset } from "../datasets";
import { TernlabError } from "../errors";
import { create } from "../models";
import { BEST_CHECKPOINT_FILE, CHECKPOINT_FILE, METRICS_FILE, REPORT_FILE, formatSeconds, train } from "../train";

function num(name: string, min = -Infinity) {
  return (v: string) => {
    const x = Number(v);
    if (!Number.isFinite(x) || x < min) throw new InvalidArgumentError(`${name} must be a number${min > -Infinity ? ` ≥ ${min}` : ""}, got "${v}".`);
    return x;
  };
}
const frac = (name: string) => (v: string) => {
  const x = num(name, 0)(v);
  if (!(x < 1)) throw new InvalidArgumentError(`${name} must be in [0, 1), got "${v}".`);
  return x;
};
const int = (name: string, min = 0) => (v: string) => {
  const x = num(name, min)(v);
  if (!Number.isInteger(x)) throw new InvalidArgumentError(`${name} must be an integer, got "${v}".`);
  return x;
};

export interface TrainCommandOptions {
  dataset: string;
  model: string;
  epochs: number;
  batchSize: number;
  lr: number;
  lrEnd?: number;
  loss: "squaredHinge" | "crossEntropy";
  proposal: "adam" | "sgd";
  tau: "tanh" | "linear" | "logistic";
  m: number;
  temperature: number;
  beta1: number;
  beta2: number;
  weightLevels: number;
  window: "rectangular" | "triangular" | "gaussian" | "logistic";
  r: number;
  a: number;
  width?: number;
  hidden?: string;
  seed: number;
  flip?: boolean;
  crop: number;
  cutout: number;
  backend: "cpu" | "cuda" | "auto";
  threads: number;
  limit?: number;
  testLimit?: number;
  validation: number;
  out: string;
  resume?: string;
  progress: boolean;
}

export function register(program: Command): void {
  program
    .command("train")
    .description("train a discrete network (default: the GXNOR paper's MNIST CNN on MNIST) and write a run folder")
    .option("--dataset <spec>", 'dataset: "mnist", "fashion-mnist:<dir>", "cifar10-bin:<dir>", "folder:<path>" or a path to class folders / a .tar[.gz]', "mnist")
    .addOption(new Option("--model <name>", "model factory").choices(["mnistCnn", "mlp", "cifarVgg", "resnet18", "alexnet"]).default("mnistCnn"))
    .option("--epochs <n>", "epochs", int("--epochs", 1), 8)
    .option("--batch-size <n>", "batch size", int("--batch-size", 1), 100)
    .option("--lr <eta>", "learning rate η (start of the geometric schedule)", num("--lr", 0), 0.02)
    .option("--lr-end <eta>", "learning rate at the last epoch (geometric decay; default: η/100)", num("--lr-end", 0))
    .addOption(new Option("--loss <kind>", "loss").choices(["squaredHinge", "crossEntropy"]).default("squaredHinge"))
    .addOption(new Option("--proposal <kind>", "DST proposal: adam (released code) or sgd (−η·g, no per-weight state)").choices(["adam", "sgd"]).default("adam"))
    .addOption(new Option("--tau <kind>", "DST transition probability").choices(["tanh", "linear", "logistic"]).default("tanh"))
    .option("--m <m>", "steepness m of τ = tanh(m·|ν|/Δ)", num("--m", 0), 3)
    .option("--temperature <T>", "temperature of the logistic τ", num("--temperature", 0), 1)
    .option("--beta1 <b>", "Adam's β1 (the proposal's and BN's): the gradient average's decay; higher averages over more steps", frac("--beta1"), 0.9)
    .option("--beta2 <b>", "Adam's β2: the squared gradient average's decay", frac("--beta2"), 0.999)
    .option("--weight-levels <N>", "weights in Z_N: 0 binary, 1 ternary, 2 five levels, …", int("--weight-levels", 0), 1)
    .addOption(new Option("--window <shape>", "derivative window of the activation").choices(["rectangular", "triangular", "gaussian", "logistic"]).default("rectangular"))
    .option("--r <r>", "activation threshold r", num("--r", 0), 1)
    .option("--a <a>", "derivative window half-width a", num("--a", 0), 0.5)
    .option("--width <w>", "channel multiplier of the CNNs", num("--width", 0))
    .option("--hidden <list>", "hidden sizes of the MLP, e.g. 512,512")
    .option("--seed <n>", "seed of everything random (weights, data order, DST draws)", int("--seed", 0), 1)
    .option("--flip", "augment: random horizontal flips of the training images")
    .option("--crop <pixels>", "augment: random crops of the training images zero-padded by this many pixels", int("--crop", 0), 0)
    .option("--cutout <pixels>", "augment: a square of this side set to mid-grey at a random place in each training image", int("--cutout", 0), 0)
    .addOption(new Option("--backend <name>", "compute backend").choices(["cpu", "cuda", "auto"]).default("auto"))
    .option("--threads <n>", "CPU threads (0: all cores)", int("--threads", 0), 0)
    .option("--limit <n>", "use only the first n training images", int("--limit", 1))
    .option("--test-limit <n>", "use only the first n test images", int("--test-limit", 1))
    .option("--validation <fraction>", "hold out this fraction of the training set for validation", num("--validation", 0), 0)
    .option("--out <dir>", "run folder", "")
    .option("--resume <checkpoint>", "continue a run from its checkpoint (a run folder or a .safetensors file)")
    .option("--no-progress", "no progress bar (log lines per epoch only)")
    .action(async (o: TrainCommandOptions) => {
      await trainCommand(o);
    });
}

export async function trainCommand(o: TrainCommandOptions): Promise<void> {
  // A resumed run continues in its own folder unless --out says otherwise.
  const resumeDir = o.resume && !o.resume.endsWith(".safetensors") ? o.resume : o.resume ? path.dirname(o.resume) : "";
  const out = path.resolve(o.out || resumeDir || path.join("runs", `${o.model}-${new Date().toISOString().replace(/[:.]/g, "-")}`));
  const log = (s: string) => process.stdout.write(s + "\n");
  const modelArgs: Record<string, unknown> = {
    seed: o.seed, backend: o.backend, threads: o.threads, weightLevels: o.weightLevels,
    activation: { r: o.r, a: o.a, window: o.window },
    sampler: { rule: "dst", proposal: o.proposal, tau: o.tau, m: o.m, temperature: o.temperature },
    adam: { beta1: o.beta1, beta2: o.beta2 },
  };
  if (o.width !== undefined) modelArgs.width = o.width;
  if (o.hidden !== undefined) {
    if (o.model !== "mlp") throw new TernlabError("E_OPTION", `--hidden applies to --model mlp only (got --model ${o.model}).`);
    modelArgs.hidden = o.hidden.split(",").map((s) => Number(s.trim()));
  }
  log(`ternlab: loading ${o.dataset} …`);
  // Decoding image folders takes a while: show it (datasets report progress at most ~10×/s).
  const loading = o.progress && process.stdout.isTTY
    ? new cliProgress.SingleBar({ format: "  decoding {split} |{bar}| {value}/{total} images", hideCursor: true }, cliProgress.Presets.shades_classic)
    : null;
  const load = async (split: "train" | "test", limit?: number) => {
    let started = false;
    const d = await loadDataset(o.dataset, split, {
      limit,
      onProgress: (done, total) => {
        if (!loading) return;
        if (!started) { loading.start(total, done, { split }); started = true; }
        loading.update(done, { split });
      },
    });
    if (started) loading?.stop();
    return d;
  };
  const trainSet = await load("train", o.limit);
  const testSet = await load("test", o.testLimit);
  const isImageNet = o.model === "resnet18" || o.model === "alexnet";
  modelArgs.input = [trainSet.height, trainSet.width, trainSet.channels];
  modelArgs.classes = Math.max(trainSet.numClasses, isImageNet ? 0 : 10);
  if (modelArgs.classes === trainSet.numClasses && trainSet.numClasses < 2) modelArgs.classes = 2;
  const model = create(o.model, modelArgs);
  log(`ternlab: ${o.model} on ${model.backend}, ${model.summary().discreteWeights.toLocaleString("en")} discrete weights; ` +
      `${trainSet.count} training and ${testSet.count} test images; run folder ${out}`);
  const lrEnd = o.lrEnd ?? o.lr / 100;
  const bar = o.progress && process.stdout.isTTY !== false
    ? new cliProgress.SingleBar(
        { format: "epoch {ep} |{bar}| {percentage}% · step {value}/{total} · ETA {eta_formatted} · loss {loss} · train acc {acc} · test acc {test} · {ips} img/s", hideCursor: true, etaBuffer: 50, fps: 5 },
        cliProgress.Presets.shades_classic,
      )
    : null;
  let started = false;
  const job = train(model, { train: trainSet, test: testSet }, {
    epochs: o.epochs, batchSize: o.batchSize, loss: o.loss, outDir: out, resumeFrom: o.resume, validationFraction: o.validation,
    augment: { flip: Boolean(o.flip), crop: o.crop, cutout: o.cutout },
    learningRate: { kind: "geometric", start: o.lr, end: lrEnd, per: "epoch" },
    onProgress: (p) => {
      const payload = {
        ep: `${Math.min(p.epoch + 1, p.epochs)}/${p.epochs}`, loss: Number.isFinite(p.loss) ? p.loss.toFixed(4) : "…",
        acc: Number.isFinite(p.trainAccuracy) ? (100 * p.trainAccuracy).toFixed(1) + "%" : "…",
        test: p.testAccuracy === null ? "…" : (100 * p.testAccuracy).toFixed(2) + "%",
        ips: Number.isFinite(p.imagesPerSecond) ? Math.round(p.imagesPerSecond) : "…",
      };
      if (bar && !started) {
        bar.start(p.totalSteps, p.step, payload);
        started = true;
      }
      bar?.update(p.step, payload);
      if (p.event === "epoch") {
        const line = `epoch ${p.epoch + 1}/${p.epochs}: test accuracy ${p.testAccuracy === null ? "n/a" : (100 * p.testAccuracy).toFixed(2) + " %"}, train loss ${payload.loss}, ${formatSeconds(p.elapsedSeconds)}`;
        if (bar) process.stdout.write("\r\x1b[K" + line + "\n");
        else log(line);
      }
    },
  });
  const onSigint = () => job.cancel("interrupted");
  process.once("SIGINT", onSigint);
  try {
    const run = await job;
    bar?.stop();
    const acc = run.testAccuracy;
    log(`ternlab: done in ${formatSeconds(run.progress.elapsedSeconds)} — final test accuracy ${acc === null ? "n/a" : (100 * acc).toFixed(2) + " %"}`);
    const best = run.bestValidation;
    if (best)
      log(`  selected on validation: epoch ${best.epoch} (validation ${(100 * best.valAccuracy).toFixed(2)} %), test accuracy ${(100 * best.testAccuracy).toFixed(2)} % — ${path.join(out, BEST_CHECKPOINT_FILE)}`);
    log(`  ${path.join(out, METRICS_FILE)}\n  ${path.join(out, CHECKPOINT_FILE)}\n  ${path.join(out, REPORT_FILE)}`);
  } catch (e) {
    bar?.stop();
    throw e;
  } finally {
    process.removeListener("SIGINT", onSigint);
  }
}
