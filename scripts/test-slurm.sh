#!/usr/bin/env bash
# The Slurm route (issue #16, item 3) run for real: a single-node Slurm cluster on this machine
# (scripts/slurm/start-local-cluster.sh), the job scripts of scripts/slurm/ submitted as they would
# be on a real cluster, and their merged table compared with the single-process result.
#
#   1. study mode over every bundled run x layer file (data/runs/*/features-*.parquet, 55 files):
#      interrupted on purpose (the array is cancelled once a few partials exist), submitted again
#      (resumes from the partials written), merged into one tidy Parquet, which must equal
#      `neural-collapse metrics FILE --format json` of every file to 1e-12 relative;
#   2. resumption: one partial deleted, the same command again: exactly one task runs, the other
#      partials are untouched, the table is the same; a task resubmitted by hand over a valid
#      partial keeps it;
#   3. shard mode: one file in 3 shards (pass 1 -> means -> pass 2 -> merge), with its classifier
#      (NC2 of W, NC3, NC4), equal to `metrics FILE --classifier ... --format json`.
#   4. study mode with --run-classifiers over two runs: each run's classifier for its last layer,
#      equal to `metrics` with that classifier (NC3 present exactly for those layers).
# The daemons this script starts are stopped at the end (by PID, scripts/slurm/stop-local-cluster.sh).
#
# Needs: the CLI (target/debug/neural-collapse, or NC_BIN), a python with pyarrow (NC_PYTHON, else
# .venv-nc-export), and root (the local daemons) unless a cluster already answers. Outside CI a
# machine without root or without Slurm (and NC_SLURM_INSTALL unset) skips with a message; in CI
# (CI=true) that is a failure: the test must really run there.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
slurm="$repo/scripts/slurm"
t_all=$(date +%s.%N)
secs() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "test-slurm: $*"; }
fail() { say "FAIL: $*"; exit 1; }

bin="${NC_BIN:-$repo/target/debug/neural-collapse}"
py="${NC_PYTHON:-$repo/.venv-nc-export/bin/python}"

export NC_SLURM_STATE="${NC_SLURM_STATE:-/tmp/nc-slurm-local}"
# Stop at the end only the daemons this run starts (a cluster found running is left running).
# (Not `cat … | wc -l`: with pipefail, on a machine that never ran a cluster the failed cat made
# the assignment fail, and set -e ended the script at once with no message.)
started() { if [ -f "$NC_SLURM_STATE/started" ]; then wc -l < "$NC_SLURM_STATE/started"; else echo 0; fi; }
started_before=$(started)
t0=$(date +%s.%N)
set +e
"$slurm/start-local-cluster.sh"
rc=$?
set -e
if [ "$(started)" -gt "$started_before" ]; then
  trap '"$slurm/stop-local-cluster.sh"' EXIT
fi
if [ $rc = 3 ]; then
  if [ "${CI:-}" = true ]; then fail "cannot start a Slurm cluster in CI (see above)"; fi
  say "SKIPPED: no Slurm cluster here (see above); CI runs this test"
  exit 0
fi
[ $rc = 0 ] || fail "the local Slurm cluster did not start"
t_cluster=$(secs "$t0")
[ -x "$bin" ] || fail "no CLI at $bin (cargo build --bin neural-collapse, or set NC_BIN)"
"$py" -c 'import pyarrow' 2>/dev/null || fail "$py has no pyarrow (scripts/test.sh makes .venv-nc-export)"
# shellcheck disable=SC1091
. "$NC_SLURM_STATE/env"
export NC_SLURM_POLL=0.5

work="$repo/target/slurm-test"
rm -rf "$work"
mkdir -p "$work/ref"

# --- single-process reference: `metrics` of every file ---------------------------------------------
t0=$(date +%s.%N)
"$py" - "$work/ref" data/runs/*/features-*.parquet > "$work/manifest.tsv" <<'EOF'
import json, os, sys
for f in sys.argv[2:]:
    d = os.path.dirname(f)
    run = os.path.basename(d)
    layer = os.path.basename(f)[len("features-"):-len(".parquet")]
    seed = json.load(open(os.path.join(d, "run.json")))["seed"]
    print(f"{run}\t{seed}\t{layer}\t{sys.argv[1]}/{run}--{layer}.json")
EOF
# one process per file, as many at a time as there are cores
cut -f 1,3,4 "$work/manifest.tsv" | tr '\t' '\n' | xargs -d '\n' -n 3 -P "$(nproc)" \
  sh -c '"$0" metrics "data/runs/$1/features-$2.parquet" --format json > "$3"' "$bin"
t_ref=$(secs "$t0")
nfiles=$(wc -l < "$work/manifest.tsv")
say "single-process reference (metrics --format json, one process per file): $nfiles files in $t_ref s"

# --- 1. study mode, interrupted and resumed ------------------------------------------------------------
study="$work/study"
t0=$(date +%s.%N)
"$slurm/submit-study.sh" --bin "$bin" data/runs "$study" | tee "$work/submit-1.txt"
array=$(awk '/^stats array:/ { print $3 }' "$work/submit-1.txt")
merge=$(awk '/^merge:/ { print $2 }' "$work/submit-1.txt")
# interrupt once a few partials exist (or the array is done already)
for ((i = 0; i < 600; i++)); do
  [ "$(find "$study/parts" -name '*.parquet' | wc -l)" -ge 6 ] && break
  sleep 0.1
done
scancel "$array" "$merge"
while [ -n "$(squeue -h -j "$array,$merge" 2>/dev/null)" ]; do sleep 0.2; done
[ ! -e "$study/metrics.parquet" ] || fail "the merge ran although its array was cancelled"
have=$(find "$study/parts" -name '*.parquet' | wc -l)
say "interrupted: array $array cancelled with $have of $nfiles partials written"
"$slurm/submit-study.sh" --bin "$bin" --wait data/runs "$study" | tee "$work/submit-2.txt"
grep -q "^study: $nfiles feature files .*; $have partials present, $(( nfiles - have )) to measure" "$work/submit-2.txt" \
  || fail "the resubmission did not resume from the $have partials present"
t_study=$(secs "$t0")
"$py" "$slurm/compare.py" "$study/metrics.parquet" "$work/manifest.tsv" || fail "study table differs"

# --- 2. resumption: delete one partial -----------------------------------------------------------------
victim="$study/parts/mnist-cascade-s2--fc5.parquet"
[ -e "$victim" ] || fail "no partial $victim"
cp "$study/metrics.parquet" "$work/metrics-before.parquet"
rm "$victim"
touch "$work/stamp"; sleep 1
t0=$(date +%s.%N)
"$slurm/submit-study.sh" --bin "$bin" --wait data/runs "$study" | tee "$work/submit-3.txt"
t_resume=$(secs "$t0")
array=$(awk '/^stats array:/ { print $3 }' "$work/submit-3.txt")
[ -n "$array" ] || fail "no array submitted for the deleted partial"
logs=("$study"/logs/nc-stats-"$array"_*.out)
[ ${#logs[@]} = 1 ] || fail "expected one task of array $array, found ${#logs[@]} logs"
grep -q "measured: .*mnist-cascade-s2/features-fc5.parquet" "${logs[0]}" || fail "the task did not measure the deleted unit: $(cat "${logs[0]}")"
changed=$(find "$study/parts" -name '*.parquet' -newer "$work/stamp" | wc -l)
[ "$changed" = 1 ] || fail "$changed partials were rewritten, expected 1"
"$py" - "$work/metrics-before.parquet" "$study/metrics.parquet" <<'EOF' || fail "the resumed table differs from the first"
import sys, pyarrow.parquet as pq
a, b = (pq.read_table(p) for p in sys.argv[1:3])
assert a.equals(b), "tables differ"
print(f"test-slurm: resumed table identical to the first ({a.num_rows} rows)")
EOF
say "resumption: 1 task ($(basename "${logs[0]}")), 1 partial rewritten, $(( nfiles - 1 )) kept"
# A task whose partial exists (an array resubmitted by hand): `stats` finds it valid and keeps it.
keep=$(sbatch --parsable --array=0 -o "$study/logs/%x-%A_%a.out" "$slurm/stats-task.sbatch" "$study/units.tsv" 0 | cut -d';' -f1)
while [ -n "$(squeue -h -j "$keep" 2>/dev/null)" ]; do sleep 0.2; done
grep -q "^unit 0 kept: " "$study/logs/nc-stats-${keep}_0.out" || fail "an existing valid partial was not kept: $(cat "$study/logs/nc-stats-${keep}_0.out")"
[ "$(find "$study/parts" -name '*.parquet' -newer "$work/stamp" | wc -l)" = 1 ] || fail "a kept partial was rewritten"
say "a resubmitted task with a valid partial keeps it: $(grep "^unit 0 kept" "$study/logs/nc-stats-${keep}_0.out")"

# --- 3. shard mode: one file, 3 shards, with its classifier --------------------------------------
file=data/runs/mnist-train-test-s0/features-fc3.parquet
clf=data/runs/mnist-train-test-s0/classifier.parquet
"$bin" metrics "$file" --classifier "$clf" --format json > "$work/ref-shards.json"
printf 'mnist-train-test-s0\t0\tfc3\t%s\n' "$work/ref-shards.json" > "$work/manifest-shards.tsv"
t0=$(date +%s.%N)
"$slurm/submit-study.sh" --bin "$bin" --wait --shards 3 "$file" "$work/shards" -- --classifier "$clf" | tee "$work/submit-4.txt"
t_shards=$(secs "$t0")
"$py" "$slurm/compare.py" "$work/shards/metrics.parquet" "$work/manifest-shards.tsv" || fail "sharded table differs"

# --- 4. study mode with each run's own classifier (--run-classifiers) ------------------------------
# Two runs (a train-test run with one layer, a cascade run with eight): the classifier of each is
# used for its last layer only, so that layer gains NC2 of W, NC3 and NC4 and merges with the others.
mkdir -p "$work/runs2"
for r in mnist-train-test-s1 mnist-cascade-s1; do ln -s "$repo/data/runs/$r" "$work/runs2/$r"; done
: > "$work/manifest-clf.tsv"
for r in mnist-train-test-s1 mnist-cascade-s1; do
  last=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["layers"][-1])' "data/runs/$r/run.json")
  seed=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["seed"])' "data/runs/$r/run.json")
  for f in data/runs/$r/features-*.parquet; do
    layer=$(basename "$f" .parquet); layer=${layer#features-}
    if [ "$layer" = "$last" ]; then clf_args=(--classifier "data/runs/$r/classifier.parquet"); else clf_args=(); fi
    "$bin" metrics "$f" "${clf_args[@]}" --format json > "$work/ref/clf-$r--$layer.json"
    printf '%s\t%s\t%s\t%s\n' "$r" "$seed" "$layer" "$work/ref/clf-$r--$layer.json" >> "$work/manifest-clf.tsv"
  done
done
t0=$(date +%s.%N)
"$slurm/submit-study.sh" --bin "$bin" --wait --run-classifiers "$work/runs2" "$work/study-clf" | tee "$work/submit-5.txt"
t_clf=$(secs "$t0")
"$py" "$slurm/compare.py" "$work/study-clf/metrics.parquet" "$work/manifest-clf.tsv" || fail "study table with run classifiers differs"
"$py" - "$work/study-clf/metrics.parquet" <<'EOF' || fail "the run classifiers' metrics are missing"
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1]).to_pylist()
have = {(r["run"], r["layer"]) for r in t if r["metric"] == "nc3" and r["value"] is not None}
assert have == {("mnist-train-test-s1", "fc3"), ("mnist-cascade-s1", "fc8")}, have
print(f"test-slurm: NC3 present exactly for the runs' last layers: {sorted(have)}")
EOF

say "PASS: cluster start ${t_cluster} s; reference ${t_ref} s; study of $nfiles files (interrupted + resumed) ${t_study} s;" \
  "resumption ${t_resume} s; 3 shards ${t_shards} s; run classifiers ${t_clf} s; total $(secs "$t_all") s"
