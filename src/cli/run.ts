/**
 * `ternlab run in.ipynb out.ipynb -p name value ...`: papermill's command line for TypeScript
 * notebooks, run by the ternlab kernel (or any kernel with --kernel) over ZeroMQ.
 */
import * as fs from "fs";
import { Command } from "commander";
import * as YAML from "yaml";
import { TernlabError } from "../errors";

function pairs(values: string[] | undefined, flag: string): Array<[string, string]> {
  if (!values) return [];
  if (values.length % 2 !== 0) {
    throw new TernlabError("E_OPTION", `${flag} takes a name and a value (${flag} epochs 3); got ${values.map((v) => JSON.stringify(v)).join(" ")}. Put the notebook paths first: ternlab run in.ipynb out.ipynb ${flag} NAME VALUE`);
  }
  const out: Array<[string, string]> = [];
  for (let i = 0; i < values.length; i += 2) out.push([values[i], values[i + 1]]);
  return out;
}

function yamlObject(text: string, where: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = YAML.parse(text);
  } catch (e) {
    throw new TernlabError("E_OPTION", `${where}: not valid YAML (${(e as Error).message.split("\n")[0]})`);
  }
  if (v === null || v === undefined) return {};
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new TernlabError("E_OPTION", `${where}: parameters must be a YAML mapping (name: value), got ${Array.isArray(v) ? "a list" : typeof v}`);
  }
  return v as Record<string, unknown>;
}

function readYamlFile(file: string, flag: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new TernlabError("E_IO", `${flag} ${file}: cannot be read (${(e as Error).message})`);
  }
  return yamlObject(text, `${flag} ${file}`);
}

export interface RunCliOptions {
  parameters?: string[];
  parameters_raw?: string[];
  parameters_file?: string[];
  parameters_yaml?: string[];
  parameters_base64?: string[];
  kernel?: string;
  cwd?: string;
  timeout?: string;
  executionTimeout?: string;
  logOutput?: boolean;
  prepareOnly?: boolean;
}

/** papermill's precedence: files, then YAML, then base64 YAML, then -p, then -r. */
export function collectParameters(o: RunCliOptions): Record<string, unknown> {
  const { parseParameterValue } = require("../../kernel/papermill") as typeof import("../../kernel/papermill");
  const out: Record<string, unknown> = {};
  for (const f of o.parameters_file ?? []) Object.assign(out, readYamlFile(f, "-f"));
  // -y takes YAML text, as in papermill; a path to an existing .yaml/.yml file is read too.
  for (const y of o.parameters_yaml ?? []) Object.assign(out, /\.ya?ml$/i.test(y) && fs.existsSync(y) ? readYamlFile(y, "-y") : yamlObject(y, "-y"));
  for (const b of o.parameters_base64 ?? []) Object.assign(out, yamlObject(Buffer.from(b, "base64").toString("utf8"), "-b"));
  for (const [k, v] of pairs(o.parameters, "-p")) out[k] = parseParameterValue(v);
  for (const [k, v] of pairs(o.parameters_raw, "-r")) out[k] = v;
  return out;
}

function seconds(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new TernlabError("E_OPTION", `${flag} ${v}: give the seconds a cell may run, a positive number`);
  return n;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function register(program: Command): void {
  program
    .command("run")
    .description("execute a notebook papermill-style: inject parameters after the cell tagged `parameters`, run every cell, write the output notebook")
    .argument("<input>", "input notebook (.ipynb)")
    .argument("<output>", "output notebook, written even when a cell fails")
    .option("-p, --parameters <name value...>", "a parameter (typed: numbers, true/false, null, JSON lists/objects, else a string); repeatable")
    .option("-r, --parameters_raw <name value...>", "a parameter kept as a string; repeatable")
    .option("-f, --parameters_file <file>", "a YAML file of parameters; repeatable", collect)
    .option("-y, --parameters_yaml <yaml>", "parameters as a YAML string (or a .yaml file); repeatable", collect)
    .option("-b, --parameters_base64 <b64>", "parameters as base64-encoded YAML; repeatable", collect)
    .option("-k, --kernel <name>", "kernelspec to run the notebook with (default: the notebook's, else ternlab)")
    .option("--cwd <dir>", "working directory of the kernel (default: this one)")
    .option("--timeout <seconds>", "fail a cell that runs longer than this")
    .option("--execution-timeout <seconds>", "the same as --timeout (papermill's name)")
    .option("--log-output", "print cell outputs to stderr as they arrive")
    .option("--prepare-only", "inject the parameters and write the output without executing")
    .action(async (input: string, output: string, o: RunCliOptions) => {
      const { runNotebook, PapermillExecutionError } = require("../../kernel/papermill") as typeof import("../../kernel/papermill");
      const res = await runNotebook({
        input,
        output,
        parameters: collectParameters(o),
        kernelName: o.kernel,
        cwd: o.cwd,
        timeoutS: seconds(o.timeout ?? o.executionTimeout, o.timeout !== undefined ? "--timeout" : "--execution-timeout"),
        logOutput: o.logOutput,
        prepareOnly: o.prepareOnly,
      });
      if (!res.ok && res.error) {
        const e = res.error;
        throw new PapermillExecutionError(e.cellIndex, e.executionCount, e.ename, e.evalue, e.traceback);
      }
      process.stderr.write(`Wrote ${output}\n`);
    });
}
