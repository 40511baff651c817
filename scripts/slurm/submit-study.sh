#!/usr/bin/env bash
# Measures a study on a Slurm cluster: one array task per unit, then a dependent merge job that
# writes ONE tidy Parquet of every metric (run, seed, epoch, split, layer, metric, value).
#
#   submit-study.sh [OPTIONS] RUNS_DIR STUDY_DIR [-- STATS_OPTIONS...]
#       study mode: one task per feature file RUNS_DIR/*/features-*.parquet (every run x layer;
#       RUNS_DIR/features-*.parquet too, so RUNS_DIR may be a single run;
#       checkpoints and splits are inside each file), then `merge` -> STUDY_DIR/metrics.parquet
#   submit-study.sh [OPTIONS] --shards N FILE STUDY_DIR [-- STATS_OPTIONS...]
#       shard mode, one large file: pass 1 (N tasks: counts and sums of rows [i·n/N, (i+1)·n/N))
#       -> merge of the means -> pass 2 (N tasks, against the merged means) -> final merge
#
# The jobs run in the directory submit-study.sh was called from (sbatch's default), so relative
# paths in STATS_OPTIONS mean what they mean here. Every step waits for the previous one with --dependency=afterok:<job id>; the job ids are
# printed (and appended to STUDY_DIR/jobs.txt). STATS_OPTIONS go to every `neural-collapse stats`
# (e.g. --label coarse --reference train --global-mean sample --tolerance 1e-10). A classifier
# (-- --classifier PATH) given there is the same for every unit: it suits shard mode or a study of
# one run's layer. For a study of many runs use --run-classifiers instead.
#
# Options:
#   --bin PATH        the neural-collapse binary, on a filesystem the compute nodes see (default:
#                     $NC_BIN, else the one STUDY_DIR was started with, else `neural-collapse` on
#                     PATH, else this checkout's target/release, then target/debug)
#   --array-limit K   run at most K tasks of an array at a time (--array=...%K)
#   --run-classifiers study mode: each run's own classifier (RUN/classifier.parquet) for the
#                     run's last layer (the last name in run.json's "layers": the features the
#                     classifier reads), which adds NC2 of W, NC3 and NC4 for that layer; the other
#                     layers are measured without one. Partials record their classifier, so runs
#                     with different classifiers merge into one table. Needs python3 (reads run.json).
#   --wait            wait for the jobs; exit 0 only when STUDY_DIR/metrics.parquet was written
#                     (polls squeue every $NC_SLURM_POLL seconds, default 10)
#
# Cluster resources: the job scripts' #SBATCH lines hold defaults (1 CPU, 4 GB, 1 hour per task,
# the cluster's default partition). Override them with SBATCH_PARTITION, SBATCH_TIMELIMIT,
# SBATCH_MEM_PER_NODE, SBATCH_ACCOUNT (read by sbatch itself) or NC_SBATCH_ARGS (extra sbatch
# options for every job, e.g. NC_SBATCH_ARGS="--partition=cpu --qos=short").
#
# Resumption: a unit whose partial STUDY_DIR/parts/... already exists is not submitted again, so
# running the same command after an interruption (a cancelled array, a node failure, a time limit)
# measures only what is missing and merges everything. Partials are written under a temporary name
# and renamed, so a killed task leaves none behind. A STUDY_DIR made with other STATS_OPTIONS or
# another binary is refused (its partials would not be comparable).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

shards=0 file="" bin="${NC_BIN:-}" limit="" wait=0 run_clf=0
pos=()
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=${2:?--shards N FILE}; file=${3:?--shards N FILE}; shift 3 ;;
    --bin) bin=${2:?--bin PATH}; shift 2 ;;
    --array-limit) limit=${2:?--array-limit K}; shift 2 ;;
    --wait) wait=1; shift ;;
    --run-classifiers) run_clf=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "submit-study: unknown option $1" >&2; usage ;;
    *) pos+=("$1"); shift ;;
  esac
done
stats_args=("$@")
if [ "$shards" != 0 ]; then
  [ ${#pos[@]} = 1 ] || usage
  [[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "submit-study: --shards takes a positive integer, got '$shards'" >&2; exit 2; }
  [ -f "$file" ] || { echo "submit-study: $file: no such file" >&2; exit 2; }
  file=$(cd "$(dirname "$file")" && pwd)/$(basename "$file")
  out=${pos[0]}
else
  [ ${#pos[@]} = 2 ] || usage
  runs=${pos[0]}
  out=${pos[1]}
  [ -d "$runs" ] || { echo "submit-study: $runs: not a directory" >&2; exit 2; }
  if [ "$run_clf" = 1 ]; then command -v python3 >/dev/null || { echo "submit-study: --run-classifiers reads run.json with python3, which is not on PATH" >&2; exit 2; }; fi
  runs=$(cd "$runs" && pwd)
fi

if [ -z "$bin" ] && [ -f "${pos[-1]}/study.env" ]; then
  # resuming: the binary the study was started with
  bin=$(. "${pos[-1]}/study.env" && echo "$NC_BIN")
fi
if [ -z "$bin" ]; then
  bin=$(command -v neural-collapse || true)
  for b in "$repo/target/release/neural-collapse" "$repo/target/debug/neural-collapse"; do
    [ -n "$bin" ] || { [ -x "$b" ] && bin=$b; } || true
  done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "submit-study: no neural-collapse binary (build it, or give --bin / NC_BIN)" >&2; exit 2; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
"$bin" stats --help >/dev/null 2>&1 || { echo "submit-study: $bin has no \`stats\` command (an older build? rebuild it, or give --bin)" >&2; exit 2; }

mkdir -p "$out/parts" "$out/logs"
out=$(cd "$out" && pwd)
# What every job reads (the jobs do not depend on the submitter's environment being exported).
env_new=$(printf 'NC_BIN=%q\nRUN_CLASSIFIERS=%s\nSTATS_ARGS=(' "$bin" "$run_clf"; for a in "${stats_args[@]}"; do printf '%q ' "$a"; done; printf ')\n')
if [ -f "$out/study.env" ] && [ "$(cat "$out/study.env")" != "$env_new" ]; then
  echo "submit-study: $out was made with other options or another binary:" >&2
  sed 's/^/  /' "$out/study.env" >&2
  echo "now:" >&2
  sed 's/^/  /' <<< "$env_new" >&2
  echo "use another STUDY_DIR, or delete it to start again" >&2
  exit 2
fi
printf '%s\n' "$env_new" > "$out/study.env"

# --- submission helpers ---------------------------------------------------------------------------
read -r -a extra <<< "${NC_SBATCH_ARGS:-}"
max_array=$(scontrol show config 2>/dev/null | awk '$1 == "MaxArraySize" { print $3 }')
max_array=${max_array:-1001}
jobs_file="$out/jobs.txt"
all_jobs=()

missing_units() { # UNITS -> the 0-based units whose partial is missing
  awk -F '\t' '{ print NR - 1 "\t" $1 }' "$1" | while IFS=$'\t' read -r i part; do
    [ -e "$part" ] || echo "$i"
  done
}
# submit_array UNITS DEPENDENCY UNIT... -> prints the job ids (one per block of MaxArraySize units)
submit_array() {
  local units=$1 dep=$2; shift 2
  local -A blocks=()
  local u b
  for u in "$@"; do
    b=$(( u / max_array ))
    blocks[$b]+="${blocks[$b]:+,}$(( u - b * max_array ))"
  done
  for b in $(printf '%s\n' "${!blocks[@]}" | sort -n); do
    sbatch --parsable ${dep:+--dependency=$dep} --array="${blocks[$b]}${limit:+%$limit}" \
      -o "$out/logs/%x-%A_%a.out" "${extra[@]}" \
      "$here/stats-task.sbatch" "$units" $(( b * max_array )) | cut -d';' -f1
  done
}
submit_merge() { # UNITS KIND OUTPUT DEPENDENCY -> job id
  sbatch --parsable ${4:+--dependency=$4} -o "$out/logs/%x-%j.out" "${extra[@]}" \
    "$here/merge.sbatch" "$1" "$2" "$3" | cut -d';' -f1
}
afterok() { [ $# = 0 ] || { local IFS=:; echo "afterok:$*"; }; }
note() { echo "$*"; echo "$(date -u +%FT%TZ) $*" >> "$jobs_file"; }

# --- the units ------------------------------------------------------------------------------------
part_name() { # FILE -> the partial's name in study mode: <run dir>--<layer>.parquet
  local f=$1 stem
  stem=$(basename "$f" .parquet)
  echo "$out/parts/$(basename "$(dirname "$f")")--${stem#features-}.parquet"
}
t_submit=$(date +%s)
rm -f "$out/metrics.parquet"
if [ "$shards" = 0 ]; then
  units="$out/units.tsv"
  : > "$units.new"
  shopt -s nullglob
  for dir in "$runs/" "$runs"/*/; do   # RUNS_DIR may also be one run's directory
    dir=${dir%/}
    files=("$dir"/features-*.parquet)
    [ ${#files[@]} -gt 0 ] || continue
    mapfile -t files < <(printf '%s\n' "${files[@]}" | sort -V)
    clf_file=-
    if [ "$run_clf" = 1 ] && [ -f "$dir/classifier.parquet" ]; then
      # the run's last layer, from run.json (else its only features file)
      last=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["layers"][-1])' "$dir/run.json" 2>/dev/null \
        || { [ ${#files[@]} = 1 ] && basename "${files[0]}" .parquet | sed 's/^features-//'; } || true)
      [ -n "$last" ] || { echo "submit-study: $dir has classifier.parquet but no run.json \"layers\" saying which layer it reads" >&2; exit 2; }
      [ -f "$dir/features-$last.parquet" ] || { echo "submit-study: $dir/run.json names layer '$last' last, but $dir/features-$last.parquet does not exist" >&2; exit 2; }
      clf_file="$dir/features-$last.parquet"
    fi
    for f in "${files[@]}"; do
      clf=-
      [ "$f" != "$clf_file" ] || clf="$dir/classifier.parquet"
      printf '%s\t%s\t-\t-\t%s\n' "$(part_name "$f")" "$f" "$clf" >> "$units.new"
    done
  done
  shopt -u nullglob
  mv "$units.new" "$units"
  n=$(wc -l < "$units")
  [ "$n" -gt 0 ] || { echo "submit-study: no $runs/*/features-*.parquet nor $runs/features-*.parquet" >&2; exit 2; }
  mapfile -t todo < <(missing_units "$units")
  note "study: $n feature files under $runs; $(( n - ${#todo[@]} )) partials present, ${#todo[@]} to measure"
  deps=()
  if [ ${#todo[@]} -gt 0 ]; then
    mapfile -t deps < <(submit_array "$units" "" "${todo[@]}")
    note "stats array: ${deps[*]} (${#todo[@]} tasks)"
    all_jobs+=("${deps[@]}")
  fi
  m=$(submit_merge "$units" parquet "$out/metrics.parquet" "$(afterok "${deps[@]}")")
  note "merge: $m (afterok:${deps[*]:-none}) -> $out/metrics.parquet"
  all_jobs+=("$m")
else
  p1="$out/pass1.tsv" p2="$out/pass2.tsv" means="$out/means.parquet"
  : > "$p1"; : > "$p2"
  for ((i = 0; i < shards; i++)); do
    printf '%s\t%s\t%s\t-\t-\n' "$out/parts/pass1-$i-of-$shards.parquet" "$file" "$i/$shards" >> "$p1"
    printf '%s\t%s\t%s\t%s\t-\n' "$out/parts/pass2-$i-of-$shards.parquet" "$file" "$i/$shards" "$means" >> "$p2"
  done
  mapfile -t todo1 < <(missing_units "$p1")
  note "shards: $file in $shards shards; pass 1: ${#todo1[@]} to measure"
  deps=()
  if [ ${#todo1[@]} -gt 0 ]; then
    mapfile -t deps < <(submit_array "$p1" "" "${todo1[@]}")
    note "pass-1 array: ${deps[*]} (${#todo1[@]} tasks)"
    all_jobs+=("${deps[@]}")
  fi
  if [ ${#todo1[@]} -gt 0 ] || [ ! -e "$means" ]; then
    rm -f "$means"
    m=$(submit_merge "$p1" means "$means" "$(afterok "${deps[@]}")")
    note "means merge: $m (afterok:${deps[*]:-none}) -> $means"
    all_jobs+=("$m")
    deps=("$m")
    # new means: every pass-2 task runs; `stats` keeps a pass-2 partial only when it is valid
    # for these means
    mapfile -t todo2 < <(seq 0 $(( shards - 1 )))
  else
    deps=()
    mapfile -t todo2 < <(missing_units "$p2")
  fi
  note "pass 2: ${#todo2[@]} to measure"
  if [ ${#todo2[@]} -gt 0 ]; then
    mapfile -t j2 < <(submit_array "$p2" "$(afterok "${deps[@]}")" "${todo2[@]}")
    note "pass-2 array: ${j2[*]} (${#todo2[@]} tasks, afterok:${deps[*]:-none})"
    all_jobs+=("${j2[@]}")
    deps=("${j2[@]}")
  fi
  m=$(submit_merge "$p2" parquet "$out/metrics.parquet" "$(afterok "${deps[@]}")")
  note "merge: $m (afterok:${deps[*]:-none}) -> $out/metrics.parquet"
  all_jobs+=("$m")
fi
note "logs: $out/logs/"

[ "$wait" = 1 ] || exit 0
# --- wait: until every job has left the queue; a dependency that can never be satisfied (a task
# failed) cancels the rest ----------------------------------------------------------------------------
ids=$(IFS=,; echo "${all_jobs[*]}")
poll=${NC_SLURM_POLL:-10}
while :; do
  q=$(squeue -h -j "$ids" -o '%i %T %r' 2>/dev/null || true)
  [ -n "$q" ] || break
  if grep -q DependencyNeverSatisfied <<< "$q"; then
    echo "submit-study: a job failed; cancelling the jobs that wait for it (${ids})" >&2
    scancel ${all_jobs[@]} 2>/dev/null || true
    break
  fi
  sleep "$poll"
done
if [ -s "$out/metrics.parquet" ]; then
  note "done in $(( $(date +%s) - t_submit )) s: $out/metrics.parquet"
  exit 0
fi
echo "submit-study: $out/metrics.parquet was not written; the logs of this submission that report an error:" >&2
for j in "${all_jobs[@]}"; do
  for log in "$out"/logs/*-"$j"_*.out "$out"/logs/*-"$j".out; do
    [ -f "$log" ] && grep -qiE 'error|fail|cancel' "$log" || continue
    echo "--- $log" >&2; tail -5 "$log" >&2
  done
done
exit 1
