# System packages for the kernel, notebook and figure tests (sourced by .ci/run; Debian 12).
#   python3-jupyter-kernel-test  the Jupyter conformance suite (test/kernel-conformance.test.ts)
#   jupyter-client / python3-jupyter-client, python3-zmq  what that suite and nbconvert drive kernels with
#   jupyter-nbconvert, python3-nbclient, python3-nbformat  `jupyter nbconvert --execute` (test/run.test.ts)
#   chromium, fonts-liberation, fonts-dejavu-core  headless figure export (src/figures.ts, PNG in rich display)
#   jupyter-notebook  the Classic Notebook 6 server that test/notebook-frontends.test.ts opens in headless Chromium
# Tests call Debian's /usr/bin/python3 explicitly (a pyenv/venv python3 first on PATH lacks these modules).
kernel_deps() {
  export DEBIAN_FRONTEND=noninteractive
  local pkgs="python3 python3-jupyter-kernel-test jupyter-client python3-jupyter-client python3-zmq jupyter-nbconvert python3-nbclient python3-nbformat chromium fonts-liberation fonts-dejavu-core jupyter-notebook"
  local missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    apt-get update -qq
    apt-get install -y --no-install-recommends $missing
  fi
}
kernel_deps
