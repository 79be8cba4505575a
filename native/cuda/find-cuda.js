// Tells binding.gyp whether to compile the CUDA backend and where the toolkit lives.
//   node native/cuda/find-cuda.js enabled  -> 1 when nvcc runs (and TERNLAB_CUDA is not 0), else 0
//   node native/cuda/find-cuda.js home     -> the toolkit root (CUDA_HOME, /usr/local/cuda, or nvcc's)
const { spawnSync } = require("child_process");
const fs = require("fs");
const path = require("path");

function home() {
  if (process.env.CUDA_HOME) return process.env.CUDA_HOME;
  if (fs.existsSync("/usr/local/cuda/bin/nvcc")) return "/usr/local/cuda";
  const which = spawnSync("sh", ["-c", "command -v nvcc"], { encoding: "utf8" }).stdout.trim();
  return which ? path.resolve(fs.realpathSync(which), "../..") : "/usr/local/cuda";
}

// The build says which backends it compiles (on stderr: gyp reads the answer from stdout).
function enabled() {
  const say = (m) => process.stderr.write(`ternlab build: ${m}\n`);
  if (process.env.TERNLAB_CUDA === "0") return say("CPU backend only (TERNLAB_CUDA=0)"), 0;
  if (!fs.readdirSync(__dirname).some((f) => f.endsWith(".cu"))) return say("CPU backend only (no CUDA sources)"), 0;
  const nvcc = path.join(home(), "bin", "nvcc");
  const r = spawnSync(nvcc, ["--version"], { encoding: "utf8" });
  if (r.status !== 0) return say(`CPU backend only (no working nvcc at ${nvcc}; set CUDA_HOME to use another toolkit)`), 0;
  const version = (/release [\d.]+/.exec(r.stdout) ?? ["nvcc"])[0];
  return say(`CPU and CUDA backends (nvcc ${version} at ${nvcc}; sm_80, sm_90 and PTX)`), 1;
}

process.stdout.write(String(process.argv[2] === "home" ? home() : enabled()));
