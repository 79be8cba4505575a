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

function enabled() {
  if (process.env.TERNLAB_CUDA === "0") return 0;
  if (!fs.readdirSync(__dirname).some((f) => f.endsWith(".cu"))) return 0;
  const r = spawnSync(path.join(home(), "bin", "nvcc"), ["--version"]);
  return r.status === 0 ? 1 : 0;
}

process.stdout.write(String(process.argv[2] === "home" ? home() : enabled()));
