/**
 * The float stem's pieces on the CPU (native/cuda/stem.h: the space-to-depth index map, the
 * three-digit split of the float weights, the border sums and the exact combine), the same code the
 * CUDA backend's kernels run: test/native/stem_emulation.cpp compiled with the host's C++ compiler and
 * run on several geometries against a float64 convolution, within the stated error bound. Each
 * deliberate bug the program can plant (a wrong packing index, a shifted column, a dropped digit, a
 * wrong border sum, a wrong middle combine, the grouped product's digits swapped) must make it fail. The kernel itself is checked by the
 * GPU suite (test/gpu/agreement.test.ts, "first layer on pixels").
 */
import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const ROOT = path.resolve(__dirname, "..", "..");
const SRC = path.join(ROOT, "test", "native", "stem_emulation.cpp");
const CXX = process.env.CXX ?? "c++";

describe("float stem on int8 parts (stem.h, emulated on the CPU)", function () {
  this.timeout(300_000);
  let exe = "";
  before(function () {
    if (spawnSync(CXX, ["--version"], { encoding: "utf8" }).status !== 0) this.skip();
    exe = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "ternlab-stem-")), "stem_emulation");
    const r = spawnSync(CXX, ["-std=c++17", "-O2", SRC, "-o", exe], { encoding: "utf8" });
    assert.equal(r.status, 0, `compiling ${SRC} failed:\n${r.stderr}`);
  });
  it("packing, split, border sums and combine agree with float64 within the bound, on every geometry", () => {
    const r = spawnSync(exe, [], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ok$/m);
  });
  for (const bug of ["pack", "shift", "digit", "border", "low", "grouped"])
    it(`fails with a planted bug: ${bug}`, () => {
      const r = spawnSync(exe, [`break=${bug}`], { encoding: "utf8" });
      assert.equal(r.status, 1, `break=${bug} passed:\n${r.stdout}`);
      assert.match(r.stdout, /FAIL/);
    });
});
