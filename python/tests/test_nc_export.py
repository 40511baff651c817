"""Tests of nc_export on numpy-backed stand-in models with PyTorch's hook API (torch optional).

The last test hands a written file to the crate's command line (target/debug/neural-collapse, or
$NC_CLI) and compares its NC1 with numpy's; it is skipped when the binary has not been built.
"""
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import nc_export

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Module:
    """The slice of torch.nn.Module that the exporter uses."""

    def __init__(self):
        self._hooks = {}
        self._children = {}

    def register_forward_hook(self, fn):
        key = object()
        self._hooks[key] = fn
        hooks = self._hooks

        class Handle:
            def remove(self):
                hooks.pop(key, None)

        return Handle()

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def __call__(self, x):
        out = self.forward(x)
        for fn in list(self._hooks.values()):
            fn(self, (x,), out)
        return out

    def eval(self):
        return self


class Linear(Module):
    def __init__(self, w, b):
        super().__init__()
        self.weight, self.bias = w, b

    def forward(self, x):
        return x @ self.weight.T + self.bias


class Conv(Module):
    """(N, C_in, H, W) -> (N, C_out, H, W): a 1x1 convolution, then ReLU."""

    def __init__(self, w):
        super().__init__()
        self.weight = w

    def forward(self, x):
        return np.maximum(np.einsum("oc,nchw->nohw", self.weight, x), 0.0)


class Net(Module):
    """conv (1x1, 3 -> 6 channels) -> global average pool -> fc1 (6 -> 8) -> head (8 -> 3)."""

    def __init__(self, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self._children = {
            "conv": Conv(rng.normal(size=(6, 3))),
            "fc1": Linear(rng.normal(size=(8, 6)), rng.normal(size=8)),
            "head": Linear(rng.normal(size=(3, 8)), rng.normal(size=3)),
        }

    def forward(self, x):
        c = self._children
        h = c["conv"](x).mean(axis=(2, 3))
        return c["head"](np.tanh(c["fc1"](h)))


def loader(n, seed, batch=16):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 3, 4, 4)) + y[:, None, None, None]
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def nc1_numpy(h, y, tol=1e-12):
    """Tr(Σ_W Σ_B†)/C with μ_G the mean of the class means (the crate's default convention)."""
    h = h.astype(np.float64)
    classes = np.unique(y)
    mu = np.stack([h[y == c].mean(axis=0) for c in classes])
    centred = h - mu[np.searchsorted(classes, y)]
    sw = centred.T @ centred / len(y)
    m = mu - mu.mean(axis=0)
    sb = m.T @ m / len(classes)
    vals, vecs = np.linalg.eigh(sb)
    keep = vals > tol * vals.max()
    pinv = (vecs[:, keep] / vals[keep]) @ vecs[:, keep].T
    return np.trace(sw @ pinv) / len(classes)


class PoolTest(unittest.TestCase):
    def test_pool(self):
        h = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
        np.testing.assert_array_equal(nc_export.pool(h), h.mean(axis=(2, 3)))
        np.testing.assert_array_equal(nc_export.pool(h[:, :, :, 0]), h[:, :, :, 0].mean(axis=2))
        self.assertEqual(nc_export.pool(np.zeros((4, 5))).shape, (4, 5))
        self.assertEqual(nc_export.pool(np.zeros((4, 2, 2, 2, 2))).shape, (4, 16))


class ExportTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.model = Net(0)
        self.loaders = {"train": loader(90, 1), "test": loader(45, 2)}
        other = Net(1)

        def load_other():
            for name, m in other.named_modules():
                if name:
                    self.model._children[name].__dict__.update(
                        {k: v for k, v in m.__dict__.items() if k in ("weight", "bias")})

        self.rows = nc_export.export(self.model, ["conv", "fc1"], self.loaders, self.dir,
                                     checkpoints=[(0, lambda: None), (5, load_other)],
                                     classifier="head")

    def test_schema_row_groups_and_values(self):
        self.assertEqual(self.rows, {"conv": 270, "fc1": 270})
        f = pq.ParquetFile(os.path.join(self.dir, "features-conv.parquet"))
        schema = f.schema_arrow
        self.assertEqual(schema.names, ["epoch", "split", "sample", "label", "pred", "x"])
        for name in ["epoch", "sample", "label", "pred"]:
            self.assertEqual(schema.field(name).type, pa.uint32())
        self.assertEqual(schema.field("split").type, pa.string())
        self.assertEqual(schema.field("x").type, pa.list_(pa.float32(), 6))
        # One row group per batch: 6 + 3 batches per checkpoint.
        self.assertEqual(f.num_row_groups, 18)
        # The layout the crate streams fastest: x uncompressed, without a dictionary page.
        for g in range(f.num_row_groups):
            x = f.metadata.row_group(g).column(5)
            self.assertEqual(x.path_in_schema.split(".")[0], "x")
            self.assertEqual(x.compression, "UNCOMPRESSED")
            self.assertFalse(x.has_dictionary_page)
            self.assertNotIn("PLAIN_DICTIONARY", x.encodings)
            self.assertNotIn("RLE_DICTIONARY", x.encodings)
        t = f.read().to_pydict()
        self.assertEqual(t["sample"][:90], list(range(90)))
        # Pooled conv features of the first train batch at epoch 0.
        x0, _ = self.loaders["train"][0]
        want = Net(0)._children["conv"](x0).mean(axis=(2, 3)).astype(np.float32)
        np.testing.assert_array_equal(np.array(t["x"][:16], dtype=np.float32), want)
        self.assertEqual(sorted(set(zip(t["epoch"], t["split"]))),
                         [(0, "test"), (0, "train"), (5, "test"), (5, "train")])

    def test_classifier_file(self):
        t = pq.read_table(os.path.join(self.dir, "classifier.parquet"))
        self.assertEqual(t.schema.names, ["epoch", "class", "bias", "w"])
        self.assertEqual(t.schema.field("w").type, pa.list_(pa.float64(), 8))
        self.assertEqual(t.column("epoch").to_pylist(), [0, 0, 0, 5, 5, 5])
        np.testing.assert_array_equal(np.array(t.column("w").to_pylist()[3:]),
                                      Net(1)._children["head"].weight)

    def test_classifier_of_each_checkpoint_with_in_place_loading(self):
        # torch's load_state_dict copies into the existing parameters: the classifier of each
        # checkpoint must be copied when it is read, not kept as a reference to the live weights.
        model, other, d = Net(0), Net(1), tempfile.mkdtemp()

        def load_in_place():
            for name, m in other.named_modules():
                if name:
                    for k in ("weight", "bias"):
                        if k in m.__dict__:
                            getattr(model._children[name], k)[...] = getattr(m, k)

        w0 = Net(0)._children["head"].weight
        nc_export.export(model, ["fc1"], self.loaders, d, classifier="head",
                         checkpoints=[(0, lambda: None), (5, load_in_place)])
        t = pq.read_table(os.path.join(d, "classifier.parquet"))
        w = np.array(t.column("w").to_pylist())
        np.testing.assert_array_equal(w[:3], w0)
        np.testing.assert_array_equal(w[3:], Net(1)._children["head"].weight)
        self.assertFalse(np.array_equal(w[:3], w[3:]))

    def test_hooks_removed_and_errors(self):
        self.assertFalse(any(m._hooks for _, m in self.model.named_modules()))
        with self.assertRaises(KeyError):
            nc_export.export(self.model, ["nope"], self.loaders, self.dir)
        with self.assertRaises(ValueError):
            nc_export.features_table(0, "train", np.full((2, 2), np.nan), [0, 1])
        with self.assertRaises(ValueError):
            nc_export.features_table(0, "train", np.zeros((2, 2)), [0, -1])

    def test_crate_reads_the_same_nc1(self):
        cli = os.environ.get("NC_CLI", os.path.join(REPO, "target", "debug", "neural-collapse"))
        if not os.path.exists(cli):
            self.skipTest(f"{cli} not built (cargo build)")
        path = os.path.join(self.dir, "features-fc1.parquet")
        out = subprocess.run([cli, "metrics", path, "--format", "json"], check=True,
                             capture_output=True, text=True).stdout
        reports = json.loads(out)
        self.assertEqual(len(reports), 4)
        t = pq.read_table(path).to_pydict()
        x = np.array(t["x"], dtype=np.float32)
        for r in reports:
            rows = [i for i in range(len(x)) if t["epoch"][i] == r["epoch"] and t["split"][i] == r["split"]]
            want = nc1_numpy(x[rows], np.array(t["label"])[rows])
            self.assertLess(abs(r["nc1"] - want), 1e-9 * max(1.0, abs(want)), (r, want))
            print(f"nc1 crate vs numpy, epoch {r['epoch']} {r['split']}: "
                  f"{r['nc1']!r} vs {float(want)!r}, |diff| = {abs(r['nc1'] - want):.1e}")
        # The classifier file is read too: NC2 of W, NC3 and NC4 per checkpoint.
        out = subprocess.run([cli, "metrics", path, "--format", "json", "--classifier",
                              os.path.join(self.dir, "classifier.parquet")],
                             check=True, capture_output=True, text=True).stdout
        self.assertTrue(all("nc3" in r and "nc2_equinorm_w" in r for r in json.loads(out)))


class TorchTest(unittest.TestCase):
    def test_torch_model(self):
        try:
            import torch
        except ImportError:
            self.skipTest("torch not installed")
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(4 * 2 * 2, 3))
        batches = [(torch.randn(8, 3, 4, 4), torch.arange(8) % 3) for _ in range(2)]
        d = tempfile.mkdtemp()
        rows = nc_export.export(model, ["1", "3"], {"train": batches}, d, classifier="3")
        self.assertEqual(rows, {"1": 16, "3": 16})
        self.assertEqual(pq.read_schema(os.path.join(d, "features-1.parquet")).field("x").type,
                         pa.list_(pa.float32(), 4))


if __name__ == "__main__":
    unittest.main()
