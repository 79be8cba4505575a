/**
 * Metrics of a run as Apache Arrow tables: one row per step, one row per epoch (DESIGN.md,
 * "Metrics"; column names from ALGORITHM.md §4). Saved as Arrow IPC files (Feather v2), which
 * pyarrow, pandas and polars read as they are.
 *
 * The recorder keeps each column in a growable typed array, so adding a row is a few stores and
 * reading `steps` during training costs one Table construction (no copy) per batch of new rows.
 * A Table once handed out never changes: rows are only appended past its end, and truncation
 * copies into fresh buffers.
 */
import * as fs from "fs";
import * as nodePath from "path";
import * as arrow from "apache-arrow";
import { TernlabError } from "./errors";

/**
 * Step-table columns every run has, in order (`backend` comes last, after the per-layer ones).
 * `step` counts from 0 (it is the Philox counter of the step); `epoch` counts from 1, in both
 * tables: epoch 1 is the first pass over the data, and its epoch row holds the figures after it.
 */
export const STEP_COLUMNS = [
  "step",
  "epoch",
  "loss",
  "train_accuracy",
  "learning_rate",
  "images_per_s",
  "wall_time",
] as const;

/** Per-layer step columns, named `<metric>/<layer>`. */
export const STEP_LAYER_METRICS = ["flip_rate", "accept_rate", "s_w", "s_a", "active_fraction"] as const;

/** Epoch-table columns every run has, in order. Accuracies are fractions in [0, 1]. */
export const EPOCH_COLUMNS = [
  "epoch",
  "step",
  "loss",
  "train_accuracy",
  "test_loss",
  "test_accuracy",
  "test_top5",
  "val_accuracy",
  "learning_rate",
  "images_per_s",
  "wall_time",
] as const;

/** Per-layer epoch columns: the mean flip rate over the epoch and `s_w` at its end. */
export const EPOCH_LAYER_METRICS = ["flip_rate", "s_w"] as const;

/** Columns held as Int32; every other numeric column is Float64. */
const INT_COLUMNS = new Set(["step", "epoch"]);
const BACKEND = "backend";

type NumArray = Int32Array | Float64Array;

/**
 * One table's columns in growable typed arrays, plus (for the step table) a dictionary-encoded
 * backend column.
 */
class ColumnStore {
  readonly names: string[];
  private readonly index = new Map<string, number>();
  private cols: NumArray[];
  private backendCodes: Int32Array | null;
  private readonly backends: string[] = [];
  private length = 0;
  private capacity: number;
  private cached: arrow.Table | null = null;

  constructor(
    readonly what: "step" | "epoch",
    names: string[],
    withBackend: boolean,
    capacity = 256,
  ) {
    this.names = names;
    names.forEach((n, i) => {
      if (this.index.has(n) || n === BACKEND) {
        throw new TernlabError(
          "E_OPTION",
          `metrics: column "${n}" of the ${what} table is declared twice. ` +
            `Give every layer and every scheduled value a distinct name (and none named "${BACKEND}").`,
        );
      }
      this.index.set(n, i);
    });
    this.capacity = Math.max(1, capacity);
    this.cols = names.map((n) => this.alloc(n, this.capacity));
    this.backendCodes = withBackend ? new Int32Array(this.capacity) : null;
  }

  get rows(): number {
    return this.length;
  }

  has(name: string): boolean {
    return this.index.has(name);
  }

  private alloc(name: string, n: number): NumArray {
    return INT_COLUMNS.has(name) ? new Int32Array(n) : new Float64Array(n);
  }

  private grow(min: number): void {
    let cap = this.capacity;
    while (cap < min) cap *= 2;
    if (cap === this.capacity) return;
    this.cols = this.cols.map((c, i) => {
      const d = this.alloc(this.names[i], cap);
      d.set(c.subarray(0, this.length));
      return d;
    });
    if (this.backendCodes) {
      const b = new Int32Array(cap);
      b.set(this.backendCodes.subarray(0, this.length));
      this.backendCodes = b;
    }
    this.capacity = cap;
  }

  backendCode(name: string): number {
    let i = this.backends.indexOf(name);
    if (i < 0) {
      this.backends.push(name);
      i = this.backends.length - 1;
    }
    return i;
  }

  /** Validates the whole row before storing anything, so a bad row leaves the table as it was. */
  add(row: Record<string, number>, backend: number): void {
    if (row === null || typeof row !== "object") {
      throw new TernlabError("E_INTERNAL", `metrics: a ${this.what} row must be an object of numbers, got ${row === null ? "null" : typeof row}.`);
    }
    for (const [k, v] of Object.entries(row)) {
      if (!this.index.has(k)) {
        throw new TernlabError(
          "E_INTERNAL",
          `metrics: unknown ${this.what} column "${k}" (columns: ${this.names.join(", ")}). ` +
            `Fix the name, or declare the layer or scheduled value when creating the MetricsRecorder.`,
        );
      }
      if (typeof v !== "number") {
        throw new TernlabError("E_INTERNAL", `metrics: ${this.what} column "${k}" must be a number, got ${typeof v} (${String(v)}).`);
      }
      if (INT_COLUMNS.has(k) && !(Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff)) {
        throw new TernlabError("E_INTERNAL", `metrics: ${this.what} column "${k}" must be a 32-bit integer, got ${v}.`);
      }
    }
    for (const k of INT_COLUMNS) {
      if (this.index.has(k) && row[k] === undefined) {
        throw new TernlabError("E_INTERNAL", `metrics: every ${this.what} row needs "${k}" (an integer); it is missing.`);
      }
    }
    this.grow(this.length + 1);
    const r = this.length;
    for (let i = 0; i < this.names.length; i++) {
      const v = row[this.names[i]];
      this.cols[i][r] = v === undefined ? NaN : v;
    }
    if (this.backendCodes) this.backendCodes[r] = backend;
    this.length++;
    this.cached = null;
  }

  /** Appends every row of an Arrow table that has (a subset of) these columns. */
  addTable(t: arrow.Table, fallbackBackend: string, file: string): void {
    const n = t.numRows;
    this.grow(this.length + n);
    for (let i = 0; i < this.names.length; i++) {
      const name = this.names[i];
      const dst = this.cols[i];
      const v = t.getChild(name);
      if (!v) {
        if (INT_COLUMNS.has(name)) {
          throw new TernlabError(
            "E_CHECKPOINT",
            `metrics: the ${this.what} table${file} has no "${name}" column (columns: ${columnNames(t).join(", ")}); ` +
              `it is not a ternlab metrics table. Pass the tables from loadMetrics() of a ternlab run.`,
          );
        }
        dst.fill(NaN, this.length, this.length + n);
        continue;
      }
      const src = numericValues(v, INT_COLUMNS.has(name));
      dst.set(src, this.length);
    }
    if (this.backendCodes) {
      const v = t.getChild(BACKEND);
      for (let r = 0; r < n; r++) {
        const s = v ? v.get(r) : null;
        this.backendCodes[this.length + r] = this.backendCode(typeof s === "string" ? s : fallbackBackend);
      }
    }
    this.length += n;
    this.cached = null;
  }

  column(name: string): NumArray {
    return this.cols[this.index.get(name)!].subarray(0, this.length);
  }

  /** Keeps the rows where keep(row) holds; copies into fresh buffers so handed-out Tables stay intact. */
  filter(keep: (row: number) => boolean): void {
    const rows: number[] = [];
    for (let r = 0; r < this.length; r++) if (keep(r)) rows.push(r);
    if (rows.length === this.length) return;
    const cap = Math.max(1, this.capacity);
    this.cols = this.cols.map((c, i) => {
      const d = this.alloc(this.names[i], cap);
      rows.forEach((r, j) => (d[j] = c[r]));
      return d;
    });
    if (this.backendCodes) {
      const b = new Int32Array(cap);
      rows.forEach((r, j) => (b[j] = this.backendCodes![r]));
      this.backendCodes = b;
    }
    this.length = rows.length;
    this.cached = null;
  }

  row(r: number): Record<string, number> {
    const o: Record<string, number> = {};
    for (let i = 0; i < this.names.length; i++) o[this.names[i]] = this.cols[i][r];
    return o;
  }

  table(): arrow.Table {
    if (this.cached) return this.cached;
    const n = this.length;
    const vectors: Record<string, arrow.Vector> = {};
    for (let i = 0; i < this.names.length; i++) {
      // A view, not a copy: later rows are written past n, so this Table never sees them.
      vectors[this.names[i]] = arrow.makeVector(this.cols[i].subarray(0, n) as Float64Array);
    }
    if (this.backendCodes) {
      const type = new arrow.Dictionary(new arrow.Utf8(), new arrow.Int32());
      vectors[BACKEND] = arrow.makeVector(
        arrow.makeData({
          type,
          length: n,
          nullCount: 0,
          data: this.backendCodes.subarray(0, n),
          dictionary: arrow.vectorFromArray([...this.backends], new arrow.Utf8()),
        }),
      );
    }
    this.cached = new arrow.Table(vectors);
    return this.cached;
  }
}

function columnNames(t: arrow.Table): string[] {
  return t.schema.fields.map((f) => f.name);
}

/** A numeric Arrow column as a typed array (nulls become NaN; 64-bit integers become numbers). */
function numericValues(v: arrow.Vector, asInt: boolean): ArrayLike<number> {
  const n = v.length;
  if (v.nullCount === 0) {
    const a = v.toArray() as unknown;
    if (a instanceof Float64Array || a instanceof Int32Array) return a;
    if (a instanceof BigInt64Array || a instanceof BigUint64Array) return Array.from(a, Number);
    if (ArrayBuffer.isView(a)) return Array.from(a as unknown as ArrayLike<number>, Number);
  }
  const out = asInt ? new Int32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const x = v.get(i);
    out[i] = x === null || x === undefined ? NaN : Number(x);
  }
  return out;
}

export interface MetricsRecorderOptions {
  /** Layer names; each gets the per-layer columns `<metric>/<layer>`. */
  layers: string[];
  /** Scheduled scalar columns of the step table (e.g. `temperature`, `m`). */
  scheduled?: string[];
  /** The backend rows added from now on ran on (`cpu`, `cuda`). */
  backend: string;
}

/** Collects a run's step and epoch rows; see the column lists above. */
export class MetricsRecorder {
  readonly layers: readonly string[];
  readonly scheduled: readonly string[];
  readonly backend: string;
  private readonly stepStore: ColumnStore;
  private readonly epochStore: ColumnStore;
  private readonly backendCode: number;

  /** `extraEpochColumns`: further Float64 epoch columns (fromTables keeps those of a saved run). */
  constructor(opts: MetricsRecorderOptions, extraEpochColumns: string[] = []) {
    if (!opts || !Array.isArray(opts.layers)) {
      throw new TernlabError("E_OPTION", `MetricsRecorder: option "layers" must be an array of layer names.`);
    }
    if (typeof opts.backend !== "string" || opts.backend === "") {
      throw new TernlabError("E_OPTION", `MetricsRecorder: option "backend" must be a non-empty string ("cpu" or "cuda"), got ${String(opts.backend)}.`);
    }
    this.layers = [...opts.layers];
    this.scheduled = [...(opts.scheduled ?? [])];
    this.backend = opts.backend;
    for (const l of this.layers) {
      if (typeof l !== "string" || l === "") {
        throw new TernlabError("E_OPTION", `MetricsRecorder: layer names must be non-empty strings, got ${JSON.stringify(l)}.`);
      }
    }
    const perLayer = (metrics: readonly string[]) => metrics.flatMap((m) => this.layers.map((l) => `${m}/${l}`));
    this.stepStore = new ColumnStore(
      "step",
      [...STEP_COLUMNS, ...this.scheduled, ...perLayer(STEP_LAYER_METRICS)],
      true,
    );
    this.epochStore = new ColumnStore("epoch", [...EPOCH_COLUMNS, ...perLayer(EPOCH_LAYER_METRICS), ...extraEpochColumns], false, 16);
    this.backendCode = this.stepStore.backendCode(this.backend);
  }

  /** Adds one step row. Missing numeric columns are NaN; `step` and `epoch` are required. */
  addStep(row: Record<string, number>): void {
    this.stepStore.add(row, this.backendCode);
  }

  /** Adds one epoch row (`epochSummary(epoch)` gives the part the step rows imply). */
  addEpoch(row: Record<string, number>): void {
    this.epochStore.add(row, 0);
  }

  /** The step table; the same object until a row is added or removed. */
  get steps(): arrow.Table {
    return this.stepStore.table();
  }

  /** The epoch table; the same object until a row is added or removed. */
  get epochs(): arrow.Table {
    return this.epochStore.table();
  }

  get stepCount(): number {
    return this.stepStore.rows;
  }

  get epochCount(): number {
    return this.epochStore.rows;
  }

  /** The last step row (numeric columns only), or null before the first step. */
  latest(): Record<string, number> | null {
    const n = this.stepStore.rows;
    return n === 0 ? null : this.stepStore.row(n - 1);
  }

  /**
   * The epoch-table row that the step rows of `epoch` imply: the means over the epoch of `loss`,
   * `train_accuracy`, `images_per_s` and `flip_rate/<layer>` (NaNs skipped), and the last step's
   * `step`, `wall_time`, `learning_rate` and `s_w/<layer>`. Add the test and validation figures
   * and pass it to addEpoch(). Columns without a finite value over the epoch are NaN.
   */
  epochSummary(epoch: number): Record<string, number> {
    const ep = this.stepStore.column("epoch");
    const rows: number[] = [];
    for (let r = 0; r < ep.length; r++) if (ep[r] === epoch) rows.push(r);
    const out: Record<string, number> = { epoch };
    const lastRow = rows.length ? rows[rows.length - 1] : -1;
    for (const name of this.epochStore.names) {
      if (name === "epoch" || !this.stepStore.has(name)) continue;
      const c = this.stepStore.column(name);
      const mean = name === "loss" || name === "train_accuracy" || name === "images_per_s" || name.startsWith("flip_rate/");
      if (!mean) {
        out[name] = lastRow < 0 ? NaN : c[lastRow];
        continue;
      }
      let s = 0;
      let k = 0;
      for (const r of rows) {
        const v = c[r];
        if (!Number.isNaN(v)) {
          s += v;
          k++;
        }
      }
      out[name] = k ? s / k : NaN;
    }
    if (lastRow < 0) delete out.step;
    return out;
  }

  /** Drops step and epoch rows with step > `step` (resume from a checkpoint taken at `step`). */
  truncateToStep(step: number): void {
    const s = this.stepStore.column("step");
    this.stepStore.filter((r) => s[r] <= step);
    const e = this.epochStore.column("step");
    this.epochStore.filter((r) => e[r] <= step);
  }

  /**
   * A recorder that continues a saved run: layers and scheduled columns are read from the step
   * table's column names; new rows are recorded as run on `backend`.
   */
  static fromTables(steps: arrow.Table, epochs: arrow.Table, backend: string): MetricsRecorder {
    for (const [what, t] of [["step", steps], ["epoch", epochs]] as const) {
      if (!(t instanceof arrow.Table)) {
        throw new TernlabError("E_INTERNAL", `MetricsRecorder.fromTables: the ${what} table must be an apache-arrow Table (from loadMetrics()).`);
      }
    }
    const stepNames = columnNames(steps);
    const layers: string[] = [];
    const fixedStep = new Set<string>([...STEP_COLUMNS, BACKEND]);
    const scheduled: string[] = [];
    for (const name of stepNames) {
      const slash = name.indexOf("/");
      const metric = slash < 0 ? "" : name.slice(0, slash);
      if ((STEP_LAYER_METRICS as readonly string[]).includes(metric)) {
        const layer = name.slice(slash + 1);
        if (!layers.includes(layer)) layers.push(layer);
      } else if (!fixedStep.has(name)) {
        scheduled.push(name);
      }
    }
    const perLayerEpoch = new Set(EPOCH_LAYER_METRICS.flatMap((m) => layers.map((l) => `${m}/${l}`)));
    const extraEpoch = columnNames(epochs).filter(
      (n) => !(EPOCH_COLUMNS as readonly string[]).includes(n) && !perLayerEpoch.has(n),
    );
    const rec = new MetricsRecorder({ layers, scheduled, backend }, extraEpoch);
    rec.stepStore.addTable(steps, backend, "");
    rec.epochStore.addTable(epochs, backend, "");
    return rec;
  }
}

// ---------------------------------------------------------------------------------------------
// Files

/** The epoch file beside a step file: `-epochs` inserted before the extension. */
export function epochsPath(path: string): string {
  const ext = nodePath.extname(path);
  return ext ? path.slice(0, -ext.length) + "-epochs" + ext : path + "-epochs";
}

/**
 * Writes `data` to `path` atomically: a temporary file beside it, fsynced, then renamed over the
 * target (and the folder fsynced), so a crash leaves the old file or the new one, never half.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string, what = "file"): Promise<void> {
  const tmp = await writeTemp(path, data, what);
  await commitTemp(tmp, path, what);
}

async function writeTemp(path: string, data: Uint8Array | string, what: string): Promise<string> {
  const tmp = `${path}.tmp-${process.pid}`;
  let fh: fs.promises.FileHandle | null = null;
  try {
    await fs.promises.mkdir(nodePath.dirname(nodePath.resolve(path)), { recursive: true });
    fh = await fs.promises.open(tmp, "w");
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = null;
    return tmp;
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw ioError(what, path, e);
  }
}

async function commitTemp(tmp: string, path: string, what: string): Promise<void> {
  try {
    await fs.promises.rename(tmp, path);
  } catch (e) {
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw ioError(what, path, e);
  }
  // Make the rename itself durable; not every platform can open a folder, hence best effort.
  try {
    const dir = await fs.promises.open(nodePath.dirname(nodePath.resolve(path)), "r");
    await dir.sync().catch(() => undefined);
    await dir.close();
  } catch {
    /* best effort */
  }
}

function ioError(what: string, path: string, e: unknown): TernlabError {
  const err = e as NodeJS.ErrnoException;
  return new TernlabError(
    "E_IO",
    `cannot write ${what} "${path}": ${err?.code ?? ""} ${err?.message ?? String(e)}. ` +
      `Check that the folder is writable and the disk is not full.`,
    { cause: e },
  );
}

/**
 * Saves the step table to `path` (conventionally `<run>/metrics.arrow`) and the epoch table beside
 * it (`metrics-epochs.arrow`), as Arrow IPC files. Both are written before either replaces its old
 * version, so the pair stays consistent unless the crash falls between the two renames.
 */
export async function saveMetrics(path: string, steps: arrow.Table, epochs: arrow.Table): Promise<void> {
  for (const [what, t] of [["step", steps], ["epoch", epochs]] as const) {
    if (!(t instanceof arrow.Table)) {
      throw new TernlabError("E_INTERNAL", `saveMetrics: the ${what} table must be an apache-arrow Table (MetricsRecorder.${what}s).`);
    }
  }
  const ePath = epochsPath(path);
  const stepBytes = arrow.tableToIPC(steps, "file");
  const epochBytes = arrow.tableToIPC(epochs, "file");
  const tmpE = await writeTemp(ePath, epochBytes, "metrics file");
  let tmpS: string;
  try {
    tmpS = await writeTemp(path, stepBytes, "metrics file");
  } catch (e) {
    await fs.promises.rm(tmpE, { force: true }).catch(() => undefined);
    throw e;
  }
  await commitTemp(tmpE, ePath, "metrics file");
  await commitTemp(tmpS, path, "metrics file");
}

const ARROW_MAGIC = "ARROW1";

async function readArrowFile(path: string, what: string): Promise<arrow.Table> {
  let bytes: Buffer;
  try {
    bytes = await fs.promises.readFile(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const fix =
      err.code === "ENOENT"
        ? `Check the path: a ternlab run folder holds metrics.arrow and metrics-epochs.arrow.`
        : `Check the file's permissions.`;
    throw new TernlabError("E_IO", `cannot read ${what} "${path}": ${err.code ?? ""} ${err.message}. ${fix}`, { cause: e });
  }
  const head = bytes.subarray(0, 6).toString("latin1");
  if (head !== ARROW_MAGIC) {
    throw new TernlabError(
      "E_CHECKPOINT",
      `${what} "${path}" is not an Arrow IPC file (starts 0x${bytes.subarray(0, 8).toString("hex") || "(empty)"}, ` +
        `expected "${ARROW_MAGIC}"). Replace it with the file a ternlab run wrote, or delete it to start the metrics afresh.`,
    );
  }
  try {
    return arrow.tableFromIPC(bytes);
  } catch (e) {
    throw new TernlabError(
      "E_CHECKPOINT",
      `${what} "${path}" is a damaged Arrow IPC file (${(e as Error).message}). ` +
        `Replace it with an intact copy, or delete it to start the metrics afresh.`,
      { cause: e },
    );
  }
}

/** Reads the step table from `path` (or `<path>/metrics.arrow` when `path` is a folder) and the epoch table beside it. */
export async function loadMetrics(path: string): Promise<{ steps: arrow.Table; epochs: arrow.Table }> {
  let p = path;
  try {
    if ((await fs.promises.stat(p)).isDirectory()) p = nodePath.join(p, "metrics.arrow");
  } catch {
    /* missing: reported by readArrowFile with the path */
  }
  const steps = await readArrowFile(p, "metrics file");
  const epochs = await readArrowFile(epochsPath(p), "metrics file");
  return { steps, epochs };
}

// ---------------------------------------------------------------------------------------------
// HTML

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

function formatCell(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "NaN";
    if (Number.isInteger(v) || !Number.isFinite(v)) return String(v);
    return String(Number(v.toPrecision(6)));
  }
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "string") return v;
  const j = (v as { toJSON?: () => unknown }).toJSON;
  if (typeof j === "function") return JSON.stringify(j.call(v));
  return String(v);
}

/**
 * An HTML table of an Arrow table for notebook display: at most `maxRows` rows (the first and last
 * halves, with a "… N rows omitted …" row between), every name and value escaped.
 */
export function tableToHtml(t: arrow.Table, opts: { maxRows?: number } = {}): string {
  const maxRows = opts.maxRows ?? 20;
  if (!Number.isInteger(maxRows) || maxRows < 0) {
    throw new TernlabError("E_OPTION", `tableToHtml: option "maxRows" must be a non-negative integer, got ${String(opts.maxRows)}.`);
  }
  const names = columnNames(t);
  const cols = names.map((n) => t.getChild(n)!);
  const n = t.numRows;
  const head = n > maxRows ? Math.ceil(maxRows / 2) : n;
  const tail = n > maxRows ? maxRows - head : 0;
  const row = (r: number) => `<tr>${cols.map((c) => `<td>${escapeHtml(formatCell(c.get(r)))}</td>`).join("")}</tr>`;
  const body: string[] = [];
  for (let r = 0; r < head; r++) body.push(row(r));
  if (n > maxRows) {
    const omitted = n - head - tail;
    body.push(`<tr class="ternlab-omitted"><td colspan="${Math.max(1, names.length)}" style="text-align:center">… ${omitted} rows omitted …</td></tr>`);
  }
  for (let r = n - tail; r < n; r++) body.push(row(r));
  return (
    `<table class="ternlab-table">` +
    `<thead><tr>${names.map((nm) => `<th>${escapeHtml(nm)}</th>`).join("")}</tr></thead>` +
    `<tbody>${body.join("")}</tbody>` +
    `<caption style="caption-side:bottom;text-align:left">${n} rows × ${names.length} columns</caption>` +
    `</table>`
  );
}
