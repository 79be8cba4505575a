/**
 * `ternlab kernel install | list | remove`: kernelspecs where Jupyter looks for them.
 */
import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const ROOT = path.resolve(__dirname, "..", "..");
const CLI = path.join(ROOT, "dist", "kernel", "cli.js");

function cli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, ...env } });
}

describe("kernel: install, list, remove", () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ternlab-kcli-"));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("installs a kernelspec under --prefix that runs this package's kernel with this Node", () => {
    const r = cli(["kernel", "install", "--prefix", tmp]);
    assert.equal(r.status, 0, r.stderr);
    const dir = path.join(tmp, "share", "jupyter", "kernels", "ternlab");
    const spec = JSON.parse(fs.readFileSync(path.join(dir, "kernel.json"), "utf8"));
    assert.equal(spec.language, "typescript");
    assert.equal(spec.display_name, "ternlab (TypeScript)");
    assert.equal(spec.interrupt_mode, "signal");
    assert.equal(spec.argv[0], process.execPath);
    assert.equal(spec.argv[1], path.join(ROOT, "dist", "kernel", "main.js"));
    assert.deepEqual(spec.argv.slice(2), ["-f", "{connection_file}"]);
    for (const f of ["logo-32x32.png", "logo-64x64.png", "logo-svg.svg"]) assert.ok(fs.existsSync(path.join(dir, f)), f);
    const png = fs.readFileSync(path.join(dir, "logo-64x64.png"));
    assert.equal(png.readUInt32BE(16), 64);
  });

  it("--user installs into JUPYTER_DATA_DIR; --name and --display-name name it; list and remove find it", () => {
    const env = { JUPYTER_DATA_DIR: path.join(tmp, "data"), JUPYTER_PATH: "" };
    assert.equal(cli(["kernel", "install", "--user", "--name", "ternlab-dev", "--display-name", "ternlab dev"], env).status, 0);
    const spec = JSON.parse(fs.readFileSync(path.join(tmp, "data", "kernels", "ternlab-dev", "kernel.json"), "utf8"));
    assert.equal(spec.display_name, "ternlab dev");
    const list = cli(["kernel", "list", "--json"], env);
    assert.equal(list.status, 0, list.stderr);
    assert.ok(JSON.parse(list.stdout)["ternlab-dev"].ternlab);
    assert.match(cli(["kernel", "list"], env).stdout, /ternlab-dev/);
    const rm = cli(["kernel", "remove", "ternlab-dev"], env);
    assert.equal(rm.status, 0, rm.stderr);
    assert.ok(!fs.existsSync(path.join(tmp, "data", "kernels", "ternlab-dev")));
    assert.match(cli(["kernel", "list"], env).stdout, /No ternlab kernelspec installed/);
  });

  it("errors name the problem and the fix", () => {
    const env = { JUPYTER_DATA_DIR: path.join(tmp, "data"), JUPYTER_PATH: "" };
    const missing = cli(["kernel", "remove", "nope"], env);
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /no kernelspec "nope" in .*ternlab kernel list.*E_KERNEL/);
    const bad = cli(["kernel", "install", "--prefix", tmp, "--name", "bad name"]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /kernel name "bad name" is not valid.*E_OPTION/);
    const both = cli(["kernel", "install", "--user", "--prefix", tmp]);
    assert.match(both.stderr, /--user and --prefix exclude each other/);
    // A kernelspec that is not ternlab's is left alone without --force.
    const other = path.join(tmp, "data", "kernels", "python9");
    fs.mkdirSync(other, { recursive: true });
    fs.writeFileSync(path.join(other, "kernel.json"), JSON.stringify({ argv: ["python9", "-f", "{connection_file}"], display_name: "py", language: "python" }));
    const r = cli(["kernel", "remove", "python9"], env);
    assert.match(r.stderr, /not a ternlab kernel/);
    assert.ok(fs.existsSync(other));
  });
});
