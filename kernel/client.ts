/**
 * A Jupyter client over ZeroMQ: starts a kernel from its kernelspec (or connects to one), sends
 * requests and collects what comes back. `ternlab run` drives notebooks with it; the tests
 * drive the kernel with it.
 */
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { spawn, ChildProcess } from "child_process";
import { randomBytes, randomUUID } from "crypto";
import * as zmq from "zeromq";
import { ConnectionInfo, Message, Signer, decode, encode, endpoint, newMessage } from "./wire";
import { KernelSpec, find as findSpec, makeSpec, DEFAULT_NAME } from "./kernelspec";
import { TernlabError } from "../src/errors";

type Channel = "shell" | "control" | "stdin";

async function freePorts(n: number, host: string): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      servers.push(s);
      await new Promise<void>((res, rej) => s.once("error", rej).listen(0, host, () => res()));
      ports.push((s.address() as net.AddressInfo).port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

export interface StartOptions {
  /** Kernelspec name (default "ternlab"; ternlab's own spec is used when none is installed). */
  kernelName?: string;
  /** Run the kernel with this spec instead of looking one up. */
  spec?: KernelSpec;
  cwd?: string;
  env?: Record<string, string>;
  /** Where the kernel's own stderr goes ("pipe": kept in `stderrText`). */
  stderr?: "inherit" | "pipe" | "ignore";
  startupTimeoutMs?: number;
}

export interface ExecuteResult {
  reply: Message;
  /** iopub messages of this request, from busy to idle. */
  iopub: Message[];
}

export class KernelClient {
  readonly session = randomUUID();
  readonly signer: Signer;
  private sockets: { shell: zmq.Dealer; control: zmq.Dealer; stdin: zmq.Dealer; iopub: zmq.Subscriber };
  private sending: Record<Channel, Promise<unknown>> = { shell: Promise.resolve(), control: Promise.resolve(), stdin: Promise.resolve() };
  private pending = new Map<string, (m: Message) => void>();
  private iopubListeners = new Set<(m: Message) => void>();
  /** Every iopub message received, in order (tests read it). */
  readonly iopubLog: Message[] = [];
  proc: ChildProcess | null = null;
  stderrText = "";
  private exited: Promise<number | null> = new Promise(() => undefined);
  private exitCode: number | null | undefined = undefined;
  private connectionFile: string | null = null;
  interruptMode: "signal" | "message" = "signal";
  private closed = false;

  constructor(readonly conn: ConnectionInfo) {
    this.signer = new Signer(conn.key, conn.signature_scheme);
    this.sockets = { shell: new zmq.Dealer(), control: new zmq.Dealer(), stdin: new zmq.Dealer(), iopub: new zmq.Subscriber() };
    for (const s of Object.values(this.sockets)) s.linger = 0;
    const id = Buffer.from(this.session);
    this.sockets.shell.routingId = id.toString("hex").slice(0, 32);
    this.sockets.stdin.routingId = this.sockets.shell.routingId;
    this.sockets.shell.connect(endpoint(conn, conn.shell_port));
    this.sockets.control.connect(endpoint(conn, conn.control_port));
    this.sockets.stdin.connect(endpoint(conn, conn.stdin_port));
    this.sockets.iopub.connect(endpoint(conn, conn.iopub_port));
    this.sockets.iopub.subscribe();
    for (const ch of ["shell", "control", "stdin"] as const) this.receive(ch);
    this.receiveIopub();
  }

  private receiveIopub(): void {
    void (async () => {
      for await (const frames of this.sockets.iopub) {
        let m: Message;
        try {
          m = decode(frames as Buffer[], this.signer);
        } catch {
          continue;
        }
        this.iopubLog.push(m);
        for (const l of [...this.iopubListeners]) l(m);
      }
    })().catch(() => undefined);
  }

  private receive(ch: Channel): void {
    void (async () => {
      for await (const frames of this.sockets[ch]) {
        let m: Message;
        try {
          m = decode(frames as Buffer[], this.signer);
        } catch {
          continue;
        }
        const id = m.parent_header.msg_id;
        const cb = id ? this.pending.get(id) : undefined;
        if (cb) {
          this.pending.delete(id!);
          cb(m);
        }
      }
    })().catch(() => undefined);
  }

  /** Starts a kernel process from a kernelspec and connects to it. */
  static async start(opts: StartOptions = {}): Promise<KernelClient> {
    const name = opts.kernelName ?? DEFAULT_NAME;
    let spec = opts.spec ?? findSpec(name)?.spec;
    if (!spec) {
      if (name !== DEFAULT_NAME) {
        throw new TernlabError("E_KERNEL", `no kernelspec named "${name}" is installed; see \`jupyter kernelspec list\`, or install ternlab's with \`ternlab kernel install --name ${name}\``);
      }
      spec = makeSpec();
    }
    const ip = "127.0.0.1";
    const [shell, iopub, stdin, control, hb] = await freePorts(5, ip);
    const conn: ConnectionInfo = {
      transport: "tcp", ip, shell_port: shell, iopub_port: iopub, stdin_port: stdin, control_port: control, hb_port: hb,
      key: randomBytes(16).toString("hex"), signature_scheme: "hmac-sha256", kernel_name: name,
    };
    const file = path.join(os.tmpdir(), `ternlab-kernel-${randomUUID()}.json`);
    fs.writeFileSync(file, JSON.stringify(conn), { mode: 0o600 });
    const argv = spec.argv.map((a) => a.replace("{connection_file}", file));
    const client = new KernelClient(conn);
    client.connectionFile = file;
    client.interruptMode = spec.interrupt_mode ?? "signal";
    const stderr = opts.stderr ?? "pipe";
    const proc = spawn(argv[0], argv.slice(1), {
      cwd: opts.cwd ?? process.cwd(),
      env: { ...process.env, ...(spec.env ?? {}), ...(opts.env ?? {}), JPY_PARENT_PID: String(process.pid) },
      stdio: ["ignore", "ignore", stderr],
    });
    client.proc = proc;
    client.exited = new Promise((resolve) => {
      proc.once("exit", (code) => {
        client.exitCode = code;
        resolve(code);
      });
      proc.once("error", (e) => {
        client.stderrText += `\n${e.message}`;
        client.exitCode = -1;
        resolve(-1);
      });
    });
    proc.stderr?.on("data", (d: Buffer) => {
      client.stderrText += d.toString("utf8");
      if (client.stderrText.length > 1 << 20) client.stderrText = client.stderrText.slice(-(1 << 19));
    });
    try {
      await client.waitForReady(opts.startupTimeoutMs ?? 60_000);
    } catch (e) {
      await client.close();
      throw e;
    }
    return client;
  }

  get alive(): boolean {
    return this.proc ? this.exitCode === undefined : true;
  }

  /** kernel_info until both the reply and its iopub status arrive (the iopub socket is joined). */
  async waitForReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.alive) {
        throw new TernlabError("E_KERNEL", `the kernel exited with code ${this.exitCode} while starting: ${this.stderrText.trim().split("\n").slice(-5).join(" | ") || "(no output)"}`);
      }
      const msg = this.message("kernel_info_request", {});
      const sawIopub = new Promise<void>((resolve) => {
        const l = (m: Message) => {
          if (m.parent_header.msg_id === msg.header.msg_id) {
            this.iopubListeners.delete(l);
            resolve();
          }
        };
        this.iopubListeners.add(l);
        setTimeout(() => this.iopubListeners.delete(l), 1500).unref();
      });
      const reply = this.send("shell", msg);
      const ok = await Promise.race([Promise.all([reply, sawIopub]).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 1000))]);
      if (ok) return;
    }
    throw new TernlabError("E_KERNEL", `the kernel did not answer kernel_info within ${Math.round(timeoutMs / 1000)} s; its stderr: ${this.stderrText.trim().split("\n").slice(-5).join(" | ") || "(nothing)"}`);
  }

  message(type: string, content: unknown, metadata: Record<string, unknown> = {}): Message {
    const m = newMessage(type, content, { session: this.session, metadata });
    m.header.username = os.userInfo().username;
    return m;
  }

  /** Sends a request; resolves with its reply. */
  send(ch: Channel, msg: Message): Promise<Message> {
    const reply = new Promise<Message>((resolve) => this.pending.set(msg.header.msg_id, resolve));
    this.sendRaw(ch, encode(msg, this.signer));
    return reply;
  }

  /** Sends frames as they are (tests use it for forged messages). */
  sendRaw(ch: Channel, frames: Buffer[]): void {
    const sock = this.sockets[ch];
    this.sending[ch] = this.sending[ch].then(() => sock.send(frames)).catch(() => undefined);
  }

  request(ch: Channel, type: string, content: unknown, timeoutMs = 30_000): Promise<Message> {
    return withTimeout(this.send(ch, this.message(type, content)), timeoutMs, `${type} got no reply within ${timeoutMs} ms`);
  }

  onIopub(l: (m: Message) => void): () => void {
    this.iopubListeners.add(l);
    return () => this.iopubListeners.delete(l);
  }

  /**
   * Runs code; resolves when both the execute_reply and the idle status have arrived.
   * `onMessage` sees each iopub message of this request as it comes.
   */
  async execute(
    code: string,
    opts: { timeoutMs?: number; onMessage?: (m: Message) => void; silent?: boolean; storeHistory?: boolean; stopOnError?: boolean; userExpressions?: Record<string, string> } = {},
  ): Promise<ExecuteResult> {
    const msg = this.message("execute_request", {
      code,
      silent: opts.silent ?? false,
      store_history: opts.storeHistory ?? true,
      user_expressions: opts.userExpressions ?? {},
      allow_stdin: false,
      stop_on_error: opts.stopOnError ?? true,
    });
    const iopub: Message[] = [];
    let idle!: () => void;
    const idleSeen = new Promise<void>((r) => (idle = r));
    const off = this.onIopub((m) => {
      if (m.parent_header.msg_id !== msg.header.msg_id) return;
      iopub.push(m);
      opts.onMessage?.(m);
      if (m.header.msg_type === "status" && (m.content as any).execution_state === "idle") idle();
    });
    try {
      const died = this.exited.then((code) => {
        throw new TernlabError("E_KERNEL", `the kernel died (exit code ${code}) while running a cell: ${this.stderrText.trim().split("\n").slice(-5).join(" | ") || "(no output)"}`);
      });
      const done = Promise.all([this.send("shell", msg), idleSeen]).then(([reply]) => reply);
      const reply = await (opts.timeoutMs ? withTimeout(Promise.race([done, died]), opts.timeoutMs, "timeout") : Promise.race([done, died]));
      return { reply, iopub };
    } finally {
      off();
    }
  }

  /** Interrupts the running cell the way the kernelspec asks (SIGINT or interrupt_request). */
  async interrupt(mode: "signal" | "message" = this.interruptMode): Promise<void> {
    if (mode === "signal" && this.proc?.pid) {
      this.proc.kill("SIGINT");
      return;
    }
    await this.request("control", "interrupt_request", {}, 10_000);
  }

  /** Asks the kernel to shut down, then makes sure it is gone. */
  async shutdown(): Promise<void> {
    if (this.alive) {
      try {
        await this.request("control", "shutdown_request", { restart: false }, 5_000);
      } catch {
        /* it may have died already */
      }
      if (this.proc) {
        const gone = await Promise.race([this.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000))]);
        if (!gone) {
          this.proc.kill("SIGKILL");
          await this.exited;
        }
      }
    }
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.proc && this.alive) {
      this.proc.kill("SIGKILL");
      await this.exited;
    }
    for (const s of Object.values(this.sockets)) s.close();
    if (this.connectionFile) fs.rmSync(this.connectionFile, { force: true });
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, rej) => {
      t = setTimeout(() => rej(new TimeoutError(what)), ms);
    }),
  ]);
}

export class TimeoutError extends Error {
  constructor(what: string) {
    super(what);
    this.name = "TimeoutError";
  }
}
