#!/usr/bin/env python
"""The GPU check (run by bench/gpu_check.sh): what this project must do on a CUDA machine.

Sections, each timed and recorded as ``ok``, ``failed`` (with the error) or ``skipped`` (with
the reason), so one failure does not hide the others:

* ``train``: FACE-net with the demo's model settings (config/demo.yaml: d 128, 16 queries, the
  2-layer Transformer decoder) trained ``--steps`` Adam steps on CUDA and on the CPU from the same
  initial weights on the same batches (synthetic inputs of the demo's shapes, captions from a
  fixed word list); the two loss curves are compared (largest difference of their 20-step
  moving averages, relative to the CPU's), then the CUDA model captions a batch (beam 5).
* ``faiss``: a faiss GPU flat inner-product index returns the CPU index's neighbours (random
  unit vectors, 512-d, K 4); skipped when the installed faiss has no GPU support.
* ``llm_bf16``: tiny FLAN-T5 / OPT models (built and saved locally, loaded with from_pretrained)
  with LoRA train 10 steps under bf16 autocast on CUDA and decode by words.
* ``xl``: the FLAN-T5 XL shape (bench/xl_shape.py: random weights, bf16) inside FACE-net at the
  paper's sizes; caption time and peak memory (``max_memory_allocated``) at batch 1, 8 and 32,
  beam 5, 15 words, against Table 6's 4252.6 ms / 21,064 MB per caption.
* ``nccl``: one NCCL process group (world size 1): an all-reduce and a barrier.

On a machine without CUDA every section is skipped and the JSON says so (``cuda: false``).

    python bench/gpu_check.py --out results/bench/gpu_check.json [--budget-s 450]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import string
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

TABLE6 = {"ms_per_caption": 4252.6, "memory_mb": 21064}
# the accelerator the checks use; tests point it at the CPU to run the sections' logic there
GPU = torch.device("cuda")


def _sync() -> None:
    if GPU.type == "cuda":
        torch.cuda.synchronize(GPU)
WORDS = ("a man woman dog child is are playing singing crying running eating in the on with a park "
         "song rain ball food happily sadly angrily calmly joyful sad angry").split()


def _section(report: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]], deadline: float) -> None:
    t0 = time.perf_counter()
    if time.perf_counter() > deadline:
        report["sections"][name] = {"status": "skipped", "reason": "time budget spent"}
        return
    try:
        out = fn()
        report["sections"][name] = {"status": out.pop("status", "ok"), **out}
    except Exception as e:  # noqa: BLE001 - recorded, the other sections still run
        report["sections"][name] = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                                    "traceback": traceback.format_exc()[-2000:]}
    report["sections"][name]["s"] = time.perf_counter() - t0
    print(f"{name}: {report['sections'][name]['status']} ({report['sections'][name]['s']:.1f} s)", flush=True)


# --------------------------------------------------------------------------- train


def _demo_model(device: torch.device, seed: int = 0):
    from facenet_evc.analysis.efficiency import random_model
    from facenet_evc.config import read_yaml
    from facenet_evc.models.config import FaceNetConfig

    model_cfg = read_yaml(ROOT / "config" / "demo.yaml")["model"]
    cfg = FaceNetConfig.from_dict({**model_cfg, "d_v": 64, "d_t": 64, "d_e": 50, "n_frames": 16})
    model = random_model(cfg, vocab_size=len(WORDS) + 4 + 60, n_lexicon_words=60, n_categories=10, seed=seed)
    return cfg, model.to(device)


def _batches(cfg, model, n_steps: int, batch: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    from facenet_evc.analysis.efficiency import synthetic_artifacts

    arts = synthetic_artifacts(cfg, n_videos=96, seed=seed)
    rng = np.random.default_rng(seed)
    vocab_words = WORDS + ["emotion0", "emotion1", "emotion2"]
    captions = {v: " ".join(rng.choice(vocab_words, size=int(rng.integers(6, 13)))) for v in arts.video_ids}
    out = []
    for step in range(n_steps):
        ids = [arts.video_ids[(step * batch + i) % len(arts.video_ids)] for i in range(batch)]
        b = arts.video_inputs(ids)
        caps = [captions[v] for v in ids]
        targets, weights = model.decoder.encode_targets(caps, {"emotion0", "emotion1", "emotion2"}, cfg.delta)
        emo = torch.zeros(batch, 10)
        emo[:, 0] = torch.tensor([float("emotion0" in c) for c in caps])
        b.update(targets=targets, target_weights=weights, emotion_targets=emo)
        out.append(b)
    return out


def _train_curve(device: torch.device, batches, steps: int) -> tuple[list[float], Any]:
    cfg, model = _demo_model(device)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=7e-4)
    model.train()
    losses = []
    for b in batches[:steps]:
        b = {k: v.to(device) for k, v in b.items()}
        out = model(b, b["targets"])
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses, model


def check_train(steps: int) -> dict[str, Any]:
    cpu, cuda = torch.device("cpu"), GPU
    cfg, model = _demo_model(cpu)
    batches = _batches(cfg, model, steps)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    gpu_losses, gpu_model = _train_curve(cuda, batches, steps)
    _sync()
    gpu_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu_losses, _ = _train_curve(cpu, batches, steps)
    cpu_s = time.perf_counter() - t0

    def smooth(x: list[float]) -> np.ndarray:
        w = min(20, len(x))
        return np.convolve(np.asarray(x), np.ones(w) / w, mode="valid")

    gs, cs = smooth(gpu_losses), smooth(cpu_losses)
    rel = float(np.max(np.abs(gs - cs) / np.abs(cs)))
    gpu_model.eval()
    inputs = {k: v.to(cuda) for k, v in batches[0].items() if k in ("frames", "triplets", "sims")}
    ids = gpu_model.generate(inputs, num_beams=5, max_len=15)
    captions = [gpu_model.decoder.decode_tokens(s) for s in ids[:4]]
    return {"steps": steps, "cuda_s": gpu_s, "cpu_s": cpu_s, "cuda_steps_per_s": steps / gpu_s,
            "cpu_steps_per_s": steps / cpu_s, "loss_first": [gpu_losses[0], cpu_losses[0]],
            "loss_last20": [float(gs[-1]), float(cs[-1])], "max_rel_diff_smoothed": rel,
            "curves_agree": bool(rel < 0.05), "loss_decreased": bool(gs[-1] < gs[0]),
            "status": "ok" if rel < 0.05 and gs[-1] < gs[0] else "failed", "sample_captions": captions}


# --------------------------------------------------------------------------- faiss


def check_faiss() -> dict[str, Any]:
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return {"status": "skipped", "reason": f"faiss {faiss.__version__} has no GPU support (install faiss-gpu)"}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 512)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:200] + 0.05 * rng.standard_normal((200, 512)).astype(np.float32)
    cpu = faiss.IndexFlatIP(512)
    cpu.add(x)
    _, i_cpu = cpu.search(q, 4)
    gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
    _, i_gpu = gpu.search(q, 4)
    same = float((i_cpu == i_gpu).mean())
    return {"status": "ok" if same == 1.0 else "failed", "queries": 200, "k": 4, "same_neighbours": same}


# --------------------------------------------------------------------------- tiny LLMs in bf16


def _tiny_t5(folder: Path) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -3.0) for w in dict.fromkeys(WORDS)]
    pieces += [(c, -5.0) for c in string.ascii_lowercase]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                   num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    tok.save_pretrained(folder)
    T5ForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


def _tiny_opt(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([" ".join(WORDS)] * 5, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    cfg = OPTConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
                    max_position_embeddings=128, word_embed_proj_dim=32, pad_token_id=1, bos_token_id=2,
                    eos_token_id=2)
    tok.save_pretrained(folder)
    OPTForCausalLM(cfg).save_pretrained(folder)
    return folder


def check_llm_bf16() -> dict[str, Any]:
    from facenet_evc.models.decoders import create_decoder

    cuda = GPU
    out: dict[str, Any] = {}
    caps = ["a man is happily singing a song", "a woman is sadly crying in the rain"]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, build in (("t5", _tiny_t5), ("opt", _tiny_opt)):
            torch.manual_seed(0)
            folder = build(Path(tmp) / kind)
            dec = create_decoder(kind, 0, {"pretrained": str(folder), "dtype": "bfloat16"}, None).to(cuda)
            targets, weights = dec.encode_targets(caps, {"happily", "sadly"}, 0.1)
            targets, weights = targets.to(cuda), weights.to(cuda)
            memory = torch.randn(2, 4, dec.d_model, device=cuda)
            opt = torch.optim.Adam(dec.trainable_parameters(), lr=1e-2)
            losses = []
            for _ in range(10):
                with torch.autocast(cuda.type, dtype=torch.bfloat16):
                    loss = dec(memory, targets, weights)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            with torch.autocast(cuda.type, dtype=torch.bfloat16):
                ids = dec.generate(memory, num_beams=5, max_len=15)
            texts = [dec.decode_tokens(s) for s in ids]
            ok = all(np.isfinite(losses)) and losses[-1] < losses[0] and all(len(t.split()) <= 15 for t in texts)
            out[kind] = {"losses": [losses[0], losses[-1]], "captions": texts, "ok": bool(ok)}
    out["status"] = "ok" if all(v["ok"] for v in out.values()) else "failed"
    return out


# --------------------------------------------------------------------------- XL shape


def check_xl(batch_sizes: list[int], repeats: int) -> dict[str, Any]:
    import xl_shape

    from facenet_evc.analysis.efficiency import PeakMemory, synthetic_artifacts

    cuda = GPU
    out: dict[str, Any] = {"table6": TABLE6, "batches": {}}
    with tempfile.TemporaryDirectory(prefix="flan-t5-xl-shape-") as tmp:
        out["llm"] = xl_shape.build_llm_folder(Path(tmp), xl_shape.FLAN_T5_XL, torch.bfloat16)
        cfg = xl_shape.model_config(Path(tmp), "bfloat16", tiny=False)
        model = xl_shape.build_facenet(cfg).to(cuda).eval()
        out["trainable_params"] = sum(p.numel() for p in model.trainable_parameters())
        arts = synthetic_artifacts(cfg, n_videos=max(batch_sizes))
        for bs in batch_sizes:
            inputs = {k: v.to(cuda) for k, v in arts.video_inputs(arts.video_ids[:bs]).items()}
            with torch.autocast(cuda.type, dtype=torch.bfloat16):
                model.generate(inputs, num_beams=5, max_len=15)  # warm-up
                _sync()
                times = []
                with PeakMemory(cuda) as mem:
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        ids = model.generate(inputs, num_beams=5, max_len=15)
                        _sync()
                        times.append(time.perf_counter() - t0)
            med = float(np.median(times))
            out["batches"][str(bs)] = {"s_per_batch": med, "ms_per_caption": 1000 * med / bs,
                                       "peak_mb": mem.peak_mb, "pieces": [len(s) for s in ids[:4]]}
            print(f"  xl batch {bs}: {1000 * med / bs:.1f} ms per caption, peak {mem.peak_mb:.0f} MB", flush=True)
    return out


# --------------------------------------------------------------------------- NCCL


def check_nccl() -> dict[str, Any]:
    import torch.distributed as dist

    if not dist.is_nccl_available():
        return {"status": "skipped", "reason": "torch built without NCCL"}
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29513")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        x = torch.arange(4, dtype=torch.float32, device="cuda")
        dist.all_reduce(x)
        dist.barrier()
        ok = x.tolist() == [0.0, 1.0, 2.0, 3.0]
        return {"status": "ok" if ok else "failed", "all_reduce": x.tolist(), "nccl_version": str(torch.cuda.nccl.version())}
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the JSON of results")
    p.add_argument("--budget-s", type=float, default=450.0, help="sections starting after this are skipped")
    p.add_argument("--steps", type=int, default=300, help="training steps on CUDA and on the CPU")
    p.add_argument("--xl-batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--xl-repeats", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=[], choices=["train", "faiss", "llm_bf16", "xl", "nccl"])
    args = p.parse_args(argv)
    deadline = time.perf_counter() + args.budget_s
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "cuda": cuda, "device": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "python": platform.python_version(), "host": platform.node(),
        "sections": {}}
    checks = {"train": lambda: check_train(args.steps), "faiss": check_faiss, "llm_bf16": check_llm_bf16,
              "xl": lambda: check_xl(args.xl_batches, args.xl_repeats), "nccl": check_nccl}
    for name, fn in checks.items():
        if not cuda:
            report["sections"][name] = {"status": "skipped", "reason": "no CUDA device (torch.cuda.is_available() is False)"}
            print(f"{name}: skipped (no CUDA device)", flush=True)
        elif name in args.skip:
            report["sections"][name] = {"status": "skipped", "reason": "--skip"}
        else:
            _section(report, name, fn, deadline)
    if not cuda:
        report["note"] = "no CUDA device: every GPU section was skipped; run bench/gpu_check.sh on a CUDA machine"
        print(report["note"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    failed = [n for n, s in report["sections"].items() if s["status"] == "failed"]
    print(f"wrote {args.out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
