"""Export a network's features as neural-collapse feature files (Parquet schema v1).

The Rust crate `neural-collapse` reads what this package writes (`FeatureScan::open`,
`Run::open`, `neural-collapse metrics FILE`). One file per layer, `features-<layer>.parquet`:

    column  type                              meaning
    epoch   uint32                            checkpoint (0 = initialisation)
    split   string                            "train" or "test"
    sample  uint32                            index into the split of the dataset
    label   uint32                            label used for NC
    coarse  uint32, optional                  label the network was trained on, when it differs
    pred    uint32, optional                  the network's prediction (argmax of its output)
    x       fixed_size_list<float32>[d]       the feature vector

and beside it `classifier.parquet`: epoch uint32, class uint32, bias float64,
w fixed_size_list<float64>[d] (one row per class and checkpoint).

Routes:

* `export(model, layers, loaders, out_dir, checkpoints=..., classifier=...)`: forward hooks on the
  named modules, every (checkpoint, split) streamed batch by batch into the layer's file, one
  Parquet row group per batch, so a split is never held in memory. Convolutional outputs
  `(N, C, H, W)` are global-average pooled to `(N, C)` (`(N, C, L)` to `(N, C)`); see `pool`.
* `FeatureWriter`: write batches yourself (`writer.write(epoch, split, h, label, pred=...)`).
* `write_classifier(path, [(epoch, W, b), ...])`.

The model only needs the PyTorch hook API: `named_modules()`, `register_forward_hook(fn)` returning
a handle with `remove()`, and `model(inputs)` returning logits; `eval()` and tensors' `.detach()`
are used when present. torch is imported only when it is installed (for `torch.no_grad()`).
"""
import contextlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["pool", "features_table", "FeatureWriter", "write_classifier", "export", "to_numpy",
           "WRITE_OPTIONS"]

# How feature files are written: the layout `neural-collapse metrics` streams fastest. `x` is
# uncompressed and without a dictionary, so its PLAIN pages are read straight from the page cache
# (pyarrow's defaults, snappy and a dictionary page first, go through a decoding route 4-6x
# slower: 1.66 s against 0.48-0.57 s for a 2 GB file in `scripts/bench-scale`); float32 features
# barely compress anyway (snappy saves ~0 %). Only `split` keeps its dictionary.
WRITE_OPTIONS = {"compression": "none", "use_dictionary": ["split"]}


def to_numpy(t):
    """A tensor (torch or anything with `.detach()`/`.cpu()`/`.numpy()`) or array as numpy."""
    if hasattr(t, "detach"):
        t = t.detach()
    if hasattr(t, "cpu"):
        t = t.cpu()
    if hasattr(t, "numpy"):
        t = t.numpy()
    return np.asarray(t)


def pool(h):
    """Features of one batch as an (N, D) array: 2-D as is; (N, C, H, W) and (N, C, L) averaged over
    their spatial axes (global-average pooling, as ResNet's head does); anything else flattened."""
    h = to_numpy(h)
    if h.ndim == 2:
        return h
    if h.ndim in (3, 4):
        return h.reshape(h.shape[0], h.shape[1], -1).mean(axis=2)
    return h.reshape(h.shape[0], -1)


def _u32(name, v, n):
    v = np.asarray(v)
    if v.shape != (n,):
        raise ValueError(f"`{name}` has shape {v.shape}, expected ({n},)")
    if v.size and (v.min() < 0 or v.max() > np.iinfo(np.uint32).max):
        raise ValueError(f"`{name}` has values outside 0..2^32-1")
    return pa.array(v.astype(np.uint32), pa.uint32())


def features_table(epoch, split, h, label, pred=None, sample=None, coarse=None):
    """One batch as a schema v1 table (columns in the order above)."""
    h = np.ascontiguousarray(pool(h), dtype=np.float32)
    n, d = h.shape
    if not np.isfinite(h).all():
        raise ValueError(f"features of epoch {epoch}, split {split} hold NaN or infinite values")
    cols = {
        "epoch": pa.array(np.full(n, epoch, dtype=np.uint32), pa.uint32()),
        "split": pa.array([split] * n, pa.string()),
        "sample": _u32("sample", np.arange(n) if sample is None else sample, n),
        "label": _u32("label", label, n),
    }
    if coarse is not None:
        cols["coarse"] = _u32("coarse", coarse, n)
    if pred is not None:
        cols["pred"] = _u32("pred", pred, n)
    cols["x"] = pa.FixedSizeListArray.from_arrays(pa.array(h.ravel(), pa.float32()), d)
    return pa.table(cols)


class FeatureWriter:
    """Writes one layer's file batch by batch (one row group per `write`), so that no split is ever
    held in memory. The columns (`coarse`, `pred`) and the width d are fixed by the first batch.

        with FeatureWriter("run/features-fc2.parquet") as w:
            for x, y in loader:
                w.write(epoch, "train", h, y, pred=p)
    """

    def __init__(self, path):
        self.path = str(path)
        self._writer = None
        self.rows = 0
        self._next_sample = {}

    def write(self, epoch, split, h, label, pred=None, sample=None, coarse=None):
        """Appends one batch as a row group. Without `sample`, samples are numbered in the order
        written, per (epoch, split)."""
        n = len(label)
        if sample is None:
            start = self._next_sample.get((epoch, split), 0)
            sample = np.arange(start, start + n)
            self._next_sample[(epoch, split)] = start + n
        self._write(epoch, split, h, label, pred=pred, sample=sample, coarse=coarse)

    def _write(self, epoch, split, h, label, pred=None, sample=None, coarse=None):
        table = features_table(epoch, split, h, label, pred=pred, sample=sample, coarse=coarse)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, **WRITE_OPTIONS)
        elif table.schema != self._writer.schema:
            raise ValueError(
                f"{self.path}: batch schema {table.schema} differs from the file's {self._writer.schema}"
            )
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_classifier(path, classifiers):
    """Writes `classifier.parquet` from `[(epoch, W, b), ...]` (W: C x d, b: C)."""
    tables = []
    for epoch, w, b in classifiers:
        w = np.asarray(to_numpy(w), dtype=np.float64)
        b = np.asarray(to_numpy(b), dtype=np.float64)
        c, d = w.shape
        if b.shape != (c,):
            raise ValueError(f"classifier at epoch {epoch}: W is {w.shape} but b is {b.shape}")
        tables.append(pa.table({
            "epoch": pa.array(np.full(c, epoch, dtype=np.uint32), pa.uint32()),
            "class": pa.array(np.arange(c, dtype=np.uint32), pa.uint32()),
            "bias": pa.array(b, pa.float64()),
            "w": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(w).ravel(), pa.float64()), d),
        }))
    pq.write_table(pa.concat_tables(tables), str(path))


def _no_grad():
    try:
        import torch  # noqa: F401  (optional)
    except ImportError:
        return contextlib.nullcontext()
    return torch.no_grad()


def export(model, layers, loaders, out_dir, checkpoints=None, classifier=None, coarse=None):
    """Runs `model` over every split of `loaders` at every checkpoint and writes
    `out_dir/features-<layer>.parquet` for each named layer (and `out_dir/classifier.parquet`).

    model: a torch.nn.Module (or anything with the same hook API).
    layers: names of submodules, as in `model.named_modules()` (e.g. ["layer4", "fc1"]).
    loaders: {"train": loader, "test": loader}; a loader yields (inputs, labels) or
        (inputs, labels, sample_indices) batches (without indices, samples are numbered in order).
    checkpoints: iterable of (epoch, load) where `load()` puts the model in that state (e.g.
        `lambda: model.load_state_dict(torch.load(f"ckpt-{e}.pt"))`); default: the model as it is,
        as epoch 0.
    classifier: name of the final linear module (weight C x d, bias C), written per checkpoint.
    coarse: optional function mapping the loader's labels (the ones the network was trained on)
        to fine labels; when given, `label` holds the fine labels and `coarse` the trained-on ones.

    Returns {layer: rows written}.
    """
    import os

    os.makedirs(out_dir, exist_ok=True)
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise KeyError(f"no module named {missing}; modules: {sorted(k for k in modules if k)}")
    if checkpoints is None:
        checkpoints = [(0, lambda: None)]
    writers = {name: FeatureWriter(os.path.join(out_dir, f"features-{name}.parquet")) for name in layers}
    captured = {}
    handles = []
    for name in layers:
        def hook(_module, _inputs, output, name=name):
            captured[name] = pool(output)
        handles.append(modules[name].register_forward_hook(hook))
    heads = []
    try:
        for epoch, load in checkpoints:
            load()
            if hasattr(model, "eval"):
                model.eval()
            for split, loader in loaders.items():
                for batch in loader:
                    inputs, labels = batch[0], to_numpy(batch[1])
                    sample = to_numpy(batch[2]) if len(batch) > 2 else None
                    captured.clear()
                    with _no_grad():
                        logits = to_numpy(model(inputs))
                    pred = logits.argmax(axis=1)
                    fine = None if coarse is None else np.asarray(coarse(labels))
                    for name in layers:
                        if name not in captured:
                            raise RuntimeError(f"module `{name}` was not called in the forward pass")
                        label, trained = (labels, None) if fine is None else (fine, labels)
                        writers[name].write(epoch, split, captured[name], label, pred=pred,
                                            sample=sample, coarse=trained)
            if classifier is not None:
                # Copied now: torch's load_state_dict writes the next checkpoint into these
                # same tensors (and .numpy() shares their memory).
                head = modules[classifier]
                heads.append((epoch, np.array(to_numpy(head.weight), dtype=np.float64),
                              np.array(to_numpy(head.bias), dtype=np.float64)))
    finally:
        for h in handles:
            h.remove()
        for w in writers.values():
            w.close()
    if heads:
        write_classifier(os.path.join(out_dir, "classifier.parquet"), heads)
    return {name: w.rows for name, w in writers.items()}
