/**
 * jupyter_kernel_test, the Jupyter project's conformance suite (Debian: python3-jupyter-kernel-test),
 * run against the kernelspec that `ternlab kernel install` writes. Every test must pass; none may
 * be skipped.
 */
import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const ROOT = path.resolve(__dirname, "..", "..");
const CLI = path.join(ROOT, "dist", "kernel", "cli.js");
// Debian's Python: jupyter_kernel_test and jupyter_client are Debian packages, not pip's.
const PYTHON = process.env.TERNLAB_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

describe("kernel: jupyter_kernel_test conformance", function () {
  this.timeout(180_000);
  let prefix: string;

  before(function () {
    prefix = fs.mkdtempSync(path.join(os.tmpdir(), "ternlab-kernelspec-"));
    const r = spawnSync(process.execPath, [CLI, "kernel", "install", "--prefix", prefix], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => fs.rmSync(prefix, { recursive: true, force: true }));

  it("passes every test of jupyter_kernel_test against the installed kernelspec", () => {
    const probe = spawnSync(PYTHON, ["-c", "import jupyter_kernel_test, jupyter_client"], { encoding: "utf8" });
    assert.equal(probe.status, 0, `jupyter_kernel_test is not importable by ${PYTHON}: ${probe.stderr}\nInstall it: apt-get install python3-jupyter-kernel-test (see .ci/kernel-deps.sh)`);
    const r = spawnSync(PYTHON, ["-m", "unittest", "-v", "test_ternlab_kernel"], {
      cwd: path.join(ROOT, "test", "conformance"),
      env: { ...process.env, JUPYTER_PATH: path.join(prefix, "share", "jupyter"), PYDEVD_DISABLE_FILE_VALIDATION: "1" },
      encoding: "utf8",
      timeout: 170_000,
    });
    const out = `${r.stdout}\n${r.stderr}`;
    assert.equal(r.status, 0, `jupyter_kernel_test failed:\n${out}`);
    assert.match(out, /^OK$/m, out);
    assert.doesNotMatch(out, /skipped/i, `some conformance tests were skipped:\n${out}`);
    const ran = Number(/Ran (\d+) tests?/.exec(out)?.[1] ?? 0);
    assert.ok(ran >= 12, `only ${ran} conformance tests ran:\n${out}`);
  });
});
