/**
 * Kernelspecs: installing, finding and removing them where Jupyter looks (jupyter_core's paths).
 *
 * The spec launches this package's kernel with the Node that ran the install (the project's Node),
 * by absolute paths, so it works from any notebook folder.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { TernlabError } from "../src/errors";
import { PACKAGE_ROOT } from "./paths";

export const DEFAULT_NAME = "ternlab";
export const KERNEL_MAIN = path.join(PACKAGE_ROOT, "dist", "kernel", "main.js");
const ASSETS = path.join(PACKAGE_ROOT, "kernel", "assets");

export interface KernelSpec {
  argv: string[];
  display_name: string;
  language: string;
  interrupt_mode?: "signal" | "message";
  env?: Record<string, string>;
  metadata?: Record<string, unknown>;
}

export interface FoundSpec {
  name: string;
  dir: string;
  spec: KernelSpec;
  /** Whether the spec runs a ternlab kernel. */
  ternlab: boolean;
}

/** jupyter_core's user data dir. */
export function userDataDir(): string {
  if (process.env.JUPYTER_DATA_DIR) return process.env.JUPYTER_DATA_DIR;
  if (process.platform === "darwin") return path.join(os.homedir(), "Library", "Jupyter");
  if (process.platform === "win32") return path.join(process.env.APPDATA ?? os.homedir(), "jupyter");
  const xdg = process.env.XDG_DATA_HOME || path.join(os.homedir(), ".local", "share");
  return path.join(xdg, "jupyter");
}

/** Jupyter's data path, in its order of precedence (JUPYTER_PATH, user, system). */
export function jupyterDataPath(): string[] {
  const fromEnv = (process.env.JUPYTER_PATH ?? "").split(path.delimiter).filter(Boolean);
  const system = process.platform === "win32" ? [path.join(process.env.PROGRAMDATA ?? "C:\\ProgramData", "jupyter")] : ["/usr/local/share/jupyter", "/usr/share/jupyter"];
  return [...fromEnv, userDataDir(), ...system].filter((d, i, all) => all.indexOf(d) === i);
}

export function kernelsDir(where: { user?: boolean; prefix?: string }): string {
  if (where.prefix) return path.join(path.resolve(where.prefix), "share", "jupyter", "kernels");
  return path.join(userDataDir(), "kernels");
}

export function isValidName(name: string): boolean {
  return /^[a-z0-9._-]+$/i.test(name);
}

function checkName(name: string): void {
  if (!isValidName(name)) {
    throw new TernlabError("E_OPTION", `kernel name "${name}" is not valid: use letters, digits, ".", "_" and "-" only (e.g. ternlab-dev)`);
  }
}

export function makeSpec(opts: { displayName?: string; env?: Record<string, string> } = {}): KernelSpec {
  return {
    argv: [process.execPath, KERNEL_MAIN, "-f", "{connection_file}"],
    display_name: opts.displayName ?? "ternlab (TypeScript)",
    language: "typescript",
    // SIGINT can stop even a synchronous loop in a cell; interrupt_request works as well.
    interrupt_mode: "signal",
    env: opts.env ?? {},
    metadata: { ternlab: { package: PACKAGE_ROOT, node: process.execPath }, debugger: false },
  };
}

export interface InstallOptions {
  user?: boolean;
  prefix?: string;
  name?: string;
  displayName?: string;
  env?: Record<string, string>;
}

/** Writes the kernelspec (kernel.json + logos); returns its folder. */
export function install(opts: InstallOptions = {}): string {
  const name = opts.name ?? DEFAULT_NAME;
  checkName(name);
  if (opts.user && opts.prefix) {
    throw new TernlabError("E_OPTION", "kernel install: --user and --prefix exclude each other; give one of them");
  }
  if (!fs.existsSync(KERNEL_MAIN)) {
    throw new TernlabError("E_KERNEL", `kernel install: ${KERNEL_MAIN} does not exist; build ternlab first (npm run build:ts)`);
  }
  const dir = path.join(kernelsDir(opts), name);
  try {
    fs.mkdirSync(dir, { recursive: true });
    const spec = makeSpec({ displayName: opts.displayName ?? (name === DEFAULT_NAME ? undefined : `ternlab (${name})`), env: opts.env });
    fs.writeFileSync(path.join(dir, "kernel.json"), JSON.stringify(spec, null, 2) + "\n");
    for (const f of ["logo-32x32.png", "logo-64x64.png", "logo-svg.svg"]) {
      const src = path.join(ASSETS, f);
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(dir, f));
    }
  } catch (e) {
    throw new TernlabError("E_IO", `kernel install: cannot write ${dir} (${(e as Error).message}); choose a writable place with --prefix DIR or --user`, { cause: e });
  }
  return dir;
}

function readSpec(dir: string): KernelSpec | null {
  try {
    const spec = JSON.parse(fs.readFileSync(path.join(dir, "kernel.json"), "utf8"));
    return Array.isArray(spec.argv) ? spec : null;
  } catch {
    return null;
  }
}

function isTernlabSpec(spec: KernelSpec): boolean {
  return !!(spec.metadata as any)?.ternlab || spec.argv.some((a) => /[\\/]dist[\\/]kernel[\\/]main\.js$/.test(a));
}

/** Every kernelspec Jupyter would see (the first of a name wins), ternlab's or not. */
export function listAll(dirs: string[] = jupyterDataPath()): FoundSpec[] {
  const seen = new Map<string, FoundSpec>();
  for (const d of dirs) {
    const kdir = path.join(d, "kernels");
    let names: string[];
    try {
      names = fs.readdirSync(kdir);
    } catch {
      continue;
    }
    for (const name of names.sort()) {
      if (seen.has(name.toLowerCase())) continue;
      const spec = readSpec(path.join(kdir, name));
      if (spec) seen.set(name.toLowerCase(), { name, dir: path.join(kdir, name), spec, ternlab: isTernlabSpec(spec) });
    }
  }
  return [...seen.values()];
}

export function find(name: string, dirs?: string[]): FoundSpec | null {
  return listAll(dirs).find((s) => s.name.toLowerCase() === name.toLowerCase()) ?? null;
}

/** Removes a ternlab kernelspec (from --prefix when given, else wherever Jupyter finds it). */
export function remove(opts: { name?: string; prefix?: string; user?: boolean; force?: boolean } = {}): string {
  const name = opts.name ?? DEFAULT_NAME;
  checkName(name);
  const dirs = opts.prefix ? [path.join(path.resolve(opts.prefix), "share", "jupyter")] : opts.user ? [userDataDir()] : jupyterDataPath();
  const found = find(name, dirs);
  if (!found) {
    throw new TernlabError("E_KERNEL", `kernel remove: no kernelspec "${name}" in ${dirs.map((d) => path.join(d, "kernels")).join(", ")}; see \`ternlab kernel list\``);
  }
  if (!found.ternlab && !opts.force) {
    throw new TernlabError("E_KERNEL", `kernel remove: "${name}" at ${found.dir} is not a ternlab kernel; use jupyter kernelspec remove, or --force`);
  }
  try {
    fs.rmSync(found.dir, { recursive: true, force: true });
  } catch (e) {
    throw new TernlabError("E_IO", `kernel remove: cannot delete ${found.dir} (${(e as Error).message}); check its permissions`, { cause: e });
  }
  return found.dir;
}
