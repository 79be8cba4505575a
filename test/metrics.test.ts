import { strict as assert } from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as arrow from "apache-arrow";
import { isTernlabError } from "../src/errors";
import { MetricsRecorder, epochsPath, loadMetrics, saveMetrics, tableToHtml } from "../src/metrics";

const LAYERS = ["conv1", "fc2"];

function typeOf(t: arrow.Table, name: string): string {
  const f = t.schema.fields.find((x) => x.name === name);
  assert.ok(f, `column ${name} missing (have ${t.schema.fields.map((x) => x.name).join(", ")})`);
  return String(f.type);
}

function recorder(stepsPerEpoch = 3, epochs = 2): MetricsRecorder {
  const rec = new MetricsRecorder({ layers: LAYERS, scheduled: ["temperature"], backend: "cpu" });
  let step = 0;
  for (let e = 1; e <= epochs; e++) {
    for (let i = 0; i < stepsPerEpoch; i++) {
      step++;
      rec.addStep({
        step,
        epoch: e,
        loss: 1 / step,
        train_accuracy: 0.5 + step / 100,
        learning_rate: 0.1,
        images_per_s: 1000 + step,
        wall_time: step * 0.25,
        temperature: 1 / (1 + step),
        "flip_rate/conv1": 0.01 * step,
        "flip_rate/fc2": 0.02 * step,
        "s_w/conv1": 0.5,
        // accept_rate, s_a, active_fraction and the rest left out: NaN
      });
    }
    rec.addEpoch({ epoch: e, step, loss: 0.5 / e, test_accuracy: 0.9 + e / 100, "flip_rate/conv1": 0.02 });
  }
  return rec;
}

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  const fa = Float64Array.from(a);
  const fb = Float64Array.from(b);
  return Buffer.from(fa.buffer).equals(Buffer.from(fb.buffer));
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "ternlab-metrics-"));
}

describe("metrics: MetricsRecorder", () => {
  it("builds the step table with the documented columns and types", () => {
    const t = recorder().steps;
    const names = t.schema.fields.map((f) => f.name);
    for (const c of ["step", "epoch"]) assert.equal(typeOf(t, c), "Int32");
    for (const c of ["loss", "train_accuracy", "learning_rate", "images_per_s", "wall_time", "temperature"]) assert.equal(typeOf(t, c), "Float64");
    for (const m of ["flip_rate", "accept_rate", "s_w", "s_a", "active_fraction"]) {
      for (const l of LAYERS) assert.equal(typeOf(t, `${m}/${l}`), "Float64");
    }
    assert.match(typeOf(t, "backend"), /Dictionary<Int32, Utf8>|Utf8/);
    assert.equal(names.length, 7 + 1 + 5 * 2 + 1);
    assert.equal(t.numRows, 6);
    assert.deepEqual([...t.getChild("step")!.toArray()], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual([...t.getChild("backend")!], ["cpu", "cpu", "cpu", "cpu", "cpu", "cpu"]);
    assert.ok(Number.isNaN(t.getChild("accept_rate/fc2")!.get(0)), "a missing numeric value is NaN");
    assert.equal(t.getChild("flip_rate/fc2")!.get(2), 0.02 * 3);
  });

  it("builds the epoch table with the documented columns and types", () => {
    const t = recorder().epochs;
    for (const c of ["epoch", "step"]) assert.equal(typeOf(t, c), "Int32");
    for (const c of ["loss", "train_accuracy", "test_loss", "test_accuracy", "test_top5", "val_accuracy", "learning_rate", "images_per_s", "wall_time"]) {
      assert.equal(typeOf(t, c), "Float64");
    }
    for (const m of ["flip_rate", "s_w"]) for (const l of LAYERS) assert.equal(typeOf(t, `${m}/${l}`), "Float64");
    assert.equal(t.numRows, 2);
    assert.deepEqual([...t.getChild("step")!.toArray()], [3, 6]);
    assert.ok(Number.isNaN(t.getChild("val_accuracy")!.get(1)), "no validation split: val_accuracy is NaN");
  });

  it("rejects an unknown column by name, and a row without step, leaving the table as it was", () => {
    const rec = recorder();
    assert.throws(
      () => rec.addStep({ step: 7, epoch: 3, loss: 1, flip_rate_conv1: 0.1 }),
      (e: unknown) => isTernlabError(e, "E_INTERNAL") && /"flip_rate_conv1"/.test(e.message),
    );
    assert.throws(() => rec.addStep({ epoch: 3, loss: 1 }), (e: unknown) => isTernlabError(e, "E_INTERNAL") && /"step"/.test(e.message));
    assert.throws(() => rec.addEpoch({ epoch: 1.5, step: 3 }), (e: unknown) => isTernlabError(e, "E_INTERNAL") && /"epoch"/.test(e.message));
    assert.equal(rec.stepCount, 6);
  });

  it("rejects duplicate layer names", () => {
    assert.throws(() => new MetricsRecorder({ layers: ["a", "a"], backend: "cpu" }), (e: unknown) => isTernlabError(e, "E_OPTION") && /"flip_rate\/a"/.test(e.message));
  });

  it("hands out the same Table until rows are added, and never changes a Table it handed out", () => {
    const rec = recorder();
    const a = rec.steps;
    assert.equal(rec.steps, a);
    assert.equal(rec.epochs, rec.epochs);
    // Enough rows to force the column buffers to grow.
    for (let s = 7; s < 1000; s++) rec.addStep({ step: s, epoch: 3, loss: s });
    const b = rec.steps;
    assert.notEqual(b, a);
    assert.equal(a.numRows, 6);
    assert.equal(b.numRows, 999);
    assert.equal(b.getChild("loss")!.get(998), 999);
    rec.truncateToStep(4);
    rec.addStep({ step: 5, epoch: 2, loss: 42 });
    assert.equal(b.getChild("loss")!.get(4), 1 / 5, "a truncate + add must not write into an earlier Table");
    assert.equal(rec.steps.getChild("loss")!.get(4), 42);
  });

  it("latest() gives the last step row, null before the first", () => {
    assert.equal(new MetricsRecorder({ layers: [], backend: "cpu" }).latest(), null);
    const l = recorder().latest()!;
    assert.equal(l.step, 6);
    assert.equal(l.loss, 1 / 6);
    assert.equal(l["flip_rate/fc2"], 0.02 * 6);
  });

  it("epochSummary() gives the epoch row the steps imply: means of loss and flip rates, the last step, wall time, s_w", () => {
    const rec = recorder();
    const m = rec.epochSummary(2);
    assert.equal(m.epoch, 2);
    assert.equal(m.step, 6);
    assert.equal(m.wall_time, 1.5);
    assert.equal(m["s_w/conv1"], 0.5);
    assert.ok(Math.abs(m.loss - (1 / 4 + 1 / 5 + 1 / 6) / 3) < 1e-15);
    assert.ok(Math.abs(m["flip_rate/conv1"] - 0.05) < 1e-15);
    assert.ok(Number.isNaN(m["s_w/fc2"]), "no finite value: NaN");
    assert.ok(!("accept_rate/conv1" in m) && !("temperature" in m), "only epoch-table columns");
    rec.addEpoch({ ...m, test_accuracy: 0.9 });
    assert.equal(rec.epochs.numRows, 3);
  });

  it("truncateToStep drops later steps and epochs", () => {
    const rec = recorder();
    rec.truncateToStep(4);
    assert.equal(rec.stepCount, 4);
    assert.deepEqual([...rec.steps.getChild("step")!.toArray()], [1, 2, 3, 4]);
    assert.deepEqual([...rec.epochs.getChild("epoch")!.toArray()], [1]);
    assert.equal(rec.latest()!.step, 4);
    rec.truncateToStep(100);
    assert.equal(rec.stepCount, 4);
  });

  it("fromTables continues a run: same columns, old rows kept, new rows on the new backend", () => {
    const old = recorder();
    const rec = MetricsRecorder.fromTables(old.steps, old.epochs, "cuda");
    assert.deepEqual(rec.layers, LAYERS);
    assert.deepEqual(rec.scheduled, ["temperature"]);
    assert.deepEqual(
      rec.steps.schema.fields.map((f) => f.name),
      old.steps.schema.fields.map((f) => f.name),
    );
    rec.addStep({ step: 7, epoch: 3, loss: 0.1, temperature: 0.5 });
    assert.equal(rec.stepCount, 7);
    assert.deepEqual([...rec.steps.getChild("backend")!], ["cpu", "cpu", "cpu", "cpu", "cpu", "cpu", "cuda"]);
    assert.ok(sameBits(rec.steps.getChild("loss")!.toArray().subarray(0, 6), old.steps.getChild("loss")!.toArray()));
    assert.equal(rec.epochs.numRows, 2);
  });
});

describe("metrics: files", () => {
  it("derives the epochs file name", () => {
    assert.equal(epochsPath("/r/metrics.arrow"), "/r/metrics-epochs.arrow");
    assert.equal(epochsPath("/r/metrics"), "/r/metrics-epochs");
  });

  it("saves Arrow IPC files (ARROW1 magic) that load back bit-identical, NaN included", async () => {
    const dir = tmpDir();
    const rec = recorder();
    const file = path.join(dir, "metrics.arrow");
    await saveMetrics(file, rec.steps, rec.epochs);
    for (const f of [file, path.join(dir, "metrics-epochs.arrow")]) {
      const bytes = fs.readFileSync(f);
      assert.equal(bytes.subarray(0, 6).toString("latin1"), "ARROW1", `${f} starts with the Arrow file magic`);
      assert.equal(bytes.subarray(bytes.length - 6).toString("latin1"), "ARROW1", `${f} ends with the Arrow file magic`);
      // apache-arrow's own reader on the bytes as they are on disk.
      assert.ok(arrow.tableFromIPC(bytes).numRows > 0);
    }
    assert.deepEqual(fs.readdirSync(dir).sort(), ["metrics-epochs.arrow", "metrics.arrow"], "no temporary file left behind");

    const back = await loadMetrics(file);
    for (const [orig, loaded] of [[rec.steps, back.steps], [rec.epochs, back.epochs]] as const) {
      assert.deepEqual(loaded.schema.fields.map((f) => [f.name, String(f.type)]), orig.schema.fields.map((f) => [f.name, String(f.type)]));
      assert.equal(loaded.numRows, orig.numRows);
      for (const f of orig.schema.fields) {
        const a = orig.getChild(f.name)!;
        const b = loaded.getChild(f.name)!;
        if (f.name === "backend") assert.deepEqual([...b], [...a]);
        else assert.ok(sameBits(b.toArray(), a.toArray()), `column ${f.name} bit-identical`);
      }
    }
    assert.ok(Number.isNaN(back.steps.getChild("accept_rate/conv1")!.get(0)));
    // A folder is read as its metrics.arrow.
    assert.equal((await loadMetrics(dir)).steps.numRows, 6);
    // And a loaded pair resumes.
    assert.equal(MetricsRecorder.fromTables(back.steps, back.epochs, "cpu").stepCount, 6);
  });

  it("saves an empty run", async () => {
    const dir = tmpDir();
    const rec = new MetricsRecorder({ layers: ["l"], backend: "cpu" });
    await saveMetrics(path.join(dir, "metrics.arrow"), rec.steps, rec.epochs);
    const back = await loadMetrics(path.join(dir, "metrics.arrow"));
    assert.equal(back.steps.numRows, 0);
    assert.equal(back.steps.schema.fields.length, rec.steps.schema.fields.length);
  });

  it("replaces an existing file and ignores stale temporary files", async () => {
    const dir = tmpDir();
    const file = path.join(dir, "metrics.arrow");
    const rec = recorder();
    await saveMetrics(file, rec.steps, rec.epochs);
    fs.writeFileSync(`${file}.tmp-99999`, "half a file from a crashed writer");
    fs.writeFileSync(path.join(dir, `metrics-epochs.arrow.tmp-${process.pid}`), "stale");
    rec.addStep({ step: 7, epoch: 3, loss: 0.125 });
    await saveMetrics(file, rec.steps, rec.epochs);
    const back = await loadMetrics(file);
    assert.equal(back.steps.numRows, 7);
    assert.equal(back.steps.getChild("loss")!.get(6), 0.125);
  });

  it("names the file when it is missing or not Arrow", async () => {
    const dir = tmpDir();
    const file = path.join(dir, "metrics.arrow");
    await assert.rejects(loadMetrics(file), (e: unknown) => isTernlabError(e, "E_IO") && e.message.includes(file));
    fs.writeFileSync(file, "<html>not arrow</html>");
    await assert.rejects(loadMetrics(file), (e: unknown) => isTernlabError(e, "E_CHECKPOINT") && e.message.includes(file) && /not an Arrow IPC file/.test(e.message));
    // A valid steps file whose epochs file is missing: the epochs file is named.
    const rec = recorder();
    await saveMetrics(file, rec.steps, rec.epochs);
    fs.rmSync(path.join(dir, "metrics-epochs.arrow"));
    await assert.rejects(loadMetrics(file), (e: unknown) => isTernlabError(e, "E_IO") && e.message.includes("metrics-epochs.arrow"));
    // Truncated Arrow: the magic is there, the rest is not.
    await saveMetrics(file, rec.steps, rec.epochs);
    const bytes = fs.readFileSync(file);
    fs.writeFileSync(file, bytes.subarray(0, 40));
    await assert.rejects(loadMetrics(file), (e: unknown) => isTernlabError(e, "E_CHECKPOINT") && e.message.includes(file));
  });
});

describe("metrics: tableToHtml", () => {
  it("escapes names and values", () => {
    const t = new arrow.Table({ "a<b": arrow.vectorFromArray(["<script>&"], new arrow.Utf8()) });
    const html = tableToHtml(t);
    assert.ok(html.includes("a&lt;b"));
    assert.ok(html.includes("&lt;script&gt;&amp;"));
    assert.ok(!html.includes("<script>"));
  });

  it("caps the rows: head, an omitted-rows line, tail", () => {
    const rec = new MetricsRecorder({ layers: [], backend: "cpu" });
    for (let s = 1; s <= 100; s++) rec.addStep({ step: s, epoch: 1, loss: s / 4 });
    const html = tableToHtml(rec.steps, { maxRows: 6 });
    const rows = html.match(/<tr>/g)!.length - 1; // minus the header row
    assert.equal(rows, 6);
    assert.ok(html.includes("… 94 rows omitted …"));
    assert.ok(html.includes("<td>1</td>") && html.includes("<td>100</td>"));
    assert.ok(!html.includes("<td>50</td>"));
    assert.ok(html.includes("<td>NaN</td>"));
    assert.ok(!tableToHtml(rec.steps, { maxRows: 1000 }).includes("omitted"));
  });
});
