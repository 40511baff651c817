#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh machine, then runs them.
#   - the MNIST / Fashion-MNIST files (scripts/fetch-datasets.sh, idempotent, SHA-256 checked)
#   - the Rust tests: unit, integration and doc tests (examples are built too), then the trainer's
#     tests with --features train
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [ -x scripts/fetch-datasets.sh ]; then
  scripts/fetch-datasets.sh
  export NEURAL_COLLAPSE_REQUIRE_DATA=1
fi
cargo test
# The trainer (cargo feature `train`, candle): smoke runs on synthetic images and on real MNIST.
# A second feature set, so a second build of the dependencies (separate target dir: the plain
# build above is not invalidated).
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}-train" cargo test --features train --test train
