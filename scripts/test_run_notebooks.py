#!/usr/bin/env python3
"""Unit tests of the notebook checks in scripts/run-notebooks.py, on small hand-made notebooks.

    python3 scripts/test_run_notebooks.py        (standard library only; no kernel, no Jupyter)
"""

import copy
import importlib.util
import sys
import unittest
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "run_notebooks", Path(__file__).resolve().parent / "run-notebooks.py"
)
rn = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rn  # dataclasses look their module up there
_spec.loader.exec_module(rn)

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="5" height="5"/></svg>'


def code(source, outputs, count=1):
    return {
        "cell_type": "code",
        "execution_count": count,
        "metadata": {},
        "source": source,
        "outputs": outputs,
    }


def stdout(text):
    # nbformat may store text as a list of lines: exercise that form.
    return {"output_type": "stream", "name": "stdout", "text": text.splitlines(keepends=True)}


def stderr(text):
    return {"output_type": "stream", "name": "stderr", "text": text}


def svg_output():
    return {"output_type": "display_data", "metadata": {}, "data": {"image/svg+xml": SVG}}


def notebook(*cells):
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "rust"}},
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# title"}, *cells],
    }


def good():
    return notebook(
        code(":dep neural-collapse = { path = \"..\", default-features = false }", [], 1),
        code(
            "println!(...)",
            [stdout("nc1 of fc3 at epoch 100: 0.5\nCHECK train collapses: NC1 = 1.234568e-3 < 1e-2 at epoch 100: PASS\n")],
            2,
        ),
        code("figure", [svg_output()], 3),
    )


def reasons(failures):
    return [f.reason for f in failures]


class CheckOutputs(unittest.TestCase):
    def test_good_notebook_passes(self):
        self.assertEqual(rn.check_outputs(good(), "good.ipynb"), [])
        self.assertEqual(rn.compare_checks(good(), good(), "good.ipynb"), [])

    def test_error_output(self):
        nb = good()
        nb["cells"][2]["outputs"].append(
            {"output_type": "error", "ename": "Error", "evalue": "cannot find value `x` in this scope", "traceback": []}
        )
        failures = rn.check_outputs(nb, "e.ipynb")
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0].cell, 3)
        self.assertIn("error output", failures[0].reason)
        self.assertIn("cannot find value", str(failures[0]))
        self.assertTrue(str(failures[0]).startswith("e.ipynb: cell 3: "))

    def test_panic_in_stderr(self):
        nb = good()
        nb["cells"][2]["outputs"].insert(
            0, stderr("thread '<unnamed>' panicked at src/lib.rs:10:5:\nindex out of bounds\n")
        )
        failures = rn.check_outputs(nb, "p.ipynb")
        self.assertEqual([(f.cell, "panicked" in f.reason) for f in failures], [(3, True)])

    def test_compile_error_in_stderr(self):
        for text in ("error[E0425]: cannot find value `y`", "error: could not compile `ctx`"):
            nb = good()
            nb["cells"][3]["outputs"].append(stderr(text))
            failures = rn.check_outputs(nb, "c.ipynb")
            self.assertEqual(len(failures), 1, text)
            self.assertEqual(failures[0].cell, 4)

    def test_question_mark_error_in_stderr(self):
        # What evcxr 0.22 printed for `let z = "x".parse::<i32>()?;`: no error output at all.
        nb = good()
        nb["cells"][2]["outputs"].append(stderr("invalid digit found in string\n"))
        failures = rn.check_outputs(nb, "q.ipynb")
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0].cell, 3)
        self.assertIn("invalid digit", failures[0].reason)

    def test_expected_error_cell(self):
        # A cell that shows bad input: its one-line error is required, a panic still fails.
        nb = good()
        nb["cells"][2]["metadata"] = {"expect_output": "class 3 has no samples"}
        self.assertEqual(len(rn.check_outputs(nb, "x.ipynb")), 1)  # not printed
        nb["cells"][2]["outputs"].append(stderr("features.parquet: class 3 has no samples\n"))
        self.assertEqual(rn.check_outputs(nb, "x.ipynb"), [])
        nb["cells"][2]["outputs"][-1] = stdout("error: features.parquet: class 3 has no samples\n")
        self.assertEqual(rn.check_outputs(nb, "x.ipynb"), [])
        nb["cells"][2]["outputs"].append(stderr("thread 'main' panicked at src/x.rs:1:1\n"))
        failures = rn.check_outputs(nb, "x.ipynb")
        self.assertEqual([(f.cell, "panicked" in f.reason) for f in failures], [(3, True)])

    def test_harmless_stderr_is_fine(self):
        nb = good()
        nb["cells"][1]["outputs"].append(stderr("warning: unused variable: `z`\n"))
        self.assertEqual(rn.check_outputs(nb, "w.ipynb"), [])

    def test_check_fail(self):
        nb = good()
        nb["cells"][2]["outputs"] = [stdout("CHECK test collapses less: gap = 0.1 > 0.5: FAIL\n")]
        failures = rn.check_outputs(nb, "f.ipynb")
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0].cell, 3)
        self.assertIn("did not pass", failures[0].reason)

    def test_explained_fail_is_accepted(self):
        nb = good()
        nb["cells"][2]["outputs"] = [stdout("CHECK test collapses less: gap = 0.1 > 0.5: FAIL\n")]
        nb["cells"].append({"cell_type": "markdown", "metadata": {},
                            "source": "Why it fails, with numbers.\n\nFAIL explained: test collapses less\n"})
        self.assertEqual(rn.check_outputs(nb, "e.ipynb"), [])

    def test_fail_explained_for_another_check_still_fails(self):
        nb = good()
        nb["cells"][2]["outputs"] = [stdout("CHECK test collapses less: gap = 0.1 > 0.5: FAIL\n")]
        nb["cells"].append({"cell_type": "markdown", "metadata": {},
                            "source": ["FAIL explained: something else\n"]})
        failures = rn.check_outputs(nb, "o.ipynb")
        self.assertEqual(len(failures), 1)
        self.assertIn("did not pass", failures[0].reason)

    def test_check_without_verdict(self):
        nb = good()
        nb["cells"][2]["outputs"] = [stdout("CHECK something: 0.3\n")]
        self.assertIn("did not pass", rn.check_outputs(nb, "v.ipynb")[0].reason)

    def test_no_check_line(self):
        nb = good()
        nb["cells"][2]["outputs"] = [stdout("no verdict here\n")]
        failures = rn.check_outputs(nb, "n.ipynb")
        self.assertEqual(len(failures), 1)
        self.assertIsNone(failures[0].cell)
        self.assertIn("CHECK", failures[0].reason)

    def test_no_svg(self):
        nb = good()
        nb["cells"][3]["outputs"] = [
            {"output_type": "display_data", "metadata": {}, "data": {"text/html": "<table></table>"}}
        ]
        failures = rn.check_outputs(nb, "s.ipynb")
        self.assertEqual(len(failures), 1)
        self.assertIn("no figure", failures[0].reason)

    def test_svg_inside_html_counts(self):
        nb = good()
        nb["cells"][3]["outputs"] = [
            {"output_type": "display_data", "metadata": {}, "data": {"text/html": ["<div>", SVG, "</div>"]}}
        ]
        self.assertEqual(rn.check_outputs(nb, "h.ipynb"), [])

    def test_unexecuted_cell(self):
        nb = good()
        nb["cells"][3]["execution_count"] = None
        failures = rn.check_outputs(nb, "u.ipynb")
        self.assertIn("not executed", failures[0].reason)
        self.assertEqual(failures[0].cell, 4)


class CompareChecks(unittest.TestCase):
    def with_line(self, line):
        nb = good()
        nb["cells"][2]["outputs"] = [stdout(line + "\n")]
        return nb

    def test_mismatching_number(self):
        fresh = self.with_line("CHECK train collapses: NC1 = 1.240000e-3 < 1e-2 at epoch 100: PASS")
        failures = rn.compare_checks(good(), fresh, "m.ipynb")
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0].cell, 3)
        self.assertIn("changed", failures[0].reason)
        self.assertIn("0.001234568", failures[0].reason)

    def test_other_formatting_of_the_same_number_agrees(self):
        fresh = self.with_line("CHECK train collapses: NC1 = 0.0012345680 < 0.01 at epoch 100.0: PASS")
        self.assertEqual(rn.compare_checks(good(), fresh, "m.ipynb"), [])

    def test_within_tolerance(self):
        fresh = self.with_line("CHECK train collapses: NC1 = 1.2345680001e-3 < 1e-2 at epoch 100: PASS")
        self.assertEqual(rn.compare_checks(good(), fresh, "t.ipynb"), [])
        self.assertEqual(len(rn.compare_checks(good(), fresh, "t.ipynb", rtol=1e-12, atol=0)), 1)

    def test_changed_words(self):
        fresh = self.with_line("CHECK test collapses: NC1 = 1.234568e-3 < 1e-2 at epoch 100: PASS")
        failures = rn.compare_checks(good(), fresh, "w.ipynb")
        self.assertEqual(len(failures), 1)
        self.assertIn("differs", failures[0].reason)

    def test_missing_check_line(self):
        fresh = good()
        fresh["cells"][2]["outputs"] = []
        failures = rn.compare_checks(good(), fresh, "x.ipynb")
        self.assertIn("1 CHECK lines committed but 0", failures[0].reason)

    def test_committed_without_outputs(self):
        committed = good()
        for cell in committed["cells"]:
            cell["outputs"] = []
        failures = rn.compare_checks(committed, good(), "y.ipynb")
        self.assertIn("--update", failures[0].reason)

    def test_numbers_inside_identifiers_are_not_numbers(self):
        template, numbers = rn.split_numbers("CHECK nc1 of fc3 (layer 2) = -3.5e-2, +4 and .5: PASS")
        self.assertEqual(numbers, [2.0, -0.035, 4.0, 0.5])
        self.assertEqual(template, "CHECK nc1 of fc3 (layer #) = #, # and #: PASS")

    def test_nan_and_inf(self):
        self.assertEqual(rn.split_numbers("CHECK a = NaN, b = inf: FAIL")[0], "CHECK a = #, b = #: FAIL")
        self.assertTrue(rn.numbers_agree(float("nan"), float("nan"), 1e-6, 0))
        self.assertFalse(rn.numbers_agree(float("nan"), 1.0, 1e-6, 0))
        self.assertFalse(rn.numbers_agree(float("inf"), 1e308, 1e-6, 0))

    def test_inputs_are_not_modified(self):
        nb = good()
        before = copy.deepcopy(nb)
        rn.check_outputs(nb, "g.ipynb")
        rn.compare_checks(nb, nb, "g.ipynb")
        self.assertEqual(nb, before)


if __name__ == "__main__":
    unittest.main()
