#!/usr/bin/env bash
# The main job (README): set-up, then the reproduction on the bundled data in data/runs/.
# Today it builds the command line and measures every bundled run's feature files; the executed
# notebooks and figures join here as they land (see the open issues).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
cargo build --release --bin neural-collapse
exe="${CARGO_TARGET_DIR:-$repo/target}/release/neural-collapse"
out="$repo/target/reproduction"
mkdir -p "$out"
shopt -s nullglob
files=(data/runs/*/features-*.parquet)
if [ ${#files[@]} -eq 0 ]; then
  echo "no bundled runs in data/runs/ yet: nothing to measure"
  exit 0
fi
# The three findings: every figure to target/figures/ and one CHECK line per finding.
"$exe" reproduce --runs data/runs --out "$repo/target/figures" | tee "$out/checks.txt"
for f in "${files[@]}"; do
  run=$(basename "$(dirname "$f")"); layer=$(basename "$f" .parquet)
  "$exe" metrics "$f" --reference train --format json > "$out/$run-$layer-metrics.json"
  echo "measured $f -> $out/$run-$layer-metrics.json"
done
