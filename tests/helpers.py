"""Builders shared by the test modules: tiny synthetic artifacts in the stages' own layouts.

12 trainval + 4 test videos in three classes (N=4 frames, d=16), each class with its own
templated captions and emotion, K=2 retrieved captions from other videos of the same class;
the model and train configs that train on them in seconds; an untrained checkpoint and a
short video file.
"""
from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from facenet_evc.data.emvidcap import normalize_caption
from facenet_evc.data.lexicon import read_lexicon
from facenet_evc.io import atomic_h5, write_strings
from facenet_evc.models.config import FaceNetConfig
from facenet_evc.models.decoders import Vocab
from facenet_evc.stages.emotion_embed import write_lexicon_h5
from facenet_evc.stages.retrieval import write_topk_h5
from facenet_evc.stages.triplets import Triplet, read_triplets_h5, write_triplets_h5
from facenet_evc.training.checkpoint import TrainState, save_checkpoint
from facenet_evc.training.data import load_artifacts
from facenet_evc.training.factory import create_facenet

N_FRAMES, D_V, D_T, D_E, K = 4, 16, 16, 10, 2  # d_v = d_t: one CLIP space
LEXICON = {"joy": ["happily", "happy"], "sadness": ["sadly", "sad", "upset"], "anger": ["angrily", "angry", "upset"]}
TEMPLATES = [
    ["A man is happily playing a guitar.", "The man plays the guitar happily!", "a happy man is playing music"],
    ["A woman is sadly cooking food.", "the sad woman cooks food", "A woman is upset while cooking."],
    ["A dog is angrily barking.", "an angry dog barks loudly", "The dog is barking angrily"],
]
TRAINVAL = [f"tv{i:02d}" for i in range(12)]
TEST = [f"te{i:02d}" for i in range(4)]
S1, S2 = 13, 40

MODEL_CFG = dict(d=16, d_v=D_V, d_t=D_T, d_e=D_E, n_frames=N_FRAMES, k=K, n_heads=2, ffn_mult=2, dropout=0.1,
                 n_queries=4, decoder="lstm",
                 decoder_settings={"hidden_size": 32, "embed_size": 16, "attn_size": 16, "dropout": 0.1})
TRAIN_CFG = dict(lr=1e-2, batch_size=8, max_steps=S2, val_every=10, ckpt_every=10, val_fraction=0.25, seed=0,
                 threads=1, device="cpu", progress=False, val_beams=1)


def _cls(vid: str) -> int:
    return int(vid[2:]) % 3


def _write_csv(path: Path, videos: list[str]) -> list[tuple[str, str]]:
    rows = [(v, c) for v in videos for c in TEMPLATES[_cls(v)]]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["VideoID", "EmCaptions"])
        w.writerows(rows)
    return rows


def write_features(path: Path, videos: list[str], rng: np.random.Generator) -> None:
    protos = rng.standard_normal((3, N_FRAMES, D_V)).astype(np.float32)
    frames = np.stack([protos[_cls(v)] + 0.1 * rng.standard_normal((N_FRAMES, D_V)) for v in videos]).astype(np.float32)
    with atomic_h5(path, {"dim": D_V}) as f:  # the clip_features layout
        write_strings(f, "video_ids", videos)
        f.create_dataset("frames", data=frames)  # (n, N, d)
        f.create_dataset("mean", data=frames.mean(1))  # (n, d)


def write_topk(path: Path, queries: list[str], repo: list[tuple[str, str]]) -> None:
    indices = []
    for q in queries:
        others = [i for i, (v, _) in enumerate(repo) if v != q and _cls(v) == _cls(q)]
        indices.append([others[0], others[4]])  # two captions of other same-class videos
    scores = np.tile(np.array([[0.8, 0.7]], dtype=np.float32), (len(queries), 1))
    write_topk_h5(path, queries, np.array(indices), scores, [c for _, c in repo], [v for v, _ in repo])


def build_artifacts(root: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    lex_dir = root / "lexicon"
    lex_dir.mkdir()
    for cat, words in LEXICON.items():
        (lex_dir / f"{cat}.txt").write_text("\r\n".join(words), encoding="utf-8")
    repo = _write_csv(root / "trainval.csv", TRAINVAL)
    _write_csv(root / "test.csv", TEST)
    # rows of the features file in another order than the captions: lookups must go by id
    write_features(root / "features.h5", TEST + TRAINVAL[::-1], rng)
    write_topk(root / "topk.h5", TRAINVAL + TEST, repo)
    write_triplets_h5(root / "triplets.h5", [c for _, c in repo], [Triplet("s", "p", "o")] * len(repo),
                      rng.standard_normal((len(repo), 3, D_T)).astype(np.float32))
    lexicon = read_lexicon(lex_dir)
    write_lexicon_h5(root / "lexicon.h5", lexicon, rng.standard_normal((len(lexicon.words), D_E)), [], {})
    return {k: str(root / f) for k, f in [("features", "features.h5"), ("topk", "topk.h5"), ("triplets", "triplets.h5"),
                                          ("lexicon_h5", "lexicon.h5"), ("trainval", "trainval.csv"),
                                          ("test", "test.csv"), ("lexicon_dir", "lexicon")]}


def train_kwargs(a: dict[str, str], out: Path, **train_over) -> dict:
    return dict(model_cfg=MODEL_CFG, train_cfg={**TRAIN_CFG, **train_over}, features_h5=a["features"],
                topk_h5=a["topk"], triplets_h5=a["triplets"], lexicon_h5=a["lexicon_h5"], captions=[a["trainval"]],
                lexicon_dir=a["lexicon_dir"], out_dir=str(out))


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


STEP = 7  # the step an untrained checkpoint of make_checkpoint claims


def make_checkpoint(art: dict[str, str], out: Path, **model_over) -> Path:
    """An untrained FACE-net saved like the trainer saves one (weights, config, vocabulary, lexicon)."""
    cfg = FaceNetConfig.from_dict({**MODEL_CFG, **model_over})
    a = load_artifacts(art["features"], art["topk"], art["triplets"], art["lexicon_h5"])
    vocab = Vocab.build([normalize_caption(c) for caps in TEMPLATES for c in caps], a.lexicon_words)
    torch.manual_seed(0)
    model = create_facenet(cfg, vocab=vocab, lexicon_words=a.lexicon_words, lexicon_vectors=a.lexicon_vectors,
                           word_category=a.lexicon_member.astype(np.float32))
    save_checkpoint(out, model, None, None, TrainState(step=STEP), cfg.to_dict(), vocab=vocab.to_dict(),
                    lexicon_words=a.lexicon_words)
    return out


def write_video(path: Path, n: int = 6, size: int = 32) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            img[:, : (i + 1) * size // n] = (200, 60, 30)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def build_explain_artifacts(root: Path) -> dict[str, str]:
    """test_training's artifacts with real S/P/O texts, test references (refs.json) and one video file."""
    a = build_artifacts(root / "art")
    # real S/P/O texts (build_artifacts writes "s/p/o" for every caption), so the rows must line up
    caps, _, emb, _ = read_triplets_h5(a["triplets"])
    spo = [Triplet(f"subj{i}", f"pred{i}", f"obj{i}" if i % 2 else "") for i in range(len(caps))]
    write_triplets_h5(a["triplets"], caps, spo, emb)
    refs = {v: [normalize_caption(c) for c in TEMPLATES[int(v[2:]) % 3]] for v in TEST}
    (root / "refs.json").write_text(json.dumps(refs))
    (root / "videos").mkdir()
    write_video(root / "videos" / f"{TEST[0]}.mp4")  # only the first video has a file
    return {**a, "refs": str(root / "refs.json"), "videos": str(root / "videos"), "root": str(root)}
