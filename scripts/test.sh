#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh machine, then runs them.
#   - the MNIST / Fashion-MNIST files (scripts/fetch-datasets.sh, idempotent, SHA-256 checked)
#   - the Rust tests with the trainer enabled (cargo feature `train`): unit, integration and doc
#     tests (examples are built too), the trainer's smoke runs on synthetic images and real MNIST
#   - the PyTorch exporter's tests (python/nc_export, numpy stand-in models; torch optional) in the
#     virtualenv .venv-nc-export/ (numpy, pyarrow)
#   - the notebook checker's unit tests, then the notebook set-up (evcxr kernel, Jupyter client)
#     and every notebook executed with the real kernel and checked: no error output, every CHECK
#     line PASS, a figure in each, and the committed outputs' CHECK numbers reproduced.
#     NEURAL_COLLAPSE_NOTEBOOKS=0 skips the notebooks (about 15 minutes on a fresh machine).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# A fresh machine's shell may not have rustup's bin on PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ -x scripts/fetch-datasets.sh ]; then
  scripts/fetch-datasets.sh
  export NEURAL_COLLAPSE_REQUIRE_DATA=1
fi
# The numpy side of issue #18 (the exporter python/nc_export and tests/npy.rs's live numpy run)
# uses a virtualenv of its own with numpy and pyarrow (no torch); made once, about 15 s.
nc_venv="$repo/.venv-nc-export"
if ! "$nc_venv/bin/python" -c "import numpy, pyarrow" 2>/dev/null; then
  python3 -m venv "$nc_venv"
  "$nc_venv/bin/pip" install -q --disable-pip-version-check numpy pyarrow
fi
export NC_PYTHON="$nc_venv/bin/python"
# One build: the feature only adds the trainer (candle) and its tests. Building without it as
# well would compile polars a second time (another feature set): the notebooks below build the
# crate without it inside evcxr.
cargo test --features train
# The exporter's tests, on the package as `pip install ./python` installs it; one of them hands a
# file it wrote to the CLI built above (target/debug/neural-collapse) and compares NC1 with numpy.
"$nc_venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$repo/python"
(cd python && "$nc_venv/bin/python" -m unittest discover -s tests)
# The patched linfa-logistic in vendor/ (see its PATCHED.md): its own unit tests, among them the
# fused multinomial pass against upstream's products at every kernel level this CPU runs.
cargo test --manifest-path vendor/linfa-logistic/Cargo.toml --lib

# --- Slurm job arrays (issue #16, item 3) -----------------------------------------------------------
# The study over the bundled runs measured by scripts/slurm/'s job scripts on a single-node Slurm
# cluster started here (Debian's slurm-wlm + munge, installed with apt-get in CI; daemons stopped by
# PID at the end), its merged tidy Parquet compared with the single-process result, a resumption
# and a 3-shard file. Uses the CLI built by `cargo test` above and .venv-nc-export's pyarrow.
# Outside CI, without root or Slurm, it prints SKIPPED; in CI it must run.
scripts/test-slurm.sh
# --- end Slurm -----------------------------------------------------------------------------------

# --- notebooks (issue #6) ------------------------------------------------------------------------
# Panics and errors in evcxr do not fail an execution, so run-notebooks.py inspects the outputs;
# its checks have their own unit tests. The smoke notebook checks the set-up itself (crate as a
# :dep, a report, a CHECK line, an SVG) and leaves the crate compiled for the real notebooks.
python3 scripts/test_run_notebooks.py
if [ "${NEURAL_COLLAPSE_NOTEBOOKS:-1}" = 1 ]; then
  scripts/setup-notebooks.sh
  shopt -s nullglob
  .venv-jupyter/bin/python scripts/run-notebooks.py scripts/fixtures/smoke.ipynb notebooks/*.ipynb
  shopt -u nullglob
fi
# --- end notebooks -------------------------------------------------------------------------------
