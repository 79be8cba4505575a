/**
 * `ternlab run`: papermill's conventions for TypeScript notebooks, and the same notebooks under
 * Debian's `jupyter nbconvert --execute` with the ternlab kernelspec.
 */
import { strict as assert } from "assert";
import { spawnSync, spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { injectedSource, parseParametersCell, parseParameterValue, tsLiteral } from "../kernel/papermill";

const ROOT = path.resolve(__dirname, "..", "..");
const CLI = path.join(ROOT, "dist", "kernel", "cli.js");

function notebook(cells: Array<{ src: string; tags?: string[]; type?: "code" | "markdown" }>) {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: "ternlab", display_name: "ternlab (TypeScript)", language: "typescript" } },
    cells: cells.map((c, i) => ({
      id: `cell-${i}`,
      cell_type: c.type ?? "code",
      metadata: c.tags ? { tags: c.tags } : {},
      source: c.src,
      ...(c.type === "markdown" ? {} : { outputs: [], execution_count: null }),
    })),
  };
}

/** Runs the CLI asynchronously (mocha's event loop stays free) and collects its output. */
function runCli(args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
    let stdout = "", stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

const src = (c: any) => (Array.isArray(c.source) ? c.source.join("") : c.source);
const outText = (c: any) => c.outputs.filter((o: any) => o.output_type === "stream").map((o: any) => (Array.isArray(o.text) ? o.text.join("") : o.text)).join("");

describe("run: papermill-style notebook execution", function () {
  this.timeout(120_000);
  let dir: string;
  const jupyterPath = process.env.JUPYTER_PATH;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ternlab-run-"));
    // This checkout's kernelspec, ahead of any installed one on Jupyter's path: a user kernelspec
    // left by another checkout (removed since) would otherwise start a kernel that no longer exists.
    const prefix = path.join(dir, "checkout-kernelspec");
    assert.equal(spawnSync(process.execPath, [CLI, "kernel", "install", "--prefix", prefix]).status, 0);
    process.env.JUPYTER_PATH = [path.join(prefix, "share", "jupyter"), jupyterPath].filter(Boolean).join(path.delimiter);
  });
  after(() => {
    if (jupyterPath === undefined) delete process.env.JUPYTER_PATH;
    else process.env.JUPYTER_PATH = jupyterPath;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("types -p values as papermill does and writes them as TypeScript literals", () => {
    assert.equal(parseParameterValue("3"), 3);
    assert.equal(parseParameterValue("0.01"), 0.01);
    assert.equal(parseParameterValue("-1e-3"), -0.001);
    assert.equal(parseParameterValue("True"), true);
    assert.equal(parseParameterValue("false"), false);
    assert.equal(parseParameterValue("None"), null);
    assert.deepEqual(parseParameterValue("[1, 2]"), [1, 2]);
    assert.deepEqual(parseParameterValue('{"a": "b"}'), { a: "b" });
    assert.equal(parseParameterValue("cuda"), "cuda");
    assert.equal(tsLiteral({ lr: 0.1, "odd key": [true, null, "s"] }), `{ lr: 0.1, "odd key": [true, null, "s"] }`);
    const declared = parseParametersCell(`const backend: "cpu" | "cuda" = "cpu";\nlet epochs = 1;\nvar hidden: number[] = [256];`);
    assert.deepEqual(declared.get("hidden"), { kind: "var", type: "number[]", hasValue: true, value: [256] });
    assert.equal(
      injectedSource({ backend: "cuda", epochs: 3, hidden: [128, 64], extra: "x" }, declared),
      `// Parameters\nconst backend: "cpu" | "cuda" = "cuda";\nlet epochs = 3;\nvar hidden: number[] = [128, 64];\nlet extra = "x";\n`,
    );
  });

  it("injects typed parameters after the `parameters` cell and records papermill's metadata", async () => {
    const input = path.join(dir, "params.ipynb");
    const output = path.join(dir, "params.out.ipynb");
    fs.writeFileSync(input, JSON.stringify(notebook([
      { src: "# A parameterised notebook", type: "markdown" },
      { src: `let epochs: number = 1;\nlet name = "default";\nlet flag = false;\nlet layers: number[] = [1];\nlet cfg: { lr: number; opt: string } = { lr: 0.5, opt: "sgd" };\nlet tag = "none";\nlet nothing: string | null = "x";`, tags: ["parameters"] },
      { src: `console.log(JSON.stringify({ epochs, name, flag, layers, cfg, tag, nothing }));\nconsole.log(typeof epochs, typeof flag, Array.isArray(layers));` },
      { src: `epochs * 2` },
    ])));
    fs.writeFileSync(path.join(dir, "p.yaml"), "layers: [256, 128]\ncfg:\n  lr: 0.01\n  opt: adam\n");
    const r = await runCli(["run", input, output, "-p", "epochs", "3", "-p", "name", "hello world", "-p", "flag", "true", "-r", "tag", "007", "-p", "nothing", "None", "-y", path.join(dir, "p.yaml")]);
    assert.equal(r.status, 0, r.stderr);
    const nb = JSON.parse(fs.readFileSync(output, "utf8"));
    assert.equal(nb.cells.length, 5);
    const injected = nb.cells[2];
    assert.deepEqual(injected.metadata.tags, ["injected-parameters"]);
    assert.ok(injected.id && injected.id !== nb.cells[1].id);
    assert.match(src(injected), /^\/\/ Parameters\n/);
    assert.match(src(injected), /let epochs: number = 3;/);
    assert.match(src(injected), /let layers: number\[\] = \[256, 128\];/);
    assert.match(src(injected), /let tag = "007";/);
    assert.equal(outText(nb.cells[3]), `{"epochs":3,"name":"hello world","flag":true,"layers":[256,128],"cfg":{"lr":0.01,"opt":"adam"},"tag":"007","nothing":null}\nnumber boolean true\n`);
    const result = nb.cells[4].outputs[0];
    assert.equal(result.output_type, "execute_result");
    assert.deepEqual(result.data["text/plain"], ["6"]);
    assert.equal(result.execution_count, nb.cells[4].execution_count);
    assert.deepEqual([nb.cells[1], nb.cells[2], nb.cells[3], nb.cells[4]].map((c: any) => c.execution_count), [1, 2, 3, 4]);

    const pm = nb.metadata.papermill;
    assert.deepEqual(pm.parameters, { epochs: 3, name: "hello world", flag: true, tag: "007", nothing: null, layers: [256, 128], cfg: { lr: 0.01, opt: "adam" } });
    assert.deepEqual(pm.default_parameters, { epochs: 1, name: "default", flag: false, layers: [1], cfg: { lr: 0.5, opt: "sgd" }, tag: "none", nothing: "x" });
    assert.equal(pm.exception, null);
    assert.equal(pm.input_path, input);
    assert.equal(pm.output_path, output);
    assert.ok(Date.parse(pm.start_time) <= Date.parse(pm.end_time));
    assert.ok(typeof pm.duration === "number" && pm.duration > 0);
    assert.deepEqual(pm.environment_variables, {});
    for (const c of nb.cells.slice(1)) {
      assert.equal(c.metadata.papermill.status, "completed");
      assert.equal(c.metadata.papermill.exception, false);
      assert.ok(c.metadata.papermill.duration >= 0);
      assert.deepEqual(Object.keys(c.metadata.execution).sort(), ["iopub.execute_input", "iopub.status.busy", "iopub.status.idle", "shell.execute_reply"]);
    }
    assert.equal(nb.cells[0].metadata.papermill.status, "pending", "markdown cells are not run");
    assert.equal(nb.metadata.language_info.name, "typescript");
  });

  it("writes the output notebook with the error shown when a cell fails, and exits non-zero", async () => {
    const input = path.join(dir, "fails.ipynb");
    const output = path.join(dir, "fails.out.ipynb");
    fs.writeFileSync(input, JSON.stringify(notebook([
      { src: `let n = 1;`, tags: ["parameters"] },
      { src: `console.log("before the failure", n);` },
      { src: `throw new RangeError("n is " + n + ", too large");` },
      { src: `console.log("never runs");` },
    ])));
    const r = await runCli(["run", input, output, "-p", "n", "99"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /Exception encountered at "In \[4\]"/);
    assert.match(r.stderr, /RangeError: n is 99, too large/);
    const nb = JSON.parse(fs.readFileSync(output, "utf8"));
    assert.equal(nb.metadata.papermill.exception, true);
    assert.deepEqual(nb.cells[0].metadata.tags, ["papermill-error-cell-tag"]);
    assert.match(src(nb.cells[0]), /An Exception was encountered at '<a href="#papermill-error-cell">In \[4\]<\/a>'/);
    const failed = nb.cells.find((c: any) => c.metadata.papermill?.status === "failed");
    assert.match(src(failed), /RangeError/);
    const anchor = nb.cells[nb.cells.indexOf(failed) - 1];
    assert.match(src(anchor), /id="papermill-error-cell"/);
    const err = failed.outputs.find((o: any) => o.output_type === "error");
    assert.equal(err.ename, "RangeError");
    assert.equal(err.evalue, "n is 99, too large");
    assert.ok(err.traceback.length >= 1);
    assert.equal(failed.metadata.papermill.exception, true);
    const never = nb.cells[nb.cells.length - 1];
    assert.equal(never.metadata.papermill.status, "pending");
    assert.deepEqual(never.outputs, []);
    assert.equal(never.execution_count, null);
  });

  it("keeps display updates, fails a cell past --timeout, and rejects bad options", async () => {
    const input = path.join(dir, "slow.ipynb");
    const output = path.join(dir, "slow.out.ipynb");
    fs.writeFileSync(input, JSON.stringify(notebook([
      { src: `display.text("v1", { displayId: "p" });\nupdateDisplay("p", "v2");` },
      { src: `await new Promise((r) => setTimeout(r, 20_000));` },
    ])));
    const r = await runCli(["run", input, output, "--timeout", "2"]);
    assert.notEqual(r.status, 0);
    const nb = JSON.parse(fs.readFileSync(output, "utf8"));
    assert.deepEqual(nb.cells.find((c: any) => c.id === "cell-0").outputs[0].data["text/plain"], ["'v2'"]);
    const err = nb.cells.find((c: any) => c.metadata.papermill?.status === "failed").outputs.find((o: any) => o.output_type === "error");
    assert.ok(["CellTimeoutError", "KeyboardInterrupt"].includes(err.ename), err.ename);

    const odd = await runCli(["run", input, output, "-p", "epochs"]);
    assert.notEqual(odd.status, 0);
    assert.match(odd.stderr, /-p takes a name and a value/);
    const badName = await runCli(["run", input, path.join(dir, "x.ipynb"), "-p", "bad-name", "1"]);
    assert.match(badName.stderr, /parameter name "bad-name" is not a TypeScript identifier/);
    const missing = await runCli(["run", path.join(dir, "nope.ipynb"), output]);
    assert.match(missing.stderr, /nope\.ipynb: cannot be read/);
    const kernel = await runCli(["run", input, output, "--kernel", "no-such-kernel"]);
    assert.match(kernel.stderr, /no kernelspec named "no-such-kernel"/);
  });

  it("runs the same notebooks with Debian's jupyter nbconvert --execute and the ternlab kernelspec", () => {
    const prefix = path.join(dir, "prefix");
    assert.equal(spawnSync(process.execPath, [CLI, "kernel", "install", "--prefix", prefix]).status, 0);
    const input = path.join(dir, "nbconvert.ipynb");
    fs.writeFileSync(input, JSON.stringify(notebook([
      { src: `let n = 2;`, tags: ["parameters"] },
      { src: `console.log("n =", n);\n({ data: [{ type: "scatter", y: [1, n] }], layout: { width: 300, height: 200 } })` },
    ])));
    const r = spawnSync("jupyter", ["nbconvert", "--to", "notebook", "--execute", input, "--output", "nbconvert.out.ipynb", "--ExecutePreprocessor.kernel_name=ternlab", "--ExecutePreprocessor.timeout=120"], {
      encoding: "utf8",
      env: { ...process.env, JUPYTER_PATH: path.join(prefix, "share", "jupyter") },
      timeout: 110_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const nb = JSON.parse(fs.readFileSync(path.join(dir, "nbconvert.out.ipynb"), "utf8"));
    assert.equal(outText(nb.cells[1]), "n = 2\n");
    const res = nb.cells[1].outputs.find((o: any) => o.output_type === "execute_result");
    assert.ok(res.data["application/vnd.plotly.v1+json"]);
    assert.ok(res.data["image/png"]);
  });

  describe("the quickstart notebook (real training, small parameters)", () => {
    const QUICK = ["-p", "trainImages", "600", "-p", "testImages", "300", "-p", "epochs", "1", "-p", "hidden", "[64]"];

    it("runs top to bottom through `ternlab run`: live output, tables, figures, files", async () => {
      const out = path.join(dir, "quickstart.out.ipynb");
      const runDir = path.join(dir, "quickstart-run");
      const r = await runCli(["run", path.join(ROOT, "notebooks", "01-quickstart.ipynb"), out, ...QUICK, "-p", "outDir", runDir, "--cwd", dir]);
      assert.equal(r.status, 0, r.stderr);
      const nb = JSON.parse(fs.readFileSync(out, "utf8"));
      const code = nb.cells.filter((c: any) => c.cell_type === "code");
      assert.ok(code.every((c: any) => c.metadata.papermill.status === "completed"));
      assert.ok(code.every((c: any) => !c.outputs.some((o: any) => o.output_type === "error")));
      const trainCell = code.find((c: any) => /await train\(/.test(src(c)));
      const live = trainCell.outputs.find((o: any) => o.output_type === "display_data");
      assert.ok(live, "the live training output is kept");
      assert.match(live.data["text/plain"].join(""), /done/, "the live output shows the final state");
      assert.ok(live.data["application/vnd.plotly.v1+json"]);
      const model = code.find((c: any) => /^model$/m.test(src(c)) && /models\.mlp/.test(src(c)));
      assert.match(model.outputs[0].data["text/html"].join(""), /<table/);
      const figure = code.find((c: any) => /^dashboard$/m.test(src(c))).outputs.find((o: any) => o.output_type === "execute_result");
      assert.ok(figure.data["application/vnd.plotly.v1+json"] && figure.data["image/png"] && figure.data["text/html"]);
      for (const f of ["metrics.arrow", "checkpoint.safetensors", "dashboard.svg", "dashboard.png"]) assert.ok(fs.existsSync(path.join(runDir, f)), f);
    });

    it("runs under jupyter nbconvert --execute with the ternlab kernelspec (parameters from --prepare-only)", () => {
      const prefix = path.join(dir, "prefix-qs");
      assert.equal(spawnSync(process.execPath, [CLI, "kernel", "install", "--prefix", prefix]).status, 0);
      const prepared = path.join(dir, "quickstart.prepared.ipynb");
      const runDir = path.join(dir, "quickstart-nbconvert");
      const prep = spawnSync(process.execPath, [CLI, "run", path.join(ROOT, "notebooks", "01-quickstart.ipynb"), prepared, ...QUICK, "-p", "outDir", runDir, "--prepare-only"], { encoding: "utf8" });
      assert.equal(prep.status, 0, prep.stderr);
      const r = spawnSync("jupyter", ["nbconvert", "--to", "notebook", "--execute", prepared, "--output", "quickstart.nbconvert.ipynb", "--ExecutePreprocessor.timeout=300"], {
        encoding: "utf8",
        cwd: dir,
        env: { ...process.env, JUPYTER_PATH: path.join(prefix, "share", "jupyter") },
        timeout: 300_000,
      });
      assert.equal(r.status, 0, r.stderr);
      const nb = JSON.parse(fs.readFileSync(path.join(dir, "quickstart.nbconvert.ipynb"), "utf8"));
      const errors = nb.cells.flatMap((c: any) => (c.outputs ?? []).filter((o: any) => o.output_type === "error"));
      assert.deepEqual(errors, []);
      assert.ok(fs.existsSync(path.join(runDir, "metrics.arrow")));
    });
  });
});
