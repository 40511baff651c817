#!/usr/bin/env python3
"""Compare a study's tidy metrics Parquet (run, seed, epoch, split, layer, metric, value) with the
single-process result: `neural-collapse metrics FILE --format json`, one JSON per feature file.

    compare.py TIDY.parquet MANIFEST.tsv [--rtol 1e-12]

MANIFEST.tsv: one line per feature file, `run<TAB>seed<TAB>layer<TAB>json`. Every (epoch, split)
record of every JSON and every metric in it must be in the table with a value equal to 1e-12
relative (|a - b| <= rtol * max(|a|, |b|); exactly equal when one is 0; NaN/null equal only to
NaN/null), and the table must hold nothing else. JSON keys that are not metrics (epoch, split,
and the counts classes/dim/n/rank unless the table has them) are keys, not values.
Prints one summary line; exit 1 with the first differences when they differ.
"""
import json
import math
import sys

import pyarrow.parquet as pq

KEYS = {"epoch", "split"}
COUNTS = {"classes", "dim", "n", "rank"}


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    tidy_path, manifest = argv[1], argv[2]
    rtol = float(argv[argv.index("--rtol") + 1]) if "--rtol" in argv else 1e-12
    table = pq.read_table(tidy_path)
    want_cols = ["run", "seed", "epoch", "split", "layer", "metric", "value"]
    if table.column_names != want_cols:
        print(f"{tidy_path}: columns {table.column_names}, expected {want_cols}")
        return 1
    cols = {c: table.column(c).to_pylist() for c in want_cols}
    got = {}
    for i in range(table.num_rows):
        key = tuple(cols[c][i] for c in want_cols[:-1])
        if key in got:
            print(f"{tidy_path}: duplicate row {key}")
            return 1
        got[key] = cols["value"][i]
    tidy_metrics = set(cols["metric"])

    want = {}
    for line in open(manifest):
        run, seed, layer, path = line.rstrip("\n").split("\t")
        for rec in json.load(open(path)):
            for name, value in rec.items():
                if name in KEYS or (name in COUNTS and name not in tidy_metrics):
                    continue
                if not isinstance(value, (int, float)) and value is not None:
                    continue
                want[(run, int(seed), rec["epoch"], rec["split"], layer, name)] = value

    def same(a, b):
        na = a is None or (isinstance(a, float) and math.isnan(a))
        nb = b is None or (isinstance(b, float) and math.isnan(b))
        if na or nb:
            return na and nb
        if a == b:
            return True
        return abs(a - b) <= rtol * max(abs(a), abs(b))

    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    diff = [(k, got[k], want[k]) for k in want if k in got and not same(got[k], want[k])]
    worst = 0.0
    for k in want:
        a, b = got.get(k), want[k]
        if a is not None and b is not None and not (math.isnan(a) or math.isnan(b)) and max(abs(a), abs(b)) > 0:
            worst = max(worst, abs(a - b) / max(abs(a), abs(b)))
    runs = {k[0] for k in want}
    layers = {(k[0], k[4]) for k in want}
    if missing or extra or diff:
        print(f"DIFFER: {len(missing)} missing, {len(extra)} extra, {len(diff)} different of {len(want)} values")
        for k in missing[:5]:
            print("  missing", k)
        for k in extra[:5]:
            print("  extra  ", k, got[k])
        for k, a, b in diff[:5]:
            print("  differ ", k, "table", a, "single process", b)
        return 1
    print(
        f"EQUAL: {len(want)} values ({len(runs)} runs, {len(layers)} run x layer files, "
        f"{len({k[5] for k in want})} metrics) equal to the single-process result; "
        f"largest relative difference {worst:.3g} (criterion <= {rtol:g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
