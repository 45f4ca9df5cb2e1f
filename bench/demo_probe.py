"""How much of each demo attribute the frame features carry: linear probes, trainval -> test.

    python bench/demo_probe.py results/demo

Reads ``data/scenes.json`` (ground-truth emotion, action, shape, colour of every video) and
``features/clip_frames.h5``; fits a multinomial logistic regression per attribute on the
trainval videos' features (mean, late-minus-early and std over the frames, standardised) and
prints its accuracy on the test videos. With ``--retrieval`` (default: the run's own
``baselines/retrieval/metrics.json``) it prints the retrieval baseline's Acc_sw beside the
emotion probe: a captioner that writes an emotion word as good as the probe's, in every
caption, is the ceiling a demo FACE-net can reach over copying a neighbour's caption.

With ``--model CHECKPOINT_DIR`` (e.g. ``results/demo/train/last``) it also probes what a trained
FACE-net keeps: its encoder's memory (the Q-Former output that the decoder reads, flattened)
next to the frame features. An attribute the frames carry but the memory does not is lost
before the decoder and cannot be put into words.

Last, for each caption file (default: the run's ``predictions.json`` and the retrieval
baseline's; ``--predictions`` to name others, e.g. ``seeds/seed1/predictions.json``) it prints
the share of test captions that name the video's action: the longest action phrase of the
generator (``data/demo.py``) found in the caption must be one of the true action's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from facenet_evc.stages.clip_features import read_features


def probe_features(frames: np.ndarray) -> np.ndarray:
    """(n, N, d) -> (n, 3d): mean, late-minus-early (last third minus first third), std over frames."""
    n_frames = frames.shape[1]
    third = max(1, n_frames // 3)
    late_early = frames[:, -third:].mean(1) - frames[:, :third].mean(1)
    return np.concatenate([frames.mean(1), late_early, frames.std(1)], axis=1)


def linear_probe(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, n_classes: int,
                 weight_decay: float = 1e-3, steps: int = 500, seed: int = 0) -> float:
    """Test accuracy of a full-batch L-BFGS multinomial logistic regression on standardised features."""
    torch.manual_seed(seed)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    xt = torch.tensor((x_tr - mu) / sd, dtype=torch.float64)
    xe = torch.tensor((x_te - mu) / sd, dtype=torch.float64)
    yt = torch.tensor(y_tr)
    lin = torch.nn.Linear(xt.shape[1], n_classes).double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(xe).argmax(1).numpy() == y_te).mean())


def encoder_memory(run: Path, checkpoint: Path, ids: list[str]) -> np.ndarray:
    """(n, N_q * d_model): FACE-net's memory for each video, in ``ids`` order (eval mode, no grad)."""
    from facenet_evc.layout import model_inputs
    from facenet_evc.training.data import iter_video_batches, load_artifacts
    from facenet_evc.training.factory import load_model

    model, _ = load_model(checkpoint)
    model.eval()
    inputs = model_inputs(str(run.parent), run.name, model.cfg.k)  # the run's own top-K file
    art = load_artifacts(inputs["features"], inputs["topk"], inputs["triplets"], inputs["lexicon_h5"])
    out = []
    with torch.no_grad():
        for chunk in iter_video_batches(ids, 64):
            memory = model.encode(art.video_inputs(chunk))["memory"]  # (B, N_q, d_model)
            out.append(memory.reshape(len(chunk), -1).double().numpy())
    return np.concatenate(out)


def named_action(caption: str) -> str | None:
    """The action whose generator phrase is the longest one found in ``caption`` (None: no phrase)."""
    from facenet_evc.data.demo import ACTION_PHRASES, ROLL_PHRASES

    phrases = [(p, a) for a, forms in ACTION_PHRASES.items() for pair in forms for p in pair]
    phrases += [(p, a) for a, pair in ROLL_PHRASES.items() for p in pair]
    padded = f" {caption} "
    hits = [(len(p), a) for p, a in phrases if f" {p} " in padded]
    return max(hits)[1] if hits else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a demo results folder, e.g. results/demo")
    ap.add_argument("--retrieval", help="retrieval baseline metrics.json (default: <run>/baselines/retrieval/metrics.json)")
    ap.add_argument("--model", help="a FACE-net checkpoint folder of this run (e.g. results/demo/train/last): "
                    "also probe its encoder memory")
    ap.add_argument("--predictions", nargs="+", help="caption files whose right-action share to print "
                    "(default: <run>/predictions.json and <run>/baselines/retrieval/predictions.json)")
    args = ap.parse_args(argv)
    root = Path(args.run)
    scenes = json.loads((root / "data" / "scenes.json").read_text())["videos"]
    feats = read_features(root / "features" / "clip_frames.h5")
    ids = feats["video_ids"]
    x = probe_features(feats["frames"].astype(np.float64))
    split = np.array([scenes[v]["split"] for v in ids])
    tr, te = split == "train", split == "test"
    print(f"{root}: {tr.sum()} trainval / {te.sum()} test videos, probe features {x.shape[1]}-d")
    memory = encoder_memory(root, Path(args.model), list(ids)) if args.model else None
    results = {}
    for attr in ("emotion", "action", "shape", "colour"):
        labels = sorted({scenes[v][attr] for v in ids})
        y = np.array([labels.index(scenes[v][attr]) for v in ids])
        acc = linear_probe(x[tr], y[tr], x[te], y[te], len(labels))
        chance = np.bincount(y[te]).max() / te.sum()
        results[attr] = acc
        line = f"  {attr:8s} {len(labels):2d} classes: test accuracy {100 * acc:5.1f}%  (majority {100 * chance:.1f}%)"
        if memory is not None:
            line += f"; FACE-net memory {100 * linear_probe(memory[tr], y[tr], memory[te], y[te], len(labels)):5.1f}%"
        print(line)
    ret = Path(args.retrieval) if args.retrieval else root / "baselines" / "retrieval" / "metrics.json"
    if ret.is_file():
        acc_sw = json.loads(ret.read_text())["Acc_sw"]
        print(f"  retrieval baseline Acc_sw {100 * acc_sw:.1f} vs emotion probe {100 * results['emotion']:.1f}")
    files = args.predictions or [root / "predictions.json", root / "baselines" / "retrieval" / "predictions.json"]
    for f in map(Path, files):
        if f.is_file():
            preds = json.loads(f.read_text())
            right = sum(named_action(c) == scenes[v]["action"] for v, c in preds.items())
            print(f"  {f}: the caption names the video's action for {100 * right / len(preds):.1f}% of {len(preds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
