/**
 * The ternlab kernel, driven by a real ZeroMQ Jupyter client (kernel/client.ts): what each
 * request answers, what goes out on iopub, and the cases where plain tslab breaks the protocol.
 */
import { strict as assert } from "assert";
import { KernelClient } from "../kernel/client";
import { makeSpec } from "../kernel/kernelspec";
import { encode } from "../kernel/wire";
import type { Message } from "../kernel/wire";

const types = (ms: Message[]) => ms.map((m) => m.header.msg_type);
const of = (ms: Message[], type: string) => ms.filter((m) => m.header.msg_type === type);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(fn: () => T | undefined | null | false, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A cell that starts a LiveRun-shaped training stand-in and awaits it (cancel() stops it). */
const FAKE_TRAINING = `
import { beginLive } from "ternlab/dist/src/live";
import { TernlabError } from "ternlab/dist/src/errors";
(globalThis as any).fakeSteps = 0;
function fakeTrain(totalSteps: number) {
  let cancelled: string | null = null;
  const t0 = Date.now();
  const run: any = {
    id: "fake" + Math.floor(Math.random() * 1e6), status: "running",
    progress: { step: 0, totalSteps, epoch: 1, epochs: 1, elapsedSeconds: 0, etaSeconds: null },
    latest: {},
    [Symbol.for("Jupyter.display")]() { return { "text/plain": "run " + run.id }; },
    cancel(reason?: string) { cancelled = reason ?? "cancelled"; },
  };
  const view = beginLive(run);
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cancelled) {
        run.status = "cancelled"; view.end();
        return reject(new TernlabError("E_CANCELLED", "training cancelled at step " + run.progress.step + " (" + cancelled + ")"));
      }
      const s = ++run.progress.step; (globalThis as any).fakeSteps = s;
      run.progress.elapsedSeconds = (Date.now() - t0) / 1000;
      run.progress.etaSeconds = run.progress.elapsedSeconds / s * (totalSteps - s);
      run.latest = { loss: 2 / s, train_accuracy: 1 - 1 / (s + 1), "flip_rate/fc1": 0.1 / s, "accept_rate/fc1": 0.5 };
      view.update();
      if (s >= totalSteps) { run.status = "done"; view.end(); return resolve(run); }
      setTimeout(tick, 5);
    };
    setTimeout(tick, 5);
  });
}
`;

describe("kernel: protocol over ZeroMQ", function () {
  this.timeout(60_000);
  let kc: KernelClient;

  before(async () => {
    kc = await KernelClient.start({ spec: makeSpec(), env: { TERNLAB_LIVE_INTERVAL_MS: "100" } });
    // The first cell may carry a preload warning (when the library is not built): keep it out of the checks.
    await kc.execute("0");
  });
  after(async () => {
    await kc?.shutdown();
  });

  it("answers kernel_info with status ok, the protocol version and TypeScript", async () => {
    const r = await kc.request("shell", "kernel_info_request", {});
    assert.equal(r.header.msg_type, "kernel_info_reply");
    assert.equal(r.content.status, "ok");
    assert.equal(r.content.protocol_version, "5.3");
    assert.equal(r.content.language_info.name, "typescript");
    assert.equal(r.content.language_info.file_extension, ".ts");
    const c = await kc.request("control", "kernel_info_request", {});
    assert.equal(c.content.status, "ok");
  });

  it("sends the last value as an execute_result with the execution count", async () => {
    const a = await kc.execute("const answer = 6 * 7;\nanswer");
    const b = await kc.execute("answer + 1");
    assert.equal(a.reply.content.status, "ok");
    const n = a.reply.content.execution_count;
    assert.ok(Number.isInteger(n) && n >= 1);
    assert.equal(b.reply.content.execution_count, n + 1);
    assert.deepEqual(types(a.iopub), ["status", "execute_input", "execute_result", "status"]);
    assert.equal(of(a.iopub, "execute_input")[0].content.execution_count, n);
    const res = of(a.iopub, "execute_result")[0].content;
    assert.equal(res.execution_count, n);
    assert.equal(res.data["text/plain"], "42");
    assert.equal(of(b.iopub, "execute_result")[0].content.data["text/plain"], "43");
  });

  it("does not count executions without store_history, and silent ones publish nothing", async () => {
    const before = (await kc.execute("1")).reply.content.execution_count;
    const quiet = await kc.execute("2", { storeHistory: false });
    assert.equal(quiet.reply.content.execution_count, before);
    const silent = await kc.execute("console.log('x'); 3", { silent: true });
    assert.deepEqual(types(silent.iopub), ["status", "status"]);
    assert.equal((await kc.execute("4")).reply.content.execution_count, before + 1);
  });

  it("reports a thrown error as an error message with ename, evalue and traceback", async () => {
    const r = await kc.execute(`function inner() { throw new RangeError("out of range: 7"); }\ninner();`);
    assert.equal(r.reply.content.status, "error");
    assert.equal(r.reply.content.ename, "RangeError");
    assert.equal(r.reply.content.evalue, "out of range: 7");
    assert.ok(Number.isInteger(r.reply.content.execution_count));
    const errs = of(r.iopub, "error");
    assert.equal(errs.length, 1);
    assert.equal(errs[0].content.ename, "RangeError");
    assert.ok(Array.isArray(errs[0].content.traceback) && errs[0].content.traceback.length >= 2);
    assert.match(errs[0].content.traceback[0], /RangeError/);
    assert.match(errs[0].content.traceback.join("\n"), /at inner/);
    assert.equal(of(r.iopub, "stream").length, 0, "an error is not also printed to stderr");
  });

  it("reports ternlab errors with their code and TypeScript errors as TSError", async () => {
    const t = await kc.execute(`import { TernlabError } from "ternlab/dist/src/errors";\nthrow new TernlabError("E_OPTION", "option x: bad");`);
    assert.equal(t.reply.content.ename, "TernlabError");
    assert.equal(t.reply.content.evalue, "[E_OPTION] option x: bad");
    const c = await kc.execute(`const n: number = "text";`);
    assert.equal(c.reply.content.status, "error");
    assert.equal(c.reply.content.ename, "TSError");
    assert.match(c.reply.content.evalue, /not assignable to type 'number'/);
    const rejected = await kc.execute(`await Promise.reject(new TypeError("async failure"))`);
    assert.equal(rejected.reply.content.ename, "TypeError");
  });

  it("lets cells use earlier cells' variables in shorthand properties and renaming destructuring (tslab bugs)", async () => {
    await kc.execute(`let epochs = 3;\nconst result = { top1: 0.9, top5: 0.99 };`);
    const r = await kc.execute(`const { top1: acc, ...others } = result;\n({ epochs, acc, others })`);
    assert.equal(r.reply.content.status, "ok", JSON.stringify(r.reply.content));
    assert.equal(of(r.iopub, "execute_result")[0].content.data["text/plain"], "{ epochs: 3, acc: 0.9, others: { top5: 0.99 } }");
  });

  it("sends stdout and stderr as stream messages, in order", async () => {
    const r = await kc.execute(`console.log("out 1"); console.error("err 1"); console.log("out 2"); 5`);
    const streams = of(r.iopub, "stream").map((m) => [m.content.name, m.content.text]);
    assert.deepEqual(streams, [["stdout", "out 1\n"], ["stderr", "err 1\n"], ["stdout", "out 2\n"]]);
    assert.ok(types(r.iopub).indexOf("stream") < types(r.iopub).indexOf("execute_result"));
  });

  it("sends display_data and update_display_data with a display_id", async () => {
    const r = await kc.execute(`display.html("<i>first</i>", { displayId: "d1" });\nupdateDisplay("d1", "second");\ndisplay.markdown("**md**");`);
    assert.equal(r.reply.content.status, "ok");
    const d = of(r.iopub, "display_data");
    assert.equal(d.length, 2);
    assert.equal(d[0].content.data["text/html"], "<i>first</i>");
    assert.equal(d[0].content.transient.display_id, "d1");
    assert.equal(d[1].content.data["text/markdown"], "**md**");
    const u = of(r.iopub, "update_display_data");
    assert.equal(u.length, 1);
    assert.equal(u[0].content.transient.display_id, "d1");
    assert.equal(u[0].content.data["text/plain"], "'second'");
    assert.equal(of(r.iopub, "execute_result").length, 0, "display() returns nothing to show");
    const c = await kc.execute(`clearOutput(true)`);
    assert.deepEqual(of(c.iopub, "clear_output").map((m) => m.content.wait), [true]);
  });

  it("answers history requests (tail, range, search)", async () => {
    await kc.execute(`const histMarker = "history-marker"; histMarker`);
    const tail = await kc.request("shell", "history_request", { output: true, raw: true, hist_access_type: "tail", n: 1 });
    assert.equal(tail.content.status, "ok");
    assert.equal(tail.content.history.length, 1);
    const [session, line, [input, output]] = tail.content.history[0];
    assert.match(input, /histMarker/);
    assert.equal(output, "'history-marker'");
    const range = await kc.request("shell", "history_request", { output: false, raw: true, hist_access_type: "range", session, start: line, stop: line + 1 });
    assert.deepEqual(range.content.history, [[session, line, input]]);
    const search = await kc.request("shell", "history_request", { output: false, raw: true, hist_access_type: "search", pattern: "*histMarker*", unique: true });
    assert.equal(search.content.history.length, 1);
  });

  it("says is_complete: complete, incomplete (with indent) or invalid", async () => {
    const st = async (code: string) => (await kc.request("shell", "is_complete_request", { code })).content;
    assert.equal((await st("const a = 1;")).status, "complete");
    const inc = await st("function f() {");
    assert.equal(inc.status, "incomplete");
    assert.equal(typeof inc.indent, "string");
    assert.equal((await st("let x = );")).status, "invalid");
    assert.equal((await st("const = 5")).status, "invalid");
  });

  it("answers requests that arrive right after an error", async () => {
    const failing = kc.message("execute_request", { code: `throw new Error("first fails")`, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: false });
    const p1 = kc.send("shell", failing);
    const p2 = kc.request("shell", "kernel_info_request", {}, 3000);
    const p3 = kc.execute("'still here'", { timeoutMs: 3000, stopOnError: false });
    const p4 = kc.request("shell", "is_complete_request", { code: "1" }, 3000);
    const [r1, r2, r3, r4] = await Promise.all([p1, p2, p3, p4]);
    assert.equal(r1.content.status, "error");
    assert.equal(r2.content.status, "ok");
    assert.equal(r3.reply.content.status, "ok");
    assert.equal(of(r3.iopub, "execute_result")[0].content.data["text/plain"], "'still here'");
    assert.equal(r4.content.status, "complete");
    // With stop_on_error, an execute_request already queued is answered "aborted", not dropped.
    const q1 = kc.execute(`throw new Error("stop here")`, { timeoutMs: 3000 });
    const q2 = kc.execute(`"not run"`, { timeoutMs: 3000 });
    const [a, b] = await Promise.all([q1, q2]);
    assert.equal(a.reply.content.status, "error");
    assert.equal(b.reply.content.status, "aborted");
    assert.equal((await kc.execute("1 + 1", { timeoutMs: 3000 })).reply.content.status, "ok");
  });

  it("rejects a message whose HMAC signature is wrong, and keeps working", async () => {
    const msg = kc.message("execute_request", { code: `(globalThis as any).forged = true; "forged"`, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true });
    const frames = encode(msg, kc.signer);
    const sigIndex = frames.findIndex((f) => f.toString() === "<IDS|MSG>") + 1;
    frames[sigIndex] = Buffer.from("0".repeat(64));
    let answered = false;
    const off = kc.onIopub((m) => {
      if (m.parent_header.msg_id === msg.header.msg_id) answered = true;
    });
    kc.sendRaw("shell", frames);
    await sleep(800);
    off();
    assert.equal(answered, false, "a forged message got an answer");
    await waitFor(() => /rejected a message on shell: invalid HMAC signature/.test(kc.stderrText), 3000, "the rejection on stderr");
    const r = await kc.execute(`typeof (globalThis as any).forged`);
    assert.equal(of(r.iopub, "execute_result")[0].content.data["text/plain"], "'undefined'");
  });

  it("shows figures, Arrow tables and Jupyter.display objects as rich MIME bundles", async () => {
    const fig = await kc.execute(`({ data: [{ type: "scatter", y: [1, 3, 2] }], layout: { title: { text: "first" }, width: 400, height: 300 } })`);
    const b1 = of(fig.iopub, "execute_result")[0].content.data;
    assert.deepEqual(Object.keys(b1).sort(), ["application/vnd.plotly.v1+json", "image/png", "text/html", "text/plain"]);
    assert.deepEqual(b1["application/vnd.plotly.v1+json"].data, [{ type: "scatter", y: [1, 3, 2] }]);
    assert.ok(b1["text/html"].length > 1_000_000, "plotly.js travels with the first figure");
    const png = Buffer.from(b1["image/png"], "base64");
    assert.equal(png.subarray(1, 4).toString(), "PNG");
    assert.equal(png.readUInt32BE(16), 400);
    const fig2 = await kc.execute(`({ data: [{ type: "bar", y: [1, 2] }], layout: {} })`);
    const b2 = of(fig2.iopub, "execute_result")[0].content.data;
    assert.ok(!b2["text/html"].includes("plotly.js v") && b2["text/html"].length < 300_000, "plotly.js is included once per notebook, not per output");
    assert.ok(b2["text/html"].includes(`<img src="data:image/png;base64,${b2["image/png"]}"`), "the figure div holds its PNG for when scripts cannot run");
    assert.match(b2["text/html"], /Plotly\.newPlot/);

    const tbl = await kc.execute(`import { tableFromArrays } from "apache-arrow";\ntableFromArrays({ step: Int32Array.from({ length: 100 }, (_, i) => i), loss: Float64Array.from({ length: 100 }, (_, i) => 1 / (i + 1)) })`);
    const tb = of(tbl.iopub, "execute_result")[0].content.data;
    assert.match(tb["text/html"], /<table/);
    assert.match(tb["text/html"], /100 rows/);
    assert.ok((tb["text/html"].match(/<tr>/g) ?? []).length <= 25, "rows are capped");
    assert.match(tb["text/plain"], /100 rows × 2 columns/);

    const custom = await kc.execute(`({ [Symbol.for("Jupyter.display")]() { return { "text/html": "<b>custom</b>", "text/markdown": "**custom**" }; } })`);
    const cb = of(custom.iopub, "execute_result")[0].content.data;
    assert.equal(cb["text/html"], "<b>custom</b>");
    assert.equal(cb["text/markdown"], "**custom**");
    assert.equal(typeof cb["text/plain"], "string");
  });

  it("inspects, completes and pages", async () => {
    const ins = await kc.request("shell", "inspect_request", { code: "Math.max", cursor_pos: 8, detail_level: 0 });
    assert.equal(ins.content.found, true);
    assert.match(ins.content.data["text/plain"], /max/);
    const comp = await kc.request("shell", "complete_request", { code: "Math.ma", cursor_pos: 7 });
    assert.deepEqual(comp.content.matches, ["max"]);
    const page = await kc.execute("Math.max?");
    assert.equal(page.reply.content.payload[0].source, "page");
  });

  it("shows a live training as one output updated in place, and an interrupt request cancels it", async () => {
    await kc.execute(FAKE_TRAINING);
    const seen: Message[] = [];
    const cell = kc.execute(`await fakeTrain(1_000_000)`, { onMessage: (m) => seen.push(m), timeoutMs: 30_000 });
    await waitFor(() => of(seen, "update_display_data").length >= 2, 10_000, "live updates");
    await kc.interrupt("message");
    const r = await cell;
    assert.equal(r.reply.content.status, "error");
    assert.equal(r.reply.content.ename, "KeyboardInterrupt");
    assert.match(r.reply.content.evalue, /training cancelled at step \d+/);
    const disp = of(r.iopub, "display_data");
    assert.equal(disp.length, 1, "one live output");
    const id = disp[0].content.transient.display_id;
    assert.match(id, /^ternlab-run-fake/);
    const ups = of(r.iopub, "update_display_data");
    assert.ok(ups.every((u) => u.content.transient.display_id === id));
    const last = ups[ups.length - 1].content.data;
    assert.match(last["text/html"], /cancelled/);
    assert.match(last["text/plain"], /step \d+\/1000000/);
    assert.match(last["text/plain"], /loss/);
    assert.ok(last["application/vnd.plotly.v1+json"].data.length >= 3, "loss, accuracy, flip rate, accept rate charts");
    // Nothing of the run leaks: it stopped, and the next cell runs cleanly.
    const steps1 = (await kc.execute(`(globalThis as any).fakeSteps`)).iopub;
    await sleep(200);
    const after = await kc.execute(`(globalThis as any).fakeSteps`);
    assert.equal(of(after.iopub, "execute_result")[0].content.data["text/plain"], of(steps1, "execute_result")[0].content.data["text/plain"]);
    assert.equal(of(after.iopub, "display_data").length + of(after.iopub, "update_display_data").length, 0);
    const done = await kc.execute(`const finished: any = await fakeTrain(20); finished.status`);
    assert.equal(of(done.iopub, "execute_result")[0].content.data["text/plain"], "'done'");
  });

  it("SIGINT cancels a training, and stops a synchronous endless loop", async () => {
    const seen: Message[] = [];
    const cell = kc.execute(`await fakeTrain(1_000_000)`, { onMessage: (m) => seen.push(m), timeoutMs: 30_000 });
    await waitFor(() => of(seen, "update_display_data").length >= 1, 10_000, "live updates");
    await kc.interrupt("signal");
    const r = await cell;
    assert.equal(r.reply.content.ename, "KeyboardInterrupt");

    const loop = kc.execute(`let spins = 0; while (true) { spins++; }`, { timeoutMs: 30_000 });
    await sleep(1000);
    await kc.interrupt("signal");
    const l = await loop;
    assert.equal(l.reply.content.ename, "KeyboardInterrupt");
    assert.equal(of((await kc.execute("1 + 1")).iopub, "execute_result")[0].content.data["text/plain"], "2");
  });

  it("interrupting a cell that only awaits ends it at once", async () => {
    const cell = kc.execute(`await new Promise(() => {})`, { timeoutMs: 30_000 });
    await sleep(300);
    await kc.interrupt("message");
    const r = await cell;
    assert.equal(r.reply.content.ename, "KeyboardInterrupt");
  });

  it("interrupting native training stops it at the next step; the model stays usable and nothing leaks", async () => {
    const setup = await kc.execute(`const trainSet = await datasets.loadMnist("train", { limit: 20000 });
const testSet = await datasets.loadMnist("test", { limit: 500 });
const model = models.mlp({ hidden: [256], seed: 1, backend: "cpu" });`);
    assert.equal(setup.reply.content.status, "ok", JSON.stringify(setup.reply.content));
    const seen: Message[] = [];
    const cell = kc.execute(`await train(model, { train: trainSet, test: testSet }, { epochs: 50, batchSize: 10, learningRate: 0.01 })`, { onMessage: (m) => seen.push(m), timeoutMs: 60_000 });
    await waitFor(() => of(seen, "update_display_data").length >= 2, 30_000, "live updates of the native training");
    const t0 = Date.now();
    await kc.interrupt("message");
    const r = await cell;
    assert.ok(Date.now() - t0 < 5000, "the training stopped promptly");
    assert.equal(r.reply.content.status, "error");
    assert.equal(r.reply.content.ename, "KeyboardInterrupt");
    assert.match(r.reply.content.evalue, /training was interrupted at step \d+/);
    const id = of(r.iopub, "display_data")[0].content.transient.display_id;
    const last = of(r.iopub, "update_display_data").pop()!.content;
    assert.equal(last.transient.display_id, id);
    assert.match(last.data["text/plain"], /cancelled/);
    // The model is usable, no output of the cancelled run reaches later cells, and training again works.
    const ev = await kc.execute(`const ev = await model.evaluate(testSet); ev.count`);
    assert.equal(of(ev.iopub, "execute_result")[0].content.data["text/plain"], "500");
    await sleep(700);
    const quiet = await kc.execute(`1`);
    assert.deepEqual(types(quiet.iopub), ["status", "execute_input", "execute_result", "status"]);
    const again = await kc.execute(`const run2 = await train(model, { train: testSet }, { epochs: 1, batchSize: 100, learningRate: 0.01 }); run2.status`, { timeoutMs: 60_000 });
    assert.equal(of(again.iopub, "execute_result")[0].content.data["text/plain"], "'done'");
    assert.equal(of(again.iopub, "display_data").length, 1);
    assert.notEqual(of(again.iopub, "display_data")[0].content.transient.display_id, id);
  });
});
