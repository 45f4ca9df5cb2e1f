"""Which stages of two runs of the same dataset differ, and by how much.

    python bench/compare_runs.py results/demo results_avx2/demo

Walks the stage outputs a run caches (data, CLIP, features, retrieval, triplets, lexicon,
training, predictions, metrics) and prints, for each, "identical" or the size of the
difference: the largest absolute difference of every float array (HDF5 datasets and checkpoint
tensors), the share of differing entries of integer and string arrays (retrieval indices,
triplet texts), how many files differ by content (videos, captions, JSON), the first training
step whose logged losses differ, and the metrics of both runs (x100). Written for
``bench/cpu_isa_repro.sh`` (the same demo under another CPU's kernels) but takes any two runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors.torch import load_file

from facenet_evc import layout

METRICS = ("Acc_sw", "Acc_c", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "BFS", "CFS")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _array_diff(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    if np.issubdtype(a.dtype, np.floating):
        d = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        return "identical" if d == 0 else f"max |diff| {d:.3g} (values up to {float(np.max(np.abs(a))):.3g})"
    differ = int(np.sum(a != b))
    return "identical" if differ == 0 else f"{differ} of {a.size} entries differ ({100 * differ / a.size:.1f}%)"


def compare_h5(a: Path, b: Path) -> list[str]:
    out = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names: list[str] = []
        fa.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for n in names:
            if n not in fb:
                out.append(f"  {n}: missing in the second run")
                continue
            out.append(f"  {n} {fa[n].shape}: {_array_diff(fa[n][()], fb[n][()])}")
    return out


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, obj: object) -> None:
        if isinstance(obj, torch.Tensor):
            flat[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    walk("", state)
    return flat


def compare_tensors(a: Path, b: Path) -> str:
    ta, tb = _tensors(a), _tensors(b)
    worst, where, same = 0.0, "", 0
    for k, x in ta.items():
        y = tb.get(k)
        if y is None or y.shape != x.shape:
            return f"tensor {k} missing or reshaped in the second run"
        if not x.is_floating_point():
            same += int(torch.equal(x, y))
            continue
        d = float((x.double() - y.double()).abs().max()) if x.numel() else 0.0
        same += d == 0
        if d > worst:
            worst, where = d, k
    if worst == 0 and same == len(ta):
        return f"{len(ta)} tensors identical"
    return f"{len(ta) - same} of {len(ta)} tensors differ; max |diff| {worst:.3g} ({where})"


def compare_files(a: Path, b: Path, pattern: str) -> str:
    fa = sorted(p.relative_to(a) for p in a.glob(pattern) if p.is_file())
    fb = {p.relative_to(b) for p in b.glob(pattern) if p.is_file()}
    if not fa:
        return "no files"
    missing = [p for p in fa if p not in fb]
    differ = [p for p in fa if p in fb and _digest(a / p) != _digest(b / p)]
    text = f"{len(differ)} of {len(fa)} files differ by content"
    return text + (f", {len(missing)} missing in the second run" if missing else "")


def retrieval_overlap(a: Path, b: Path) -> str:
    """Position-wise differences overstate a reordering: how often the same caption comes first,
    and how much of each video's K retrieved captions the two runs share."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ia, ib = fa["indices"][()], fb["indices"][()]  # (V, K)
    top1 = int(np.sum(ia[:, 0] == ib[:, 0]))
    shared = np.mean([len(set(x) & set(y)) / ia.shape[1] for x, y in zip(ia, ib)])
    return f"same top-1 caption for {top1} of {len(ia)} videos; {100 * shared:.1f}% of the top-{ia.shape[1]} shared"


def first_log_difference(a: Path, b: Path) -> str:
    def rows(p: Path) -> list[dict[str, str]]:
        with open(p / "train" / "log.csv", newline="") as f:
            return list(csv.DictReader(f))

    ra, rb = rows(a), rows(b)
    first = next((x["step"] for x, y in zip(ra, rb) if x != y), None)
    return f"{len(ra)} vs {len(rb)} logged rows; " + (
        "identical" if first is None and len(ra) == len(rb) else f"first differing row at step {first}"
    )


def _metric_line(name: str, a: float | None, b: float | None) -> str:
    # The official Acc_c is undefined (null in metrics.json) when no caption has an emotion word.
    def fmt(x: float | None) -> str:
        return "  n/a" if x is None else f"{100 * x:5.1f}"

    diff = "" if a is None or b is None else f"  diff {100 * (b - a):+5.1f}"
    return f"  {name:8s} {fmt(a)}  {fmt(b)}{diff}"


def main(a: Path, b: Path) -> None:
    print(f"{a} vs {b}")
    sections: list[tuple[str, list[str]]] = [
        ("data (videos, captions)", [
            f"  videos: {compare_files(a / 'data', b / 'data', 'videos/*')}",
            f"  captions, scenes: {compare_files(a / 'data', b / 'data', '*.json')}; "
            f"{compare_files(a / 'data', b / 'data', 'captions/*')}",
        ]),
        ("CLIP pretraining pool", [f"  {compare_files(a / 'clip' / 'pool', b / 'clip' / 'pool', '**/*')}"]),
    ]
    clip = [f"  {p.name}: {compare_tensors(p, b / 'clip' / p.name)}" for p in sorted((a / "clip").glob("*.pt"))]
    sections.append(("CLIP weights", clip))
    topk = next(iter(sorted((a / "retrieval").glob("topk_k*.h5")))).relative_to(a).as_posix()  # whatever K the run used
    for title, rel in (
        ("frame features", layout.FEATURES),
        ("caption repository", layout.REPOSITORY),
        ("retrieval top-K", topk),
        ("triplets", layout.TRIPLETS),
        ("emotion lexicon", layout.LEXICON_H5),
    ):
        lines = compare_h5(a / rel, b / rel)
        if rel == topk:
            lines.append(f"  {retrieval_overlap(a / rel, b / rel)}")
        sections.append((title, lines))
    train = [f"  log.csv: {first_log_difference(a, b)}"]
    for ck in ("best", "last"):
        st = a / "train" / ck / "model.safetensors"
        if st.exists():
            train.append(f"  {ck}/model.safetensors: {compare_tensors(st, b / 'train' / ck / 'model.safetensors')}")
    sections.append(("training", train))
    pa, pb = (json.loads((p / "predictions.json").read_text()) for p in (a, b))
    sections.append(("predictions", [f"  {sum(pa[v] != pb.get(v) for v in pa)} of {len(pa)} test captions differ"]))
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    sections.append(("metrics (x100)", [_metric_line(m, ma.get(m), mb.get(m)) for m in METRICS if m in ma]))
    for title, lines in sections:
        print(f"{title}:")
        print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python bench/compare_runs.py RUN_A RUN_B   (e.g. results/demo results_avx2/demo)")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
