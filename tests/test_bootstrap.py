"""Paired bootstrap (evaluation/bootstrap.py) and the compare / seeds-table commands."""
from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from facenet_evc.data.demo import EMOTION_WORDS, demo_lexicon_dir
from facenet_evc.data.lexicon import read_lexicon
from facenet_evc.evaluation import evaluate
from facenet_evc.evaluation.bootstrap import metrics_from_weights, paired_bootstrap, video_stats

SHAPES = ["circle", "square", "star", "cross"]
ACTS = ["moves left", "falls down", "spins", "grows"]
EMOS = sorted(EMOTION_WORDS)


def _data(n: int, seed: int, quality: float):
    """References plus a prediction whose shape/action/emotion are right with probability `quality`."""
    rng = random.Random(seed)
    refs, preds = {}, {}
    for i in range(n):
        s, a, e = rng.choice(SHAPES), rng.choice(ACTS), rng.choice(EMOS)
        adj = EMOTION_WORDS[e]["adj"]
        refs[f"v{i:03d}"] = [f"a {rng.choice(adj)} {s} {a}", f"the {s} {a} {EMOTION_WORDS[e]['adv'][0]}",
                             f"a {s} {a}"]
        ps = s if rng.random() < quality else rng.choice(SHAPES)
        pa = a if rng.random() < quality else rng.choice(ACTS)
        pe = e if rng.random() < quality else rng.choice(EMOS)
        preds[f"v{i:03d}"] = f"a {EMOTION_WORDS[pe]['adj'][0]} {ps} {pa}" if rng.random() < 0.9 else f"a {ps} {pa}"
    return preds, refs


@pytest.fixture(scope="module")
def lexicon():
    return read_lexicon(demo_lexicon_dir())


def test_full_sample_equals_the_official_scores(lexicon):
    preds, refs = _data(60, 0, 0.6)
    official = evaluate(preds, refs, lexicon, meteor=False)
    s = video_stats(preds, refs, lexicon)
    full = metrics_from_weights(s, np.ones((1, len(preds))))
    for m in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "Acc_sw", "Acc_c", "BFS", "CFS"):
        assert full[m][0] == pytest.approx(official[m], rel=1e-9, abs=1e-12), m


def test_resample_equals_scoring_the_resampled_set_except_cider(lexicon):
    """A resample with multiplicities w is the official score of the set with duplicated videos
    (CIDEr aside: its document frequencies are held at the full test set's, by design)."""
    preds, refs = _data(40, 1, 0.5)
    s = video_stats(preds, refs, lexicon)
    rng = np.random.default_rng(3)
    w = rng.multinomial(40, np.full(40, 1 / 40))
    dup_p, dup_r = {}, {}
    for i, v in enumerate(s.video_ids):
        for r in range(int(w[i])):
            dup_p[f"{v}_{r}"], dup_r[f"{v}_{r}"] = preds[v], refs[v]
    official = evaluate(dup_p, dup_r, lexicon, meteor=False)
    got = metrics_from_weights(s, w[None, :].astype(float))
    for m in ("Bleu_1", "Bleu_4", "ROUGE_L", "Acc_sw", "Acc_c"):
        assert got[m][0] == pytest.approx(official[m], rel=1e-9), m


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one(lexicon):
    good, refs = _data(200, 2, 0.9)
    bad, _ = _data(200, 2, 0.4)
    a, b = video_stats(bad, refs, lexicon), video_stats(good, refs, lexicon)
    t0 = time.perf_counter()
    res = paired_bootstrap(a, b, n_resamples=1000, seed=0)
    assert time.perf_counter() - t0 < 30  # generous; bench numbers are in the note, not here
    for m in ("CIDEr", "Acc_sw", "Bleu_4", "CFS"):
        row = res["metrics"][m]
        assert row["diff"] > 0 and row["low"] > 0 and row["p"] < 0.01, (m, row)
        assert row["low"] <= row["diff"] <= row["high"]
    same = paired_bootstrap(a, a, n_resamples=200, seed=0)
    assert all(r["diff"] == 0 and r["low"] == 0 == r["high"] for r in same["metrics"].values())


def test_mismatched_videos_are_an_error(lexicon):
    p1, refs = _data(10, 0, 0.5)
    p2 = dict(list(p1.items())[:9])
    with pytest.raises(ValueError, match="different videos"):
        paired_bootstrap(video_stats(p1, refs, lexicon), video_stats(p2, refs, lexicon))


def test_compare_and_seeds_table_cli(tmp_path, lexicon, capsys):
    from facenet_evc.cli import main

    refs_path = tmp_path / "refs.json"
    _, refs = _data(80, 4, 0.5)
    refs_path.write_text(json.dumps(refs))
    paths = {}
    for name, q in [("retrieval", 0.4), ("s0", 0.9), ("s1", 0.85)]:
        p, _ = _data(80, 4 if name == "retrieval" else 5, q)
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(p))
    metrics = {}
    for name in paths:
        metrics[name] = tmp_path / f"{name}_metrics.json"
        metrics[name].write_text(json.dumps(evaluate(json.loads(paths[name].read_text()), refs, lexicon, meteor=False)
                                            | {"METEOR": 0.2}))
    cmps = []
    for s in ("s0", "s1"):
        out = tmp_path / f"cmp_{s}.json"
        assert main(["compare", str(paths["retrieval"]), str(paths[s]), "--references", str(refs_path), "--lexicon",
                     str(demo_lexicon_dir()), "--names", "retrieval", "FACE-net", "--resamples", "300",
                     "--out", str(out), "--md", str(tmp_path / f"cmp_{s}.md")]) == 0
        cmps.append(f"seed{s[1]}={out}")
    md = (tmp_path / "cmp_s0.md").read_text()
    assert "FACE-net − retrieval" in md and "| CIDEr |" in md
    table = tmp_path / "table.md"
    assert main(["seeds-table", "--runs", f"FACE-net={metrics['s0']},{metrics['s1']}",
                 f"retrieval={metrics['retrieval']}", "--comparisons", *cmps, "--out", str(table),
                 "--csv", str(tmp_path / "table.csv")]) == 0
    text = table.read_text()
    assert "| FACE-net | 2 |" in text and "| retrieval | 1 |" in text and "interval above 0" in text
    csv_lines = (tmp_path / "table.csv").read_text().splitlines()
    assert csv_lines[0] == "system,metric,mean,sd,n" and len(csv_lines) == 1 + 2 * 11
    mt = tmp_path / "metrics.md"
    assert main(["metrics-table", "--metrics", f"FACE-net={metrics['s0']}", f"retrieval={metrics['retrieval']}",
                 "--comparison", str(tmp_path / "cmp_s0.json"), "--out", str(mt)]) == 0
    assert "FACE-net − retrieval on 80 test videos" in mt.read_text()
    # a bad --runs item names itself
    assert main(["seeds-table", "--runs", "FACE-net", "--out", str(table)]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err
