"""Export a PyTorch network's features in neural-collapse feature schema v1 (Parquet).

Usage from a training script (numpy and pyarrow needed; torch only to produce `h`):

    from export_pytorch_features import features_table, capture, write_features
    tables = []
    for epoch in checkpoints:                     # after loading each checkpoint
        for split, loader in [("train", train_loader), ("test", test_loader)]:
            h, y, pred = capture(model, model.fc2, loader)   # features of one layer
            tables.append(features_table(epoch, split, h, y, pred=pred))
    write_features(tables, "data/runs/my-run/features-fc2.parquet")

`features_table` is the recipe documented in the crate (`neural_collapse::features`); the Rust
tests load a file it wrote (tests/fixtures/pyarrow-v1.parquet).
"""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def features_table(epoch, split, h, label, pred=None, sample=None):
    h = np.ascontiguousarray(h, dtype=np.float32)
    n, d = h.shape
    cols = {"epoch": pa.array(np.full(n, epoch), pa.uint32()),
            "split": pa.array([split] * n, pa.string()),
            "sample": pa.array(np.arange(n) if sample is None else sample, pa.uint32()),
            "label": pa.array(label, pa.uint32())}
    if pred is not None:
        cols["pred"] = pa.array(pred, pa.uint32())
    cols["x"] = pa.FixedSizeListArray.from_arrays(pa.array(h.ravel()), type=pa.list_(pa.float32(), d))
    return pa.table(cols)


def write_features(tables, path):
    """Concatenate per-checkpoint tables and write one Parquet file (one per layer)."""
    pq.write_table(pa.concat_tables(tables), path)


def capture(model, layer, loader, device="cpu"):
    """Run `model` over `loader` (yielding (input, label)) and return (h, labels, predictions),
    where h is the (flattened) output of the submodule `layer`, as numpy arrays."""
    import torch

    feats, labels, preds = [], [], []
    hook = layer.register_forward_hook(lambda _m, _i, out: feats.append(out.detach().flatten(1).cpu()))
    model.eval()
    try:
        with torch.no_grad():
            for inputs, y in loader:
                logits = model(inputs.to(device))
                preds.append(logits.argmax(1).cpu())
                labels.append(y.cpu())
    finally:
        hook.remove()
    return (torch.cat(feats).numpy(), torch.cat(labels).numpy(), torch.cat(preds).numpy())
