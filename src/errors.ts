/**
 * The one error class of ternlab. `code` is stable and machine-readable; the message names the
 * thing, the place and the fix (DESIGN.md, "Errors").
 */
export type ErrorCode =
  | "E_OPTION"
  | "E_DATASET"
  | "E_SHAPE"
  | "E_BACKEND"
  | "E_CUDA"
  | "E_OOM"
  | "E_CHECKPOINT"
  | "E_CANCELLED"
  | "E_KERNEL"
  | "E_IO"
  | "E_INTERNAL";

export class TernlabError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TernlabError";
    this.code = code;
  }
}

export function isTernlabError(e: unknown, code?: ErrorCode): e is TernlabError {
  return e instanceof TernlabError && (code === undefined || e.code === code);
}

/** Native code reports `[E_CODE] message`; turn that into a TernlabError with the same code. */
export function fromNativeError(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  const m = /^\[(E_[A-Z]+)\] ([\s\S]*)$/.exec(e.message);
  if (!m) return e;
  return new TernlabError(m[1] as ErrorCode, m[2]);
}
