#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh machine, then runs them.
#   - the MNIST / Fashion-MNIST files (scripts/fetch-datasets.sh, idempotent, SHA-256 checked)
#   - the Rust tests: unit, integration and doc tests (examples are built too)
#   - the notebooks: the checker's unit tests, the set-up (evcxr kernel, Jupyter client), then the
#     smoke notebook and every notebooks/*.ipynb executed with the real kernel and checked
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

# --- notebooks (issue #6) ------------------------------------------------------------------------
# Panics and errors in evcxr do not fail an execution, so run-notebooks.py inspects the outputs;
# its checks have their own unit tests. The smoke notebook checks the set-up itself (crate as a
# :dep, a report, a CHECK line, an SVG) and leaves the crate compiled for the real notebooks.
python3 scripts/test_run_notebooks.py
scripts/setup-notebooks.sh
shopt -s nullglob
.venv-jupyter/bin/python scripts/run-notebooks.py scripts/fixtures/smoke.ipynb notebooks/*.ipynb
shopt -u nullglob
# --- end notebooks -------------------------------------------------------------------------------
