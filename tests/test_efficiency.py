"""Efficiency report (paper Table 6): parameter and FLOP counts against hand counts, the
batch-size sweep, and the `efficiency` command on a checkpoint and on random weights."""
from __future__ import annotations

import csv
import json
import string
from pathlib import Path

import pytest
import torch
from torch import nn

from facenet_evc.analysis.efficiency import (
    MODULES,
    caption_flops,
    count_flops,
    count_parameters,
    facenet_parameters,
    latency_sweep,
    random_model,
    synthetic_artifacts,
)
from facenet_evc.cli import main
from facenet_evc.io import atomic_h5, write_strings
from facenet_evc.models.config import FaceNetConfig

TINY = dict(d=8, d_v=6, d_t=6, d_e=3, n_frames=2, k=2, n_heads=2, ffn_mult=2, n_queries=4, dropout=0.0,
            decoder="lstm", decoder_settings={"hidden_size": 8, "embed_size": 4, "attn_size": 4})


# one torch thread for the whole module (conftest.py: one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def _mha_params(d: int) -> int:
    return 3 * d * d + 3 * d + d * d + d  # packed in-projection + out-projection, with biases


# ---------------------------------------------------------------- parameters


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)  # 12 + 4
        self.b = nn.Linear(4, 2, bias=False)  # 8, frozen below
        self.b.weight.requires_grad_(False)
        self.extra = nn.Parameter(torch.zeros(5))  # outside every group
        self.register_buffer("table", torch.zeros(2, 3))


def test_parameter_counts_equal_hand_counts() -> None:
    toy = _Toy()
    got = count_parameters(toy, {"a": toy.a, "b": toy.b, "off": None})
    assert (got["total"], got["trainable"], got["buffers"]) == (29, 21, 6)
    assert got["modules"]["a"] == {"total": 16, "trainable": 16, "built": True}
    assert got["modules"]["b"] == {"total": 8, "trainable": 0, "built": True}
    assert got["modules"]["off"] == {"total": 0, "trainable": 0, "built": False}
    assert got["modules"]["other"] == {"total": 5, "trainable": 5, "built": True}
    # an explicit optimiser set wins over requires_grad
    assert count_parameters(toy, trainable=[toy.extra])["trainable"] == 5


def test_facenet_modules_add_up_and_qformer_matches_its_formula() -> None:
    cfg = FaceNetConfig(**TINY)
    model = random_model(cfg, vocab_size=30, n_lexicon_words=6, n_categories=3)
    got = facenet_parameters(model)
    d, d_out = cfg.d, model.decoder.d_model
    # eq. 28-29: queries, self- and cross-attention, phi_M
    assert got["modules"]["qformer"]["total"] == cfg.n_queries * d + 2 * _mha_params(d) + d * d_out + d_out
    # other = v_proj (d_v -> d) + the frame positions (N x d) + the emotion classifier (d -> C)
    assert got["modules"]["other"]["total"] == cfg.d_v * d + d + cfg.n_frames * d + d * 3 + 3
    assert sum(m["total"] for m in got["modules"].values()) == got["total"]
    assert got["trainable"] == got["total"] == sum(p.numel() for p in model.parameters())
    # E_0, the word -> category table and the decoder's mask of never-generated words
    assert got["buffers"] == 6 * cfg.d_e + 6 * 3 + len(model.decoder.vocab)
    ablated = facenet_parameters(random_model(FaceNetConfig(**{**TINY, "use_pvea": False}), 30, 6, 3))
    assert ablated["modules"]["pvea"] == {"total": 0, "trainable": 0, "built": False}


# ---------------------------------------------------------------- FLOPs


class _MatMuls(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16, bias=False)
        self.b = nn.Linear(16, 4)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (3, 8)
        h = self.b(self.a(x))  # (3, 4)
        g = torch.bmm(h.unsqueeze(0), h.t().unsqueeze(0))  # (1, 3, 3): 2*3*3*4 FLOPs
        return g

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))  # not forward: the children are called directly


def test_flop_counter_gives_the_analytic_flops() -> None:
    model = _MatMuls().eval()
    x = torch.randn(3, 8)
    got, out = count_flops(model, lambda m: m(x))
    assert out.shape == (1, 3, 3)
    assert got["modules"] == {"a": 2 * 3 * 8 * 16, "b": 2 * 3 * 16 * 4}
    assert got["total"] == 2 * 3 * 8 * 16 + 2 * 3 * 16 * 4 + 2 * 3 * 3 * 4
    got, _ = count_flops(model, lambda m: m.decode(x))
    assert got["total"] == 2 * 3 * 8 * 16 + 2 * 3 * 16 * 4


def test_flop_counter_sees_fused_self_attention() -> None:
    # eval + no_grad self-attention takes PyTorch's fused fast path, which the counter cannot see
    model = _MatMuls().eval()
    q = torch.randn(1, 4, 8)
    fast = torch.backends.mha.get_fastpath_enabled()
    got, _ = count_flops(model, lambda m: m.mha(q, q, q, need_weights=False))
    # in-projection 2*4*8*24, out-projection 2*4*8*8, scores and values 2 * (2*heads*4*4*4)
    assert got["total"] == 2 * 4 * 8 * 24 + 2 * 4 * 8 * 8 + 2 * (2 * 2 * 4 * 4 * 4)
    assert got["modules"] == {"mha": got["total"]}
    assert torch.backends.mha.get_fastpath_enabled() == fast  # restored


def test_caption_flops_split_by_module() -> None:
    cfg = FaceNetConfig(**TINY)
    model = random_model(cfg, vocab_size=30, n_lexicon_words=6, n_categories=3)
    art = synthetic_artifacts(cfg, 3)
    got = caption_flops(model, art, art.video_ids[0], num_beams=2, max_len=4)
    assert set(got["modules"]) == {*MODULES, "other"}
    assert sum(got["modules"].values()) == got["per_caption"] == got["encoder"] + got["decoder"]
    assert all(got["modules"][m] > 0 for m in MODULES)
    # phi_M alone: N_q rows of d -> d_model
    assert got["modules"]["qformer"] >= 2 * cfg.n_queries * cfg.d * model.decoder.d_model
    assert got["macs_per_caption"] == got["per_caption"] // 2
    assert all(p.requires_grad for p in model.parameters())  # frozen only during the count


# ---------------------------------------------------------------- latency


def test_latency_sweep_entries_are_sorted_and_consistent() -> None:
    cfg = FaceNetConfig(**TINY)
    model = random_model(cfg, vocab_size=30, n_lexicon_words=6, n_categories=3)
    art = synthetic_artifacts(cfg, 3)
    sweep = latency_sweep(model, art, art.video_ids, batch_sizes=[4, 1, 2, 2], num_beams=2, max_len=3,
                          repeats=2, warmup=1)
    assert [e["batch_size"] for e in sweep] == [1, 2, 4]
    for e in sweep:
        assert e["batch_ms"] > 0 and len(e["batch_ms_repeats"]) == 2
        assert e["ms_per_caption"] == pytest.approx(e["batch_ms"] / e["batch_size"])
        assert e["captions_per_s"] == pytest.approx(1000 * e["batch_size"] / e["batch_ms"])
        assert e["peak_memory_mb"] > 0 and 0 <= e["memory_delta_mb"] <= e["peak_memory_mb"]
    assert [e["distinct_videos"] for e in sweep] == [1, 2, 3]  # 4 > 3 videos: the batch repeats one
    with pytest.raises(ValueError, match="batch sizes"):
        latency_sweep(model, art, art.video_ids, batch_sizes=[0])


# ---------------------------------------------------------------- CLI


def _write_artifacts(art, root: Path) -> list[str]:
    """The synthetic inputs in the stages' HDF5 layouts, plus a test caption CSV."""
    from facenet_evc.stages.retrieval import write_topk_h5
    from facenet_evc.stages.triplets import Triplet, write_triplets_h5

    with atomic_h5(root / "features.h5", {"dim": art.d_v}) as f:
        write_strings(f, "video_ids", art.video_ids)
        f.create_dataset("frames", data=art.frames)
        f.create_dataset("mean", data=art.frames.mean(1))
    write_topk_h5(root / "topk.h5", art.topk_video_ids, art.topk_indices, art.topk_scores, art.repo_captions,
                  art.repo_video_ids)
    write_triplets_h5(root / "triplets.h5", art.repo_captions, [Triplet("s", "p", "o")] * len(art.repo_captions),
                      art.triplet_embeddings)
    with open(root / "test.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["VideoID", "EmCaptions"])
        w.writerows((v, "a man is happily singing") for v in art.video_ids)
    return ["--features", str(root / "features.h5"), "--topk", str(root / "topk.h5"), "--triplets",
            str(root / "triplets.h5"), "--captions", str(root / "test.csv")]


def _check_report(out: Path) -> dict:
    report = json.loads(out.read_text())
    assert {"model", "setup", "parameters", "flops", "latency", "memory", "paper_table6"} <= set(report)
    assert report["setup"]["threads"] == 1
    assert [e["batch_size"] for e in report["latency"]["sweep"]] == [1, 2]
    assert report["latency"]["batch_size_1_ms"] == report["latency"]["sweep"][0]["ms_per_caption"]
    md = out.with_suffix(".md").read_text()
    assert "paper's number" in md and "4252.6" in md and "21064" in md  # the paper's FACE-net row, labelled
    assert "1 thread" in md and "## Per module" in md and "## Batch-size sweep" in md
    return report


def test_cli_on_a_checkpoint(tmp_path: Path) -> None:
    from facenet_evc.training.checkpoint import TrainState, save_checkpoint

    cfg = FaceNetConfig(**TINY)
    model = random_model(cfg, vocab_size=30, n_lexicon_words=6, n_categories=3)
    save_checkpoint(tmp_path / "best", model, None, None, TrainState(step=7), cfg.to_dict(),
                    vocab=model.decoder.vocab.to_dict(), lexicon_words=[f"emotion{i}" for i in range(6)])
    data = _write_artifacts(synthetic_artifacts(cfg, 3), tmp_path)
    out = tmp_path / "res" / "efficiency.json"
    assert main(["efficiency", "--checkpoint", str(tmp_path / "best"), *data, "--batch-sizes", "2", "1",
                 "--repeats", "1", "--num-beams", "2", "--max-len", "3", "--device", "cpu", "--out", str(out)]) == 0
    report = _check_report(out)
    assert report["model"]["kind"] == "checkpoint" and report["model"]["step"] == 7
    assert report["parameters"]["trainable"] == sum(p.numel() for p in model.parameters())


def test_cli_random_weights_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "efficiency.json"
    args = ["efficiency", "--random-weights", "--model-config", json.dumps(TINY), "--vocab-size", "40",
            "--lexicon-words", "6", "--lexicon-categories", "3", "--batch-sizes", "1", "2", "--repeats", "1",
            "--num-beams", "2", "--max-len", "3", "--out", str(out)]
    assert main(args) == 0
    report = _check_report(out)
    assert report["model"]["kind"] == "random_weights" and report["model"]["inputs"].startswith("synthetic")
    assert report["model"]["config"]["decoder"] == "lstm"
    capsys.readouterr()
    assert main(["efficiency", "--out", str(out)]) == 2
    assert "either --checkpoint" in capsys.readouterr().err
    assert main(["efficiency", "--checkpoint", str(tmp_path), "--features", "f.h5", "--out", str(out)]) == 2
    assert "missing: --topk, --triplets, --captions" in capsys.readouterr().err
    assert main(["efficiency", "--random-weights", "--model-config", "no_such_dataset", "--out", str(out)]) == 2
    assert "no_such_dataset" in capsys.readouterr().err


def test_random_t5_decoder_from_config_only(tmp_path: Path) -> None:
    """The FLAN-T5 code path without weights: a tiny T5 folder holding config and tokenizer only."""
    from transformers import T5Config, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -5.0) for c in string.ascii_lowercase]
    T5Tokenizer(vocab=pieces, extra_ids=0).save_pretrained(tmp_path)
    T5Config(vocab_size=len(pieces), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=4,
             decoder_start_token_id=0, pad_token_id=0, eos_token_id=1).save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.bin"))
    cfg = FaceNetConfig(**{**TINY, "decoder": "t5", "decoder_settings": {"pretrained": str(tmp_path), "lora_r": 2}})
    model = random_model(cfg, n_lexicon_words=6, n_categories=3)
    params = facenet_parameters(model)
    # LoRA r=2 on every linear ("all-linear"): q k v o of 3 attention blocks (encoder self, decoder
    # self, decoder cross), 2 * (16 + 16) each, and wi (16 -> 32), wo (32 -> 16) of 2 feed-forward blocks
    assert params["modules"]["decoder"]["trainable"] == 3 * 4 * 2 * (16 + 16) + 2 * 2 * 2 * (16 + 32)
    assert params["modules"]["decoder"]["total"] > params["modules"]["decoder"]["trainable"]
    got = caption_flops(model, synthetic_artifacts(cfg, 2), "synthetic0", num_beams=2, max_len=3)
    assert got["modules"]["decoder"] > 0 and got["per_caption"] == sum(got["modules"].values())
