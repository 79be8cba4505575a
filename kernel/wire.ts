/**
 * The Jupyter wire protocol (messaging spec 5.3): message shapes, framing and HMAC signing.
 *
 * Everything that touches signatures lives here, so that there is exactly one place where a
 * message is accepted or rejected. Used by the kernel (kernel/server.ts) and by the client that
 * `ternlab run` and the tests drive kernels with (kernel/client.ts).
 */
import { createHmac, randomUUID, timingSafeEqual, getHashes } from "crypto";
import { TernlabError } from "../src/errors";

export const PROTOCOL_VERSION = "5.3";
const DELIM = Buffer.from("<IDS|MSG>");

export interface Header {
  msg_id: string;
  msg_type: string;
  session: string;
  username: string;
  date: string;
  version: string;
}

export interface Message<C = any> {
  /** ZeroMQ routing identities (ROUTER sockets), or the iopub topic. */
  identities: Buffer[];
  header: Header;
  parent_header: Partial<Header>;
  metadata: Record<string, unknown>;
  content: C;
  buffers: Buffer[];
}

/** Signs and verifies messages with the connection file's key and signature scheme. */
export class Signer {
  private readonly algorithm: string | null;
  constructor(
    private readonly key: string,
    scheme: string = "hmac-sha256",
  ) {
    if (key === "") {
      this.algorithm = null; // an empty key disables signing (messaging spec)
      return;
    }
    const m = /^hmac-(.+)$/.exec(scheme);
    const algorithm = m?.[1];
    if (!algorithm || !getHashes().includes(algorithm)) {
      throw new TernlabError(
        "E_KERNEL",
        `connection file: signature_scheme "${scheme}" is not supported; use "hmac-sha256" (or another hmac-<hash> that Node's crypto knows)`,
      );
    }
    this.algorithm = algorithm;
  }

  sign(parts: Buffer[]): string {
    if (!this.algorithm) return "";
    const h = createHmac(this.algorithm, this.key);
    for (const p of parts) h.update(p);
    return h.digest("hex");
  }

  verify(signature: string, parts: Buffer[]): boolean {
    if (!this.algorithm) return true;
    const want = Buffer.from(this.sign(parts), "latin1");
    const got = Buffer.from(signature, "latin1");
    return want.length === got.length && timingSafeEqual(want, got);
  }
}

/** Thrown by `decode` for frames that are not a well-formed, correctly signed message. */
export class WireError extends Error {}

export function decode(frames: Buffer[], signer: Signer): Message {
  const d = frames.findIndex((f) => f.equals(DELIM));
  if (d < 0) throw new WireError("message has no <IDS|MSG> delimiter");
  if (frames.length < d + 6) throw new WireError(`message has ${frames.length - d - 1} parts after the delimiter; at least 5 are needed`);
  const signature = frames[d + 1].toString("latin1");
  const parts = frames.slice(d + 2, d + 6);
  if (!signer.verify(signature, parts)) throw new WireError("invalid HMAC signature");
  let header: Header, parent: Partial<Header>, metadata: Record<string, unknown>, content: any;
  try {
    [header, parent, metadata, content] = parts.map((p) => JSON.parse(p.toString("utf8")));
  } catch (e) {
    throw new WireError(`message part is not JSON: ${(e as Error).message}`);
  }
  if (!header || typeof header.msg_type !== "string") throw new WireError("message header has no msg_type");
  return {
    identities: frames.slice(0, d),
    header,
    parent_header: parent ?? {},
    metadata: metadata ?? {},
    content: content ?? {},
    buffers: frames.slice(d + 6),
  };
}

export function encode(msg: Message, signer: Signer): Buffer[] {
  const parts = [msg.header, msg.parent_header, msg.metadata, msg.content].map((p) =>
    Buffer.from(JSON.stringify(p), "utf8"),
  );
  return [...msg.identities, DELIM, Buffer.from(signer.sign(parts), "latin1"), ...parts, ...msg.buffers];
}

export function newHeader(msg_type: string, session: string, username = "ternlab"): Header {
  return { msg_id: randomUUID(), msg_type, session, username, date: new Date().toISOString(), version: PROTOCOL_VERSION };
}

/** A new message; with `parent`, a reply/child of it (identities copied for ROUTER replies). */
export function newMessage<C>(
  msg_type: string,
  content: C,
  opts: { session: string; parent?: Message; identities?: Buffer[]; metadata?: Record<string, unknown> },
): Message<C> {
  return {
    identities: opts.identities ?? opts.parent?.identities ?? [],
    header: newHeader(msg_type, opts.session, opts.parent?.header.username),
    parent_header: opts.parent?.header ?? {},
    metadata: opts.metadata ?? {},
    content,
    buffers: [],
  };
}

/** The connection file a kernel is started with (jupyter_client writes it). */
export interface ConnectionInfo {
  transport: "tcp" | "ipc";
  ip: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
  key: string;
  signature_scheme: string;
  kernel_name?: string;
}

/** The ZeroMQ endpoint of one channel, exactly as the connection file names it. */
export function endpoint(c: ConnectionInfo, port: number): string {
  // jupyter_client's convention for ipc: the "ip" is a path prefix and the port a suffix.
  return c.transport === "ipc" ? `ipc://${c.ip}-${port}` : `tcp://${c.ip.includes(":") ? `[${c.ip}]` : c.ip}:${port}`;
}

export function parseConnectionInfo(text: string, where: string): ConnectionInfo {
  let c: any;
  try {
    c = JSON.parse(text);
  } catch (e) {
    throw new TernlabError("E_KERNEL", `connection file ${where}: not JSON (${(e as Error).message}); start the kernel through Jupyter or pass the file jupyter_client wrote`);
  }
  const transport = c.transport ?? "tcp";
  if (transport !== "tcp" && transport !== "ipc") {
    throw new TernlabError("E_KERNEL", `connection file ${where}: transport "${transport}" is not supported; use "tcp" or "ipc"`);
  }
  for (const k of ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]) {
    if (!Number.isInteger(c[k]) || c[k] < 0) {
      throw new TernlabError("E_KERNEL", `connection file ${where}: "${k}" is ${JSON.stringify(c[k])}; it must be a port number`);
    }
  }
  if (typeof c.ip !== "string" || c.ip === "") {
    throw new TernlabError("E_KERNEL", `connection file ${where}: "ip" is missing; give the address to bind to (e.g. "127.0.0.1")`);
  }
  return { ...c, transport, key: c.key ?? "", signature_scheme: c.signature_scheme ?? "hmac-sha256" };
}
