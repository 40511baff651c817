#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh machine, then runs them.
#   - the MNIST / Fashion-MNIST files (scripts/fetch-datasets.sh, idempotent, SHA-256 checked)
#   - the Rust tests: unit, integration and doc tests (examples are built too), then the trainer's
#     tests with --features train
#   - the notebook checker's unit tests; with NEURAL_COLLAPSE_NOTEBOOKS=1 also the notebook set-up
#     (evcxr kernel, Jupyter client) and every notebook executed with the real kernel and checked
#     (not yet the default: finding 2's CHECK fails on the bundled run, see issue #6)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# A fresh machine's shell may not have rustup's bin on PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ -x scripts/fetch-datasets.sh ]; then
  scripts/fetch-datasets.sh
  export NEURAL_COLLAPSE_REQUIRE_DATA=1
fi
cargo test
# The trainer (cargo feature `train`, candle): smoke runs on synthetic images and on real MNIST.
# A second feature set, so a second build of the dependencies (separate target dir: the plain
# build above is not invalidated).
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}-train" cargo test --features train --test train

# --- notebooks (issue #6) ------------------------------------------------------------------------
# Panics and errors in evcxr do not fail an execution, so run-notebooks.py inspects the outputs;
# its checks have their own unit tests. The smoke notebook checks the set-up itself (crate as a
# :dep, a report, a CHECK line, an SVG) and leaves the crate compiled for the real notebooks.
python3 scripts/test_run_notebooks.py
if [ "${NEURAL_COLLAPSE_NOTEBOOKS:-0}" = 1 ]; then
  scripts/setup-notebooks.sh
  shopt -s nullglob
  .venv-jupyter/bin/python scripts/run-notebooks.py scripts/fixtures/smoke.ipynb notebooks/*.ipynb
  shopt -u nullglob
fi
# --- end notebooks -------------------------------------------------------------------------------
