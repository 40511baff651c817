#!/usr/bin/env python3
"""Execute the notebooks with the real Jupyter client and the evcxr kernel, then check them.

Run it with the notebook virtualenv's python (scripts/setup-notebooks.sh makes it):

    .venv-jupyter/bin/python scripts/run-notebooks.py                 # every notebooks/*.ipynb
    .venv-jupyter/bin/python scripts/run-notebooks.py 01-train-vs-test-collapse
    .venv-jupyter/bin/python scripts/run-notebooks.py scripts/fixtures/smoke.ipynb
    .venv-jupyter/bin/python scripts/run-notebooks.py --check-only    # committed outputs only
    .venv-jupyter/bin/python scripts/run-notebooks.py --update        # write outputs back

Each notebook runs in a fresh kernel whose working directory is the notebook's own folder (so
`:dep neural_collapse = { path = ".." }` resolves), one after another, so that they share one
evcxr build directory (EVCXR_TMPDIR) and the crate is compiled once. The executed notebook and its
HTML go to target/notebooks/.

Evcxr panics and errors do not make execution fail, so every executed notebook is checked:
  * no `error` output;
  * no stderr stream containing "panicked", "error[E" or "error:", nor any other stderr text
    than `warning:` lines (a top-level `?` error prints only its message there);
  * except in a cell whose metadata has `"expect_output": "<text>"` (a cell that shows what bad
    input does): its output (stdout or stderr) must contain that text (the library's one-line
    error) and its stderr must not contain "panicked" or "error[E"; the cells after it must still
    run, which shows that the kernel survived. (evcxr 0.22 sometimes drops the stderr line that a
    top-level `?` error prints — seen twice in 8 error cells — so such a cell prints the error
    itself on stdout);
  * every code cell ran (has an execution count);
  * at least one line starting `CHECK `, and every such line says PASS (and not FAIL), or says
    FAIL and a markdown cell of the notebook explains it with a line `FAIL explained: <name>`
    (the check's name, between `CHECK ` and the first `:`) — an honest FAIL of a criterion fixed
    in advance, explained with numbers, rather than a weakened criterion;
  * at least one figure: an `image/svg+xml` output or an `<svg` inside `text/html`;
  * the numbers in the committed notebook's CHECK lines agree with the fresh execution
    (same lines with the numbers taken out, numbers equal within --rtol / --atol).
Exit status 1 on any failure, 2 on bad usage or a missing set-up; each failure names the
notebook, the cell (1-based, counting every cell) and the reason.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

REPO = Path(__file__).resolve().parent.parent
KERNEL_NAME = "rust"
STDERR_MARKERS = ("panicked", "error[E", "error:")
STDERR_ALLOWED = ("warning:",)  # stderr lines that do not fail a notebook
CHECK_PREFIX = "CHECK "
SVG_MIME = "image/svg+xml"

# A number standing on its own: not part of an identifier such as `nc1` or `fc3`.
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan)\b"
NUMBER_RE = re.compile(r"(?<![\w.])(?:" + _NUM + r")(?![\w.])", re.IGNORECASE)


@dataclass(frozen=True)
class Failure:
    notebook: str
    cell: Optional[int]  # 1-based index among all cells, None for the notebook as a whole
    reason: str

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "notebook"
        return f"{self.notebook}: {where}: {self.reason}"


# ---------------------------------------------------------------------------------------------
# Reading outputs (plain dicts: what json.load gives, and nbformat's NotebookNode alike)


def _text(value) -> str:
    """nbformat stores multi-line strings either as one string or as a list of lines."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "".join(value)
    return str(value)


def code_cells(nb) -> Iterator[tuple[int, dict]]:
    """(1-based index among all cells, cell) for every code cell."""
    for i, cell in enumerate(nb.get("cells", []), start=1):
        if cell.get("cell_type") == "code":
            yield i, cell


def outputs(nb) -> Iterator[tuple[int, dict]]:
    for i, cell in code_cells(nb):
        for out in cell.get("outputs", []) or []:
            yield i, out


def check_lines(nb) -> list[tuple[int, str]]:
    """Every output line starting with `CHECK ` (stdout streams and text/plain results)."""
    found = []
    for i, out in outputs(nb):
        kind = out.get("output_type")
        if kind == "stream" and out.get("name") == "stdout":
            text = _text(out.get("text"))
        elif kind in ("execute_result", "display_data"):
            text = _text(out.get("data", {}).get("text/plain"))
        else:
            continue
        for line in text.splitlines():
            line = line.strip().strip('"')
            if line.startswith(CHECK_PREFIX):
                found.append((i, line))
    return found


def check_name(line: str) -> str:
    """The name of a CHECK line: the text between `CHECK ` and the first `:`."""
    return line[len(CHECK_PREFIX):].split(":", 1)[0].strip()


EXPLAINED_PREFIX = "FAIL explained:"


def explained_fails(nb) -> set[str]:
    """Check names that a markdown cell explains as an honest FAIL (`FAIL explained: <name>`)."""
    names = set()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        for line in _text(cell.get("source")).splitlines():
            line = line.strip().strip("*_` ")
            if line.startswith(EXPLAINED_PREFIX):
                names.add(line[len(EXPLAINED_PREFIX):].strip().strip("*_` "))
    return names


def has_figure(nb) -> bool:
    for _, out in outputs(nb):
        data = out.get("data") or {}
        if SVG_MIME in data:
            return True
        if "<svg" in _text(data.get("text/html")):
            return True
    return False


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_outputs(nb, name: str, executed: bool = True) -> list[Failure]:
    """Every check on one executed notebook, except the comparison with the committed one."""
    failures: list[Failure] = []
    for i, cell in code_cells(nb):
        stderr: list[str] = []
        stdout: list[str] = []
        if executed and _text(cell.get("source")).strip() and cell.get("execution_count") is None:
            failures.append(Failure(name, i, "code cell was not executed (no execution count)"))
        for out in cell.get("outputs", []) or []:
            kind = out.get("output_type")
            if kind == "error":
                msg = f"{out.get('ename', '')}: {out.get('evalue', '')}"
                if not msg.strip(": "):
                    msg = _text(out.get("traceback"))
                failures.append(Failure(name, i, f"error output: {_shorten(msg)}"))
            elif kind == "stream" and out.get("name") == "stderr":
                stderr.append(_text(out.get("text")))
            elif kind == "stream":
                stdout.append(_text(out.get("text")))
        # evcxr sends stderr a line at a time: judge the cell's stderr as a whole, once.
        text = "".join(stderr)
        expected = (cell.get("metadata") or {}).get("expect_output")
        if expected is not None:
            printed = "".join(stdout) + text
            if expected not in printed:
                failures.append(
                    Failure(name, i, f"expected output {expected!r} not printed: {_shorten(printed) or '(none)'}")
                )
            for m in ("panicked", "error[E"):
                if m in text:
                    line = next(l for l in text.splitlines() if m in l)
                    failures.append(Failure(name, i, f"stderr contains {m!r}: {_shorten(line)}"))
            continue
        marked = [m for m in STDERR_MARKERS if m in text]
        if marked:
            line = next(l for l in text.splitlines() if marked[0] in l)
            failures.append(Failure(name, i, f"stderr contains {marked[0]!r}: {_shorten(line)}"))
        else:
            # A top-level `?` error in evcxr prints only its message, on stderr, and the cell
            # still counts as executed: any other stderr text fails too.
            other = [l for l in text.splitlines() if l.strip() and not l.startswith(STDERR_ALLOWED)]
            if other:
                failures.append(
                    Failure(name, i, f"unexpected stderr output (a `?` error?): {_shorten(other[0])}")
                )
    lines = check_lines(nb)
    if not lines:
        failures.append(Failure(name, None, "no output line starts with 'CHECK '"))
    explained = explained_fails(nb)
    for i, line in lines:
        honest_fail = "FAIL" in line and check_name(line) in explained
        if ("PASS" not in line or "FAIL" in line) and not honest_fail:
            failures.append(Failure(name, i, f"check did not pass: {_shorten(line)}"))
    if not has_figure(nb):
        failures.append(
            Failure(name, None, f"no figure: no {SVG_MIME} output and no <svg in text/html")
        )
    return failures


def split_numbers(line: str) -> tuple[str, list[float]]:
    """The line with each number replaced by `#`, and the numbers."""
    numbers = [float(m.group(0)) for m in NUMBER_RE.finditer(line)]
    return NUMBER_RE.sub("#", line), numbers


def numbers_agree(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def compare_checks(committed, fresh, name: str, rtol: float = 1e-6, atol: float = 1e-12) -> list[Failure]:
    """The committed notebook's CHECK lines against a fresh execution's, in order."""
    old, new = check_lines(committed), check_lines(fresh)
    if not old:
        return [
            Failure(
                name,
                None,
                "the committed notebook has no CHECK output to compare with "
                "(execute it with --update and commit the outputs)",
            )
        ]
    failures = []
    if len(old) != len(new):
        failures.append(
            Failure(name, None, f"{len(old)} CHECK lines committed but {len(new)} in the fresh run")
        )
    for (ci, cline), (fi, fline) in zip(old, new):
        ctemplate, cnums = split_numbers(cline)
        ftemplate, fnums = split_numbers(fline)
        if ctemplate != ftemplate or len(cnums) != len(fnums):
            failures.append(
                Failure(
                    name,
                    fi,
                    f"CHECK line differs from the committed one (cell {ci}): "
                    f"committed {_shorten(cline)!r}, fresh {_shorten(fline)!r}",
                )
            )
            continue
        for k, (a, b) in enumerate(zip(cnums, fnums), start=1):
            if not numbers_agree(a, b, rtol, atol):
                failures.append(
                    Failure(
                        name,
                        fi,
                        f"number {k} of a CHECK line changed: committed {a!r}, fresh {b!r} "
                        f"(rtol {rtol:g}, atol {atol:g}) in {_shorten(fline)!r}",
                    )
                )
    return failures


# ---------------------------------------------------------------------------------------------
# Executing


def notebook_env() -> dict[str, str]:
    """Environment for the kernels: the project's Jupyter path and evcxr build directory."""
    env = dict(os.environ)
    jupyter_path = str(REPO / "target" / "jupyter")
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [jupyter_path, env.get("JUPYTER_PATH")]))
    # One build directory for every notebook of the run (they run one after another): the crate
    # and its dependencies are compiled once and kept for the next run.
    env.setdefault("EVCXR_TMPDIR", str(REPO / "target" / "evcxr" / "build"))
    cargo_bin = Path(env.get("CARGO_HOME", Path.home() / ".cargo")) / "bin"
    if cargo_bin.is_dir() and str(cargo_bin) not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join(filter(None, [str(cargo_bin), env.get("PATH")]))
    return env


def seed_lockfile(build_dir: Path) -> None:
    """Make evcxr resolve the dependencies the crate is tested with.

    evcxr writes its own Cargo.toml in its build directory (EVCXR_TMPDIR) and would resolve every
    dependency afresh, to the newest versions. Starting from the repository's Cargo.lock, cargo
    keeps each version that still fits and only adds or drops what differs. Copied again whenever
    the repository's lock file changes."""
    lock = REPO / "Cargo.lock"
    if not lock.is_file():
        return
    build_dir.mkdir(parents=True, exist_ok=True)
    seed = lock.read_bytes()
    stamp = build_dir / "Cargo.lock.seeded"
    if stamp.is_file() and stamp.read_bytes() == seed and (build_dir / "Cargo.lock").is_file():
        return
    (build_dir / "Cargo.lock").write_bytes(seed)
    stamp.write_bytes(seed)


def resolve(selection: list[str]) -> list[Path]:
    if not selection:
        return sorted((REPO / "notebooks").glob("*.ipynb"))
    paths = []
    for s in selection:
        p = Path(s)
        candidates = [p, REPO / p, REPO / "notebooks" / p, REPO / "notebooks" / (s + ".ipynb")]
        for c in candidates:
            if c.is_file() and c.suffix == ".ipynb":
                paths.append(c.resolve())
                break
        else:
            raise SystemExit(f"run-notebooks: no notebook named {s!r} (looked in notebooks/ too)")
    return paths


def execute(path: Path, timeout: int, verbose: bool):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Rust", "language": "rust"}
    started: dict[int, float] = {}
    cell_times: list[tuple[int, float]] = []

    def on_start(cell, cell_index, **_):
        started[cell_index] = time.monotonic()

    def on_done(cell, cell_index, **_):
        t = time.monotonic() - started.get(cell_index, time.monotonic())
        cell_times.append((cell_index + 1, t))
        if verbose:
            print(f"    cell {cell_index + 1}: {t:7.1f} s", flush=True)

    client = NotebookClient(
        nb,
        timeout=timeout,
        startup_timeout=180,
        kernel_name=KERNEL_NAME,
        allow_errors=True,  # run every cell; the checks report the errors with their cell
        record_timing=False,  # keep committed outputs free of timestamps
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_start=on_start,
        on_cell_executed=on_done,
    )
    client.execute()
    return nb, cell_times


def export_html(nb, dest: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    dest.write_text(body, encoding="utf-8")


def kernel_installed() -> bool:
    return (REPO / "target" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json").is_file()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="names or paths (default: notebooks/*.ipynb)")
    ap.add_argument("--check-only", action="store_true", help="check committed outputs, execute nothing")
    ap.add_argument("--update", action="store_true", help="write executed notebooks back in place")
    ap.add_argument("--out", default=str(REPO / "target" / "notebooks"), help="output folder")
    ap.add_argument("--timeout", type=int, default=1800, help="per-cell timeout, seconds (default 1800)")
    ap.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance for CHECK numbers")
    ap.add_argument("--atol", type=float, default=1e-12, help="absolute tolerance for CHECK numbers")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each cell's wall time")
    args = ap.parse_args(argv)
    if args.check_only and args.update:
        ap.error("--check-only and --update exclude each other")

    paths = resolve(args.notebooks)
    if not paths:
        print("run-notebooks: no notebooks to run")
        return 0
    if not args.check_only and not kernel_installed():
        print("run-notebooks: the evcxr kernel is not registered in target/jupyter: "
              "run scripts/setup-notebooks.sh first", file=sys.stderr)
        return 2

    # The kernel spec is looked up in this process and the kernels inherit its environment.
    os.environ.update(notebook_env())
    if not args.check_only:
        seed_lockfile(Path(os.environ["EVCXR_TMPDIR"]))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_failures: list[Failure] = []
    total = time.monotonic()
    for path in paths:
        name = os.path.relpath(path, REPO)
        with path.open(encoding="utf-8") as f:
            committed = json.load(f)
        if args.check_only:
            failures = check_outputs(committed, name)
            print(f"{'ok  ' if not failures else 'FAIL'} {name} (committed outputs)", flush=True)
            all_failures += failures
            continue

        print(f"executing {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            nb, cell_times = execute(path, args.timeout, args.verbose)
        except Exception as e:  # kernel died, timed out, could not start
            all_failures.append(Failure(name, None, f"execution failed: {type(e).__name__}: {_shorten(str(e), 600)}"))
            print(f"FAIL {name} after {time.monotonic() - t0:.1f} s", flush=True)
            continue
        wall = time.monotonic() - t0

        import nbformat

        executed_path = out_dir / path.name
        nbformat.write(nb, executed_path)
        fresh = json.loads(executed_path.read_text(encoding="utf-8"))
        try:
            export_html(nb, executed_path.with_suffix(".html"))
        except Exception as e:
            all_failures.append(Failure(name, None, f"HTML export failed: {e}"))

        failures = check_outputs(fresh, name)
        drift = compare_checks(committed, fresh, name, args.rtol, args.atol)
        if args.update:
            for d in drift:
                print(f"  note (outputs updated): {d}")
            if not failures:
                nbformat.write(nb, path)
                print(f"  wrote outputs back to {name}")
            else:
                print(f"  not writing {name} back: it has failures")
        else:
            failures += drift
        all_failures += failures
        slowest = max(cell_times, key=lambda x: x[1]) if cell_times else (0, 0.0)
        print(
            f"{'ok  ' if not failures else 'FAIL'} {name}: {wall:.1f} s "
            f"(slowest: cell {slowest[0]}, {slowest[1]:.1f} s) -> {os.path.relpath(executed_path, REPO)}",
            flush=True,
        )

    print(f"{len(paths)} notebook(s) in {time.monotonic() - total:.1f} s")
    if all_failures:
        print(f"\n{len(all_failures)} notebook check failure(s):", file=sys.stderr)
        for f in all_failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
