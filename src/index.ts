/**
 * ternlab: discrete (ternary) neural networks trained by probabilistic update rules.
 *
 *   import { models, datasets, train } from "ternlab";
 *   const model = models.mnistCnn({ seed: 1 });
 *   const run = await train(model, { train: await datasets.loadMnist("train"), test: await datasets.loadMnist("test") }, { epochs: 3 });
 */
export * as models from "./models";
export * as datasets from "./datasets";
export * as plots from "./plots";
export * as metrics from "./metrics";
export * as live from "./live";
export * as schedules from "./schedules";
export * as checkpoint from "./checkpoint";
export { Model, ModelSummary, EvaluateResult } from "./model";
export { train, Run, TrainingJob, TrainData, Progress } from "./train";
export { TernlabError, ErrorCode, isTernlabError } from "./errors";
export { ModelOptions, TrainOptions, ScheduleSpec } from "./options";
export { addon as nativeAddon } from "./native";
export { writeReport, figureToHtml } from "./report";
import * as figuresModule from "./figures";
export const figures = figuresModule;
export { display, updateDisplay, clearOutput } from "./display";
