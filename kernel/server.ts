/**
 * The ternlab kernel: sockets, one handler per request type, execution counting, history,
 * interrupts and display. Code execution is tslab's (kernel/engine.ts).
 *
 * Shell requests are handled one at a time in arrival order; control requests (interrupt,
 * shutdown, kernel_info) are handled as they arrive, even while a cell runs.
 */
import * as fs from "fs";
import { randomUUID } from "crypto";
import * as zmq from "zeromq";
import {
  ConnectionInfo,
  Message,
  Signer,
  WireError,
  decode,
  encode,
  endpoint,
  newMessage,
  parseConnectionInfo,
  PROTOCOL_VERSION,
} from "./wire";
import { Engine, ErrorContent, compileErrorContent, errorContent, isComplete, isInterruptError, readPackageVersion, typescriptVersion } from "./engine";
import { History } from "./history";
import { LiveDisplay } from "./live";
import { mimeBundle, setDisplayHost, MimeBundle, DisplayOutput, plainText, PLOTLY_MIME, Figure, withFallbackPng } from "../src/display";
import { setLiveHost, cancelAll } from "../src/live";
import { TernlabError } from "../src/errors";

type Sock = zmq.Router | zmq.Publisher | zmq.Reply;

/** Sends on one socket one message at a time (zeromq.js allows one pending send per socket). */
class Outbox {
  private chain: Promise<void> = Promise.resolve();
  constructor(
    private readonly sock: Sock,
    private readonly log: (s: string) => void,
  ) {}
  send(frames: Buffer[]): void {
    this.chain = this.chain.then(
      () => (this.sock.closed ? undefined : (this.sock as any).send(frames)),
    ).catch((e: Error) => this.log(`send failed: ${e.message}`));
  }
  drain(): Promise<void> {
    return this.chain;
  }
}

export interface KernelOptions {
  /** Milliseconds between two live-training display updates. */
  liveIntervalMs?: number;
  /** Milliseconds an interrupt waits for cancelled trainings to stop before ending the cell. */
  interruptGraceMs?: number;
  /** Render image/png for figures through headless Chromium (when a browser is installed). */
  figurePng?: boolean;
  /** Exit the process after a shutdown_request (false in tests that embed the kernel). */
  exitOnShutdown?: boolean;
  /** Load ternlab into cells before the first one runs. */
  preload?: boolean;
}

export class Kernel {
  readonly conn: ConnectionInfo;
  private readonly signer: Signer;
  private readonly session = randomUUID();
  private shell = new zmq.Router();
  private control = new zmq.Router();
  private stdin = new zmq.Router();
  private iopub = new zmq.Publisher();
  private hb = new zmq.Reply();
  private out!: { shell: Outbox; control: Outbox; stdin: Outbox; iopub: Outbox };
  private engine!: Engine;
  private history = new History();
  private executionCount = 0;
  /** The execute_request whose outputs new output goes to (also after it ended, as in IPython). */
  private parent: Message | null = null;
  private running: { msg: Message; interrupted: boolean; timer?: NodeJS.Timeout } | null = null;
  private shellQueue: Message[] = [];
  private shellBusy = false;
  private stream: { name: "stdout" | "stderr"; text: string; parent: Message; timer: NodeJS.Timeout } | null = null;
  private ready!: Promise<void>;
  private preloadWarning: string | null = null;
  private closed = false;
  private readonly opts: Required<KernelOptions>;
  private readonly origStdoutWrite = process.stdout.write.bind(process.stdout);
  private readonly origStderrWrite = process.stderr.write.bind(process.stderr);
  private readonly sigint = () => this.interrupt("SIGINT");

  constructor(conn: ConnectionInfo, opts: KernelOptions = {}) {
    this.conn = conn;
    this.signer = new Signer(conn.key, conn.signature_scheme);
    this.opts = {
      liveIntervalMs: opts.liveIntervalMs ?? Number(process.env.TERNLAB_LIVE_INTERVAL_MS ?? 500),
      interruptGraceMs: opts.interruptGraceMs ?? 5000,
      figurePng: opts.figurePng ?? process.env.TERNLAB_FIGURE_PNG !== "0",
      exitOnShutdown: opts.exitOnShutdown ?? true,
      preload: opts.preload ?? true,
    };
  }

  static fromConnectionFile(file: string, opts?: KernelOptions): Kernel {
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e) {
      throw new TernlabError("E_KERNEL", `connection file ${file}: cannot be read (${(e as Error).message}); Jupyter passes it as {connection_file} when it starts the kernel`);
    }
    return new Kernel(parseConnectionInfo(text, file), opts);
  }

  /** A line on the kernel's own stderr (the terminal Jupyter runs in), never in a cell. */
  log(s: string): void {
    this.origStderrWrite(`[ternlab kernel] ${s}\n`);
  }

  async start(): Promise<void> {
    const log = (s: string) => this.log(s);
    this.out = {
      shell: new Outbox(this.shell, log),
      control: new Outbox(this.control, log),
      stdin: new Outbox(this.stdin, log),
      iopub: new Outbox(this.iopub, log),
    };
    for (const s of [this.shell, this.control, this.stdin, this.iopub, this.hb]) s.linger = 1000;
    const c = this.conn;
    await Promise.all([
      this.shell.bind(endpoint(c, c.shell_port)),
      this.control.bind(endpoint(c, c.control_port)),
      this.stdin.bind(endpoint(c, c.stdin_port)),
      this.iopub.bind(endpoint(c, c.iopub_port)),
      this.hb.bind(endpoint(c, c.hb_port)),
    ]);
    this.engine = new Engine(process.cwd());
    this.installOutputHooks();
    process.on("SIGINT", this.sigint);
    this.receive(this.shell, "shell", (m) => this.enqueueShell(m));
    this.receive(this.control, "control", (m) => void this.handleControl(m));
    this.receive(this.stdin, "stdin", () => undefined);
    void (async () => {
      for await (const frames of this.hb) await this.hb.send(frames).catch(() => undefined);
    })().catch(() => undefined);
    this.publish("status", { execution_state: "starting" }, null);
    // Preloading compiles ternlab's types (seconds): let sockets answer first.
    this.ready = new Promise((r) => setImmediate(r)).then(() => (this.opts.preload ? this.preload() : undefined));
  }

  // ------------------------------------------------------------ sockets

  private receive(sock: zmq.Router, name: string, handle: (m: Message) => void): void {
    void (async () => {
      for await (const frames of sock) {
        let msg: Message;
        try {
          msg = decode(frames as Buffer[], this.signer);
        } catch (e) {
          // Unsigned or mis-signed messages are dropped unanswered: they may be forged.
          this.log(`rejected a message on ${name}: ${e instanceof WireError ? e.message : String(e)}`);
          continue;
        }
        handle(msg);
      }
    })().catch((e) => {
      if (!this.closed) this.log(`${name} socket failed: ${(e as Error).message}`);
    });
  }

  private send(box: Outbox, msg: Message): void {
    box.send(encode(msg, this.signer));
  }

  private reply(sockName: "shell" | "control", req: Message, type: string, content: unknown): void {
    this.send(this.out[sockName], newMessage(type, content, { session: this.session, parent: req }));
  }

  /** Publish on iopub. Buffered stream text always goes out first, so output stays in order. */
  publish(type: string, content: unknown, parent: Message | null): void {
    if (type !== "stream") this.flushStream();
    const msg = newMessage(type, content, { session: this.session, parent: parent ?? undefined, identities: [Buffer.from(type)] });
    if (!parent) msg.parent_header = {};
    this.send(this.out.iopub, msg);
  }

  private writeStream(name: "stdout" | "stderr", text: string): void {
    const parent = this.parent;
    if (!parent) {
      (name === "stdout" ? this.origStdoutWrite : this.origStderrWrite)(text);
      return;
    }
    if (this.stream && (this.stream.name !== name || this.stream.parent !== parent)) this.flushStream();
    if (this.stream) this.stream.text += text;
    else this.stream = { name, text, parent, timer: setTimeout(() => this.flushStream(), 50) };
    if (this.stream.text.length > 1 << 16) this.flushStream();
  }

  private flushStream(): void {
    const s = this.stream;
    if (!s) return;
    this.stream = null;
    clearTimeout(s.timer);
    this.publish("stream", { name: s.name, text: s.text }, s.parent);
  }

  private installOutputHooks(): void {
    const hook = (name: "stdout" | "stderr") =>
      ((chunk: string | Uint8Array, enc?: any, cb?: any) => {
        const text = typeof chunk === "string" ? chunk : Buffer.from(chunk).toString(typeof enc === "string" ? (enc as BufferEncoding) : "utf8");
        this.writeStream(name, text);
        const done = typeof enc === "function" ? enc : cb;
        if (typeof done === "function") process.nextTick(done);
        return true;
      }) as typeof process.stdout.write;
    process.stdout.write = hook("stdout");
    process.stderr.write = hook("stderr");

    setDisplayHost({
      display: (out: DisplayOutput, o) => {
        this.publish(o.update ? "update_display_data" : "display_data", { data: out.data, metadata: out.metadata, transient: o.displayId ? { display_id: o.displayId } : {} }, this.parent);
      },
      clearOutput: (wait) => this.publish("clear_output", { wait }, this.parent),
    });
    // tslab's own display API (import * as tslab from "tslab") reaches the same place.
    const tslabJupyter = require("tslab/dist/jupyter");
    tslabJupyter.lastWriteDisplayData = (d: { data: MimeBundle; metadata?: object; transient?: object }, update: boolean) =>
      this.publish(update ? "update_display_data" : "display_data", { data: normaliseData(d.data), metadata: d.metadata ?? {}, transient: d.transient ?? {} }, this.parent);

    setLiveHost(new LiveDisplay((out, id, update, parent) => {
      this.publish(update ? "update_display_data" : "display_data", { data: out.data, metadata: out.metadata, transient: { display_id: id } }, parent);
    }, () => this.parent, this.opts.liveIntervalMs));
  }

  /** Runs once before the first cell: `ternlab`'s exports become names every cell can use. */
  private async preload(): Promise<void> {
    const t0 = Date.now();
    const display = await this.engine.execute(
      `import { display, updateDisplay, clearOutput } from "ternlab/dist/src/display";`,
    );
    let names: string[] = [];
    try {
      const lib = require("ternlab");
      names = Object.keys(lib).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n) && !["display", "updateDisplay", "clearOutput", "default"].includes(n));
    } catch (e) {
      this.preloadWarning = `ternlab could not be loaded, so its names are not predefined in cells: ${(e as Error).message.split("\n")[0]}. Build it with \`npm run build\`, then restart the kernel.`;
    }
    if (names.length > 0) {
      const r = await this.engine.execute(`import * as ternlab from "ternlab";\nimport { ${names.join(", ")} } from "ternlab";`);
      if (r.kind !== "ok") {
        const why = r.kind === "compile-error" ? compileErrorContent(r.diagnostics).evalue : errorContent(r.error).evalue;
        this.preloadWarning = `ternlab's names could not be predefined in cells (${why}); import them yourself: import { models, train } from "ternlab";`;
      }
    }
    if (display.kind !== "ok") this.log(`display helpers were not preloaded: ${JSON.stringify(display)}`);
    if (this.preloadWarning) this.log(this.preloadWarning);
    if (process.env.TERNLAB_KERNEL_DEBUG) this.log(`preload took ${Date.now() - t0} ms`);
  }

  // ------------------------------------------------------------ shell

  private enqueueShell(msg: Message): void {
    this.shellQueue.push(msg);
    if (!this.shellBusy) void this.pumpShell();
  }

  private async pumpShell(): Promise<void> {
    this.shellBusy = true;
    try {
      while (this.shellQueue.length > 0) {
        const msg = this.shellQueue.shift()!;
        this.publish("status", { execution_state: "busy" }, msg);
        try {
          await this.handleShell(msg);
        } catch (e) {
          this.log(`error handling ${msg.header.msg_type}: ${(e as Error).stack ?? e}`);
        } finally {
          this.publish("status", { execution_state: "idle" }, msg);
        }
      }
    } finally {
      this.shellBusy = false;
    }
  }

  private async handleShell(msg: Message): Promise<void> {
    const type = msg.header.msg_type;
    switch (type) {
      case "kernel_info_request":
        return this.reply("shell", msg, "kernel_info_reply", this.kernelInfo());
      case "execute_request":
        await this.ready;
        return this.handleExecute(msg);
      case "is_complete_request":
        return this.reply("shell", msg, "is_complete_reply", isComplete(String(msg.content.code ?? "")));
      case "complete_request":
        await this.ready;
        return this.reply("shell", msg, "complete_reply", this.completeReply(msg));
      case "inspect_request":
        await this.ready;
        return this.reply("shell", msg, "inspect_reply", this.inspectReply(msg));
      case "history_request":
        return this.reply("shell", msg, "history_reply", { status: "ok", history: this.history.query(msg.content) });
      case "comm_info_request":
        return this.reply("shell", msg, "comm_info_reply", { status: "ok", comms: {} });
      case "connect_request":
        return this.reply("shell", msg, "connect_reply", this.connectReply());
      case "shutdown_request":
        return this.shutdown("shell", msg);
      case "comm_open":
        // No comm targets exist: close it at once, as ipykernel does for unknown targets.
        return this.publish("comm_close", { comm_id: msg.content.comm_id, data: {} }, msg);
      case "comm_msg":
      case "comm_close":
        return;
      default:
        this.log(`unknown shell message type "${type}" ignored`);
    }
  }

  private kernelInfo() {
    return {
      status: "ok",
      protocol_version: PROTOCOL_VERSION,
      implementation: "ternlab",
      implementation_version: readPackageVersion(),
      language_info: {
        name: "typescript",
        version: typescriptVersion,
        mimetype: "text/typescript",
        file_extension: ".ts",
        pygments_lexer: "typescript",
        codemirror_mode: { name: "javascript", mode: "typescript", typescript: true },
        nbconvert_exporter: "script",
      },
      banner: `ternlab ${readPackageVersion()} — TypeScript (tslab ${require("tslab/package.json").version}, TypeScript ${typescriptVersion}, Node ${process.version}); ternlab is preloaded`,
      help_links: [{ text: "ternlab notebooks", url: "https://github.com/search?q=ternlab" }],
      debugger: false,
    };
  }

  private connectReply() {
    const c = this.conn;
    return { status: "ok", shell_port: c.shell_port, iopub_port: c.iopub_port, stdin_port: c.stdin_port, control_port: c.control_port, hb_port: c.hb_port };
  }

  private completeReply(msg: Message) {
    const code = String(msg.content.code ?? "");
    const cursor = Number(msg.content.cursor_pos ?? code.length);
    try {
      const r = this.engine.complete(code, cursor);
      return { status: "ok", matches: r.matches, cursor_start: r.start, cursor_end: r.end, metadata: {} };
    } catch (e) {
      return { status: "ok", matches: [], cursor_start: cursor, cursor_end: cursor, metadata: {} };
    }
  }

  private inspectReply(msg: Message) {
    const code = String(msg.content.code ?? "");
    const cursor = Number(msg.content.cursor_pos ?? code.length);
    let text: string | null = null;
    try {
      text = this.engine.inspect(code, cursor) ?? (cursor > 0 ? this.engine.inspect(code, cursor - 1) : null);
    } catch {
      text = null;
    }
    return { status: "ok", found: text !== null, data: text !== null ? { "text/plain": text } : {}, metadata: {} };
  }

  // ------------------------------------------------------------ execute

  private async handleExecute(msg: Message): Promise<void> {
    const c = msg.content as { code?: string; silent?: boolean; store_history?: boolean; user_expressions?: Record<string, string>; stop_on_error?: boolean };
    const code = String(c.code ?? "");
    const silent = c.silent === true;
    const storeHistory = silent ? false : c.store_history !== false;
    if (storeHistory) this.executionCount++;
    const count = this.executionCount;
    if (!silent) this.publish("execute_input", { code, execution_count: count }, msg);
    this.parent = silent ? null : msg;
    this.running = { msg, interrupted: false };
    if (this.preloadWarning && !silent) {
      this.writeStream("stderr", `Warning: ${this.preloadWarning}\n`);
      this.preloadWarning = null;
    }

    let error: ErrorContent | null = null;
    let payload: unknown[] = [];
    let resultText: string | null = null;
    try {
      const pager = /^([\s\S]*?[^?\s])\s*(\?\??)\s*$/.exec(code);
      if (pager && isComplete(pager[1]).status === "complete" && isComplete(code).status !== "complete") {
        // `expr?` shows what the compiler knows about expr in the pager, as IPython does.
        const text = this.engine.inspect(pager[1], pager[1].length) ?? this.engine.inspect(pager[1], pager[1].length - 1);
        payload = [{ source: "page", data: { "text/plain": text ?? `${pager[1].trim()}: nothing is known about this name` }, start: 0 }];
      } else {
        const r = await this.engine.execute(code);
        const interrupted = this.running.interrupted;
        if (r.kind === "compile-error") error = compileErrorContent(r.diagnostics);
        else if (r.kind === "error") error = errorContent(r.error, interrupted || isInterruptError(r.error));
        else if (r.hasValue && r.value !== undefined && !silent) {
          const data = await this.richBundle(r.value);
          resultText = String(data["text/plain"] ?? "");
          this.publish("execute_result", { execution_count: count, data, metadata: {} }, msg);
        }
      }
    } catch (e) {
      error = errorContent(e);
    } finally {
      clearTimeout(this.running?.timer);
      this.running = null;
    }
    if (storeHistory) this.history.add(count, code, resultText);

    if (error) {
      if (!silent) this.publish("error", error, msg);
      this.reply("shell", msg, "execute_reply", { status: "error", execution_count: count, ...error, engine_info: { engine_id: 0 } });
      if (c.stop_on_error !== false) await this.abortQueued();
      return;
    }
    const user_expressions: Record<string, unknown> = {};
    for (const [name, expr] of Object.entries(c.user_expressions ?? {})) {
      user_expressions[name] = await this.evaluate(String(expr));
    }
    this.reply("shell", msg, "execute_reply", { status: "ok", execution_count: count, payload, user_expressions });
  }

  /** After an error, execute requests that were already waiting are answered "aborted" (not dropped). */
  private async abortQueued(): Promise<void> {
    // Let the socket hand over what had already arrived.
    await new Promise((r) => setImmediate(r));
    const waiting = this.shellQueue.filter((m) => m.header.msg_type === "execute_request");
    this.shellQueue = this.shellQueue.filter((m) => m.header.msg_type !== "execute_request");
    for (const m of waiting) {
      this.publish("status", { execution_state: "busy" }, m);
      this.reply("shell", m, "execute_reply", { status: "aborted", execution_count: this.executionCount });
      this.publish("status", { execution_state: "idle" }, m);
    }
  }

  private async evaluate(expr: string): Promise<unknown> {
    const saved = this.parent;
    this.parent = null; // user expressions print nothing into the cell
    try {
      const r = await this.engine.execute(expr);
      if (r.kind === "ok") return { status: "ok", data: r.hasValue ? mimeBundle(r.value) : { "text/plain": "undefined" }, metadata: {} };
      const e = r.kind === "compile-error" ? compileErrorContent(r.diagnostics) : errorContent(r.error);
      return { status: "error", ...e };
    } finally {
      this.parent = saved;
    }
  }

  /** The value's MIME bundle, plus a PNG for figures when a browser can render one. */
  private async richBundle(value: unknown): Promise<MimeBundle> {
    let data: MimeBundle;
    try {
      data = mimeBundle(value);
    } catch (e) {
      this.log(`display of a value failed: ${(e as Error).message}`);
      return { "text/plain": plainText(value) };
    }
    // Anything showing a Plotly figure (a figure, a run) also gets a PNG: in the bundle, and inside
    // the HTML's figure div, where it shows whenever scripts cannot run (an untrusted notebook, or
    // one whose plotly.js-carrying output was re-run away); drawing replaces it.
    const plot = data[PLOTLY_MIME] as Figure | undefined;
    if (this.opts.figurePng && plot && !("image/png" in data)) {
      try {
        const figures = require("../src/figures") as typeof import("../src/figures");
        if (figures.browserAvailable()) {
          const png = (await figures.render(plot, "png", {})).toString("base64");
          data["image/png"] = png;
          if (typeof data["text/html"] === "string") data["text/html"] = withFallbackPng(data["text/html"], png);
        }
      } catch (e) {
        this.log(`no PNG for a figure: ${(e as Error).message}`);
      }
    }
    return data;
  }


  // ------------------------------------------------------------ control

  private async handleControl(msg: Message): Promise<void> {
    const type = msg.header.msg_type;
    this.publish("status", { execution_state: "busy" }, msg);
    try {
      switch (type) {
        case "interrupt_request":
          this.interrupt("interrupt_request");
          this.reply("control", msg, "interrupt_reply", { status: "ok" });
          break;
        case "shutdown_request":
          await this.shutdown("control", msg);
          break;
        case "kernel_info_request":
          this.reply("control", msg, "kernel_info_reply", this.kernelInfo());
          break;
        case "debug_request":
          this.reply("control", msg, "debug_reply", { status: "error", ename: "NotImplemented", evalue: "the ternlab kernel has no debugger", traceback: [] });
          break;
        default:
          this.log(`unknown control message type "${type}" ignored`);
      }
    } finally {
      this.publish("status", { execution_state: "idle" }, msg);
    }
  }

  /**
   * An interrupt cancels every training in flight (they stop at their next step and their
   * promises reject with E_CANCELLED, which ends the cell); a cell with nothing to cancel, or one
   * that goes on after the grace period, is ended at once.
   */
  interrupt(source: string): void {
    const run = this.running;
    const n = cancelAll("interrupted");
    if (process.env.TERNLAB_KERNEL_DEBUG) this.log(`interrupt (${source}): ${n} training(s) cancelled`);
    if (!run) return;
    run.interrupted = true;
    if (n === 0) {
      this.engine.interrupt();
      return;
    }
    clearTimeout(run.timer);
    run.timer = setTimeout(() => {
      if (this.running === run) this.engine.interrupt();
    }, this.opts.interruptGraceMs);
  }

  private async shutdown(sock: "shell" | "control", msg: Message): Promise<void> {
    const restart = msg.content.restart === true;
    this.reply(sock, msg, "shutdown_reply", { status: "ok", restart });
    this.publish("shutdown_reply", { status: "ok", restart }, msg);
    cancelAll("kernel shutdown");
    setImmediate(() => void this.close().then(() => this.opts.exitOnShutdown && process.exit(0)));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    process.removeListener("SIGINT", this.sigint);
    this.flushStream();
    await Promise.all(Object.values(this.out).map((o) => o.drain()));
    try {
      await (require("../src/figures") as typeof import("../src/figures")).close();
    } catch {
      /* no browser was started */
    }
    for (const s of [this.shell, this.control, this.stdin, this.iopub, this.hb]) s.close();
    this.engine?.close();
    process.stdout.write = this.origStdoutWrite as typeof process.stdout.write;
    process.stderr.write = this.origStderrWrite as typeof process.stderr.write;
    setDisplayHost(null);
    setLiveHost(null);
  }
}

function normaliseData(d: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(d)) out[k] = v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v;
  return out;
}

