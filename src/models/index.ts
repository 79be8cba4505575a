/**
 * Model factories: one line builds a ready model, e.g. `models.mnistCnn({ seed: 1 })`.
 */
import { TernlabError } from "../errors";
import { Model } from "../model";
import { ModelOptions, modelOptionsSchema, parseOptions } from "../options";
import * as zoo from "./zoo";

export type MlpOptions = ModelOptions & { hidden?: number[] };
export type WidthOptions = ModelOptions & { width?: number };

function take<T extends Record<string, unknown>, K extends string>(o: T, keys: K[]): [Pick<T, K & keyof T>, Omit<T, K>] {
  const own: Record<string, unknown> = {};
  const rest: Record<string, unknown> = { ...o };
  for (const k of keys) {
    if (k in rest) {
      own[k] = rest[k];
      delete rest[k];
    }
  }
  return [own as Pick<T, K & keyof T>, rest as Omit<T, K>];
}

function checkWidth(where: string, width: unknown): number {
  if (width === undefined) return 1;
  if (typeof width !== "number" || !(width > 0) || width > 16)
    throw new TernlabError("E_OPTION", `option "${where}.width" is ${JSON.stringify(width)}: a channel multiplier in (0, 16] is allowed.`);
  return width;
}

/** A ternary MLP (default hidden [512, 512], MNIST-shaped input). */
export function mlp(options: MlpOptions = {}): Model {
  const [own, rest] = take(options as Record<string, unknown>, ["hidden"]);
  const hidden = (own.hidden as number[] | undefined) ?? [512, 512];
  if (!Array.isArray(hidden) || hidden.length === 0 || hidden.some((h) => !Number.isInteger(h) || h < 1))
    throw new TernlabError("E_OPTION", `option "mlp.hidden" is ${JSON.stringify(hidden)}: a non-empty array of positive integers is allowed.`);
  const o = parseOptions(modelOptionsSchema, rest, "mlp");
  return new Model("mlp", options as Record<string, unknown>, o, zoo.mlp(o, hidden));
}

/** The paper's MNIST CNN (32C5-MP2-64C5-MP2-FC512-FC10). */
export function mnistCnn(options: WidthOptions = {}): Model {
  const [own, rest] = take(options as Record<string, unknown>, ["width"]);
  const o = parseOptions(modelOptionsSchema, rest, "mnistCnn");
  return new Model("mnistCnn", options as Record<string, unknown>, o, zoo.mnistCnn(o, checkWidth("mnistCnn", own.width)));
}

/** The paper's CIFAR-10 VGG net (2×128C3-MP2-2×256C3-MP2-2×512C3-MP2-FC1024-FC10). */
export function cifarVgg(options: WidthOptions = {}): Model {
  const [own, rest] = take(options as Record<string, unknown>, ["width"]);
  const o = parseOptions(modelOptionsSchema, rest, "cifarVgg");
  return new Model("cifarVgg", options as Record<string, unknown>, o, zoo.cifarVgg(o, checkWidth("cifarVgg", own.width)));
}

/** ResNet-18, ternary but for the first conv and the last dense layer (224×224×3, 1000 classes by default). */
export function resnet18(options: ModelOptions = {}): Model {
  const o = parseOptions(modelOptionsSchema, options, "resnet18");
  return new Model("resnet18", options as Record<string, unknown>, o, zoo.resnet18(o));
}

/** AlexNet, ternary but for the first conv and the last dense layer. */
export function alexnet(options: ModelOptions = {}): Model {
  const o = parseOptions(modelOptionsSchema, options, "alexnet");
  return new Model("alexnet", options as Record<string, unknown>, o, zoo.alexnet(o));
}

export const factories = { mlp, mnistCnn, cifarVgg, resnet18, alexnet } as const;
export type FactoryName = keyof typeof factories;

/** Builds a model by factory name (what checkpoints and the CLI use). */
export function create(name: string, options: Record<string, unknown> = {}): Model {
  const f = (factories as Record<string, (o: Record<string, unknown>) => Model>)[name];
  if (!f) throw new TernlabError("E_OPTION", `model "${name}" is unknown; use one of ${Object.keys(factories).join(", ")}.`);
  return f(options);
}
