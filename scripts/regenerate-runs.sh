#!/usr/bin/env bash
# Regenerates every bundled run in data/runs/ with the presets at their default scale, and
# prints the wall time of each. Needs the datasets (scripts/fetch-datasets.sh) and builds the
# command line with the `train` feature (release).
#
#   scripts/regenerate-runs.sh            # all four runs
#   scripts/regenerate-runs.sh cascade    # the runs whose name contains "cascade"
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/fetch-datasets.sh
cargo build --release --features train --bin neural-collapse
exe="${CARGO_TARGET_DIR:-$repo/target}/release/neural-collapse"
runs=(
  "mnist-train-test:--preset train-test --dataset mnist"
  "fashion-mnist-train-test:--preset train-test --dataset fashion-mnist"
  "fashion-mnist-transfer:--preset transfer"
  "mnist-cascade:--preset cascade --dataset mnist"
)
filter="${1:-}"
total_start=$(date +%s)
for entry in "${runs[@]}"; do
  name="${entry%%:*}"; args="${entry#*:}"
  [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$exe" train $args --out "data/runs/$name"
  echo "regenerate-runs: $name took $(( $(date +%s) - start )) s"
done
echo "regenerate-runs: all done in $(( $(date +%s) - total_start )) s"
