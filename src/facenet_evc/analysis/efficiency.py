"""Efficiency and complexity of FACE-net, the measurements of the paper's Table 6.

Table 6 lists, per method, the trainable parameters, FLOPs, "the average inference time for
a single caption" and "the amount of memory during the inference stage" (FACE-net with
FLAN-T5 XL: 63.9M, 3.98G, 4252.6 ms, 21064 MB on an NVIDIA 3090). The paper does not say
how it counted; what is measured here:

* **Parameters**: ``trainable`` is what the optimiser gets (:meth:`FaceNet.trainable_parameters`:
  every FACE-net parameter plus the decoder's trainable ones, the LoRA adapter only for a
  frozen LLM); ``total`` adds the frozen ones. Per module: FCUE, PVEA, DBAR, Q-Former,
  decoder, and ``other`` (the frame projection ``v_proj``, the frame positions, the motion token's ``motion_proj`` and the emotion classifier). The
  buffers E_0 and the word -> category table are not parameters (counted apart).
* **FLOPs per caption**: :class:`torch.utils.flop_counter.FlopCounterMode` over one call of
  :func:`~facenet_evc.training.decoding.generate_captions` on one video: the encoder
  (FCUE -> PVEA -> DBAR -> Q-Former) plus the whole beam search (5 beams, at most 15 tokens,
  until every beam has closed). It counts matrix products only (mm, addmm, bmm, convolution,
  scaled-dot-product attention), 2 FLOPs per multiply-add; element-wise ops, softmax,
  normalisation and embedding look-ups are not counted. Counting runs with PyTorch's
  ``MultiheadAttention`` fast path off and the math attention kernel, because the fused
  kernels are invisible to the counter (the Q-Former's self-attention counts 0 FLOPs
  otherwise). ``macs`` (= FLOPs / 2) is the unit tools such as thop print as "FLOPs".
* **Latency**: wall time of ``generate_captions`` on a batch of B test videos (features,
  top-K and triplets already cached, so CLIP and FAISS are not included), after warm-up,
  median of repeats; per caption = batch time / B; captions/s = B / batch time. B = 1 is the
  paper's "single caption"; a sweep over B finds the best throughput.
* **Peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` during a batch (weights
  included, the allocator's cache and the CUDA context not); on the CPU the process' peak
  resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before each batch size)
  and its increase over the resident set before the batch; where that reset is impossible,
  ``ru_maxrss`` (a lifetime peak: its increase is then a lower bound).

``random_weights`` measures a configuration's shape without a trained checkpoint: FACE-net
randomly initialised, a synthetic vocabulary and lexicon of the requested sizes, synthetic
cached inputs, and an LLM decoder built from its ``config.json`` with random weights
(``create_decoder(random_init=True)``; its tokenizer must be in the same folder). A random
decoder rarely emits EOS, so its beams usually run the full 15 steps: the FLOPs and latency
are then those of full-length captions.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from facenet_evc.progress import progress_bar

from facenet_evc.io import write_json_and_markdown
from facenet_evc.models.config import WORD_DECODERS, FaceNetConfig
from facenet_evc.models.decoders import Vocab
from facenet_evc.models.facenet import FaceNet
from facenet_evc.training.data import Artifacts, add_artifact_args
from facenet_evc.training.decoding import generate_captions
from facenet_evc.training.factory import create_facenet

log = logging.getLogger(__name__)

MODULES = ("fcue", "pvea", "dbar", "qformer", "decoder")
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
GROWTH_TOLERANCE = 0.05  # a throughput step down by less than this counts as flat (timing noise)
# The official EmVidCap lexicon (34 categories, 179 words) and, roughly, the EVC-Combine
# training vocabulary (9,775 normalised words): the default shape of a random-weight model.
DEFAULT_LEXICON_WORDS = 179
DEFAULT_CATEGORIES = 34
DEFAULT_VOCAB_SIZE = 10000

# Table 6 as printed (CFS x100, trainable parameters, FLOPs, time per caption, memory).
PAPER_TABLE6 = [
    {"method": "EPAN", "CFS": 48.0, "params_M": 21.1, "GFLOPs": 0.72, "ms": 198.6, "MB": 5602},
    {"method": "DCGN", "CFS": 51.7, "params_M": 21.9, "GFLOPs": 1.24, "ms": 247.8, "MB": 6201},
    {"method": "VideoBLIP", "CFS": 63.6, "params_M": 53.7, "GFLOPs": 3.31, "ms": 3610.0, "MB": 15852},
    {"method": "MM-ECPE", "CFS": 69.3, "params_M": 60.6, "GFLOPs": 3.72, "ms": 4076.8, "MB": 18742},
    {"method": "FACE-net (FLAN-T5 XL)", "CFS": 70.5, "params_M": 63.9, "GFLOPs": 3.98, "ms": 4252.6, "MB": 21064},
]
PAPER_HARDWARE = "one NVIDIA 3090 GPU (paper Sec. 4.4)"

FLOPS_COUNTED = ("matrix products only (aten mm, addmm, bmm, convolution, scaled-dot-product attention), "
                 "2 FLOPs per multiply-add; element-wise ops, softmax, norms and embedding look-ups not counted; "
                 "one caption = the encoder on one video + the full beam search")


# --------------------------------------------------------------------------- parameters


def _numel(params: Sequence[nn.Parameter]) -> int:
    return int(sum(p.numel() for p in params))


def count_parameters(
    model: nn.Module,
    groups: Mapping[str, nn.Module | None] | None = None,
    trainable: Sequence[nn.Parameter] | None = None,
) -> dict[str, Any]:
    """Parameter counts of ``model``: ``total``, ``trainable``, ``buffers`` and, with
    ``groups``, ``modules[name] = {total, trainable, built}`` plus ``other`` (the rest).

    ``trainable`` is the set the optimiser gets (default: parameters with
    ``requires_grad``). A parameter shared by two groups counts for the first one only, so
    the modules always add up to ``total``.
    """
    params = list(model.parameters())  # already de-duplicated
    train_ids = {id(p) for p in (trainable if trainable is not None else [p for p in params if p.requires_grad])}
    out: dict[str, Any] = {
        "total": _numel(params),
        "trainable": _numel([p for p in params if id(p) in train_ids]),
        "buffers": int(sum(b.numel() for b in model.buffers())),
    }
    if groups is not None:
        seen: set[int] = set()
        modules: dict[str, dict[str, Any]] = {}
        for name, sub in groups.items():
            if sub is None:  # switched off by an ablation
                modules[name] = {"total": 0, "trainable": 0, "built": False}
                continue
            mine = [p for p in sub.parameters() if id(p) not in seen]
            seen.update(id(p) for p in mine)
            modules[name] = {"total": _numel(mine), "trainable": _numel([p for p in mine if id(p) in train_ids]),
                             "built": True}
        rest = [p for p in params if id(p) not in seen]
        modules["other"] = {"total": _numel(rest), "trainable": _numel([p for p in rest if id(p) in train_ids]),
                            "built": bool(rest)}
        out["modules"] = modules
    return out


def facenet_parameters(model: FaceNet) -> dict[str, Any]:
    """:func:`count_parameters` of FACE-net by module; ``other`` is ``v_proj`` + ``frame_pos`` + the emotion classifier."""
    return count_parameters(model, {n: getattr(model, n, None) for n in MODULES}, model.trainable_parameters())


# --------------------------------------------------------------------------- FLOPs


class _Root(nn.Module):
    """Makes ``fn(model)`` a forward call, so the counter names every submodule by its path
    (``generate`` is not ``forward``: without this, modules would be named by class)."""

    def __init__(self, model: nn.Module, fn: Callable[[nn.Module], Any]) -> None:
        super().__init__()
        self.model = model
        self._fn = fn

    def forward(self) -> Any:
        return self._fn(self.model)


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """``requires_grad`` off for the count: the counter's module tracker hooks autograd, and a
    view of a trainable parameter made under ``no_grad`` (the Q-Former queries) breaks it."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def _countable_attention() -> Iterator[None]:
    """Attention through ops the counter knows: no MultiheadAttention fast path (a fused
    kernel counted as 0 FLOPs) and the math scaled-dot-product kernel (the CPU flash kernel
    has no FLOP formula)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def count_flops(model: nn.Module, fn: Callable[[nn.Module], Any]) -> tuple[dict[str, Any], Any]:
    """FLOPs of ``fn(model)`` and its result: ``{"total", "modules": {child: flops}, "by_op": {op: flops}}``.

    ``modules`` holds the direct children of ``model`` by attribute name, each with every
    FLOP spent inside it or its submodules; FLOPs outside any child are
    ``total - sum(modules)``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    root = _Root(model, fn)
    counter = FlopCounterMode(display=False)
    with _frozen(model), _countable_attention(), torch.no_grad(), counter:
        result = root()
    counts = counter.get_flop_counts()
    glob = counts.get("Global", {})
    prefix = f"{type(root).__name__}.model."
    # A module's count includes its submodules' when its forward ran. A method that is not
    # forward (decoder.generate) calls submodules directly: they are then outermost, and
    # their counts are summed into the child they belong to.
    inner = {name[len(prefix):]: int(sum(ops.values())) for name, ops in counts.items() if name.startswith(prefix)}
    modules: dict[str, int] = {}
    for name, flops in inner.items():
        parts = name.split(".")
        if any(".".join(parts[:i]) in inner for i in range(1, len(parts))):
            continue  # already inside an outer module's count
        modules[parts[0]] = modules.get(parts[0], 0) + flops
    report = {"total": int(counter.get_total_flops()), "modules": modules,
              "by_op": {str(op).split(".")[-1] if "." in str(op) else str(op): int(n) for op, n in glob.items()}}
    return report, result


def caption_flops(model: FaceNet, artifacts: Artifacts, video_id: str, num_beams: int = 5,
                  max_len: int = 15, device: torch.device | None = None) -> dict[str, Any]:
    """FLOPs of captioning one video (encoder + full beam search), by FACE-net module."""
    counted, caps = count_flops(model, lambda m: generate_captions(m, artifacts, [video_id], num_beams, max_len,
                                                                   batch_size=1, device=device))
    per = {name: int(counted["modules"].get(name, 0)) for name in MODULES}
    per["other"] = counted["total"] - sum(per.values())
    decoder = per["decoder"]
    return {
        "per_caption": counted["total"],
        "macs_per_caption": counted["total"] // 2,
        "encoder": counted["total"] - decoder,
        "decoder": decoder,
        "modules": per,
        "by_op": counted["by_op"],
        "caption": caps[video_id],
        "caption_words": len(caps[video_id].split()),
        "counted": FLOPS_COUNTED,
    }


# --------------------------------------------------------------------------- memory and latency


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    """Reset the process' peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _ru_maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def current_memory_mb(device: torch.device) -> float:
    """What :class:`PeakMemory` measures from: allocated CUDA memory, else the process' resident set."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device) / (1 << 20)
    rss = _status_kib("VmRSS")
    return rss / 1024 if rss is not None else _ru_maxrss_mib()


class PeakMemory:
    """Peak memory of a block: ``peak_mb`` (absolute) and ``delta_mb`` = peak - ``base_mb``
    (default: the memory at the start of the block); ``kind`` says what is measured."""

    def __init__(self, device: torch.device, base_mb: float | None = None) -> None:
        self.device = torch.device(device)
        self.base_mb = base_mb
        self.kind = ""
        self.peak_mb: float | None = None
        self.delta_mb: float | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            self.kind = "cuda_max_memory_allocated"
            start = current_memory_mb(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _reset_peak_rss():
            self.kind = "cpu_peak_rss (VmHWM, reset via /proc/self/clear_refs)"
            start = current_memory_mb(self.device)
        else:
            self.kind = "cpu_ru_maxrss (process lifetime peak: a lower bound of the increase)"
            start = _ru_maxrss_mib()
        if self.base_mb is None:
            self.base_mb = start
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / (1 << 20)
        elif self.kind.startswith("cpu_peak_rss"):
            self.peak_mb = (_status_kib("VmHWM") or 0) / 1024
        else:
            self.peak_mb = _ru_maxrss_mib()
        self.delta_mb = max(0.0, self.peak_mb - float(self.base_mb or 0.0))


def _batch_ids(video_ids: Sequence[str], size: int) -> list[str]:
    """``size`` ids cycling through ``video_ids`` (a batch larger than the split repeats videos)."""
    return [video_ids[i % len(video_ids)] for i in range(size)]


def latency_sweep(
    model: FaceNet,
    artifacts: Artifacts,
    video_ids: Sequence[str],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    num_beams: int = 5,
    max_len: int = 15,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | None = None,
    memory_base_mb: float | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One entry per batch size, ascending: median wall and CPU time per batch, per caption,
    captions/s, and the peak memory of the batch size's first call.

    Memory: the first call of every size, smallest first, is measured against
    ``memory_base_mb`` (default: the memory before that first call of the smallest size), so
    what an earlier, smaller batch left allocated never exceeds what the current one needs.
    Time: ``warmup`` untimed calls per size (at least one, the memory call), then ``repeats`` rounds each timing every size
    once, interleaved, so that a load change on a shared machine hits all sizes alike.
    """
    if not video_ids:
        raise ValueError("latency_sweep: no video to caption")
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = device or next(model.parameters()).device
    batches = {b: _batch_ids(video_ids, b) for b in sizes}

    def run(b: int) -> tuple[float, float]:
        # the captions come back as Python lists, so the GPU has finished when this returns
        t0, c0 = time.perf_counter(), time.process_time()
        generate_captions(model, artifacts, batches[b], num_beams, max_len, batch_size=b, device=device)
        return time.perf_counter() - t0, time.process_time() - c0

    memory: dict[int, PeakMemory] = {}
    base = memory_base_mb if memory_base_mb is not None else current_memory_mb(device)
    for b in sizes:  # first calls, ascending: memory, and the first warm-up
        with PeakMemory(device, base) as memory[b]:
            run(b)
        for _ in range(warmup - 1):
            run(b)
    wall: dict[int, list[float]] = {b: [] for b in sizes}
    cpu: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in progress_bar(range(repeats), desc="timing rounds", disable=not progress):
        for b in sizes:
            w, c = run(b)
            wall[b].append(w)
            cpu[b].append(c)
    out: list[dict[str, Any]] = []
    for b in sizes:
        batch_ms = 1000.0 * statistics.median(wall[b])
        cpu_ms = 1000.0 * statistics.median(cpu[b])
        entry = {
            "batch_size": b,
            "batch_ms": batch_ms,
            "ms_per_caption": batch_ms / b,
            "captions_per_s": 1000.0 * b / batch_ms,
            "cpu_batch_ms": cpu_ms,
            "cpu_ms_per_caption": cpu_ms / b,
            "cpu_captions_per_s": 1000.0 * b / cpu_ms if cpu_ms > 0 else None,
            "batch_ms_repeats": [1000.0 * t for t in wall[b]],
            "distinct_videos": len(set(batches[b])),
            "peak_memory_mb": memory[b].peak_mb,
            "memory_delta_mb": memory[b].delta_mb,
            "memory_kind": memory[b].kind,
        }
        log.info("batch %d: %.1f ms/batch (CPU %.1f ms), %.2f ms/caption, %.1f captions/s, peak %.0f MB (+%.0f)",
                 b, batch_ms, cpu_ms, entry["ms_per_caption"], entry["captions_per_s"], memory[b].peak_mb or 0.0,
                 memory[b].delta_mb or 0.0)
        out.append(entry)
    return out


# --------------------------------------------------------------------------- random-weight models


def synthetic_artifacts(cfg: FaceNetConfig, n_videos: int, n_repository: int | None = None,
                        seed: int = 0) -> Artifacts:
    """Cached inputs of the shapes ``cfg`` expects, drawn at random (no data needed):
    unit-norm CLIP-like frame and triplet embeddings, cosines in [0.2, 0.4]."""
    rng = np.random.default_rng(seed)
    n_repo = n_repository or max(cfg.k, 4 * n_videos)

    def unit(*shape: int) -> np.ndarray:
        x = rng.standard_normal(shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    ids = [f"synthetic{i}" for i in range(n_videos)]
    indices = np.stack([rng.choice(n_repo, size=cfg.k, replace=False) for _ in ids]).astype(np.int64)  # (n, K)
    scores = np.sort(rng.uniform(0.2, 0.4, size=(n_videos, cfg.k)).astype(np.float32), axis=1)[:, ::-1]
    return Artifacts(
        paths={"features": "<synthetic>", "topk": "<synthetic>", "triplets": "<synthetic>", "lexicon": ""},
        video_ids=ids, frames=unit(n_videos, cfg.n_frames, cfg.d_v), topk_video_ids=list(ids),
        topk_indices=indices, topk_scores=np.ascontiguousarray(scores),
        repo_captions=[f"caption {i}" for i in range(n_repo)], repo_video_ids=[f"repo{i}" for i in range(n_repo)],
        triplet_embeddings=unit(n_repo, 3, cfg.d_t))


def random_model(cfg: FaceNetConfig, vocab_size: int = DEFAULT_VOCAB_SIZE,
                 n_lexicon_words: int = DEFAULT_LEXICON_WORDS, n_categories: int = DEFAULT_CATEGORIES,
                 seed: int = 0) -> FaceNet:
    """FACE-net of configuration ``cfg`` with random weights, a random E_0 of ``n_lexicon_words``
    words in ``n_categories`` categories and (word decoders) a vocabulary of ``vocab_size``
    entries, the four specials and the lexicon words included."""
    if n_lexicon_words < 1 or n_categories < 1:
        raise ValueError(f"the lexicon needs >= 1 word and category, got {n_lexicon_words}, {n_categories}")
    torch.manual_seed(seed)
    words = [f"emotion{i}" for i in range(n_lexicon_words)]
    vocab = None
    if cfg.decoder in WORD_DECODERS:
        n_fill = vocab_size - 4 - len(words)
        if n_fill < 0:
            raise ValueError(f"vocab_size {vocab_size} cannot hold 4 specials and {len(words)} lexicon words")
        vocab = Vocab(words + [f"word{i}" for i in range(n_fill)])
    lexicon = torch.randn(n_lexicon_words, cfg.d_e)  # (N_w, d_e) stands for GloVe E_0
    member = torch.zeros(n_lexicon_words, n_categories)  # (N_w, C): word i in category i mod C
    member[torch.arange(n_lexicon_words), torch.arange(n_lexicon_words) % n_categories] = 1.0
    return create_facenet(cfg, vocab=vocab, lexicon_words=words, lexicon_vectors=lexicon, word_category=member,
                          random_init=True).eval()


def resolve_model_config(value: str, config_dir: str | Path = "config") -> dict[str, Any]:
    """A FaceNetConfig mapping from a dataset config name (``config/<name>.yaml``: its
    ``model:`` section), a YAML/JSON file (a dataset config or a bare FaceNetConfig) or inline
    JSON/YAML."""
    from facenet_evc.config import load_mapping, read_yaml

    named = Path(config_dir) / f"{value}.yaml"
    if re.fullmatch(r"[A-Za-z0-9_.-]+", value) and not value.endswith((".yaml", ".yml", ".json")):
        if not named.is_file():
            known = sorted(p.stem for p in Path(config_dir).glob("*.yaml")) if Path(config_dir).is_dir() else []
            raise FileNotFoundError(f"--model-config {value!r}: no {named} (dataset configs: {', '.join(known) or 'none'}); "
                                    "give a dataset name, a YAML/JSON file or inline JSON")
        data = read_yaml(named)
    else:
        data = load_mapping(value, "--model-config")
    if isinstance(data.get("model"), dict) and "name" in data:  # a dataset config: its model section
        data = data["model"]
    return data


# --------------------------------------------------------------------------- report


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def measure_efficiency(
    model: FaceNet,
    artifacts: Artifacts,
    video_ids: Sequence[str],
    source: Mapping[str, Any],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    num_beams: int = 5,
    max_len: int = 15,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = 1,
    device: torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Parameters, FLOPs per caption, the latency/throughput sweep and peak memory, as one JSON-ready dict."""
    if not video_ids:
        raise ValueError("measure_efficiency: no video to caption")
    device = device or next(model.parameters()).device
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        params = facenet_parameters(model)
        weights_mb = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / (1 << 20)
        base_mb = current_memory_mb(device)  # model and inputs loaded, nothing captioned yet
        flops = caption_flops(model, artifacts, video_ids[0], num_beams, max_len, device)
        sweep = latency_sweep(model, artifacts, video_ids, batch_sizes, num_beams, max_len, repeats, warmup,
                              device, base_mb, progress)
    finally:
        torch.set_num_threads(old_threads)
    best = max(sweep, key=lambda e: e["captions_per_s"])
    first = sweep[0]

    def grows(key: str) -> bool:
        # non-decreasing within the noise (5 %), and higher at the largest batch than at the smallest
        rates = [e[key] for e in sweep]
        if None in rates:
            return False
        return all(b >= (1 - GROWTH_TOLERANCE) * a for a, b in zip(rates, rates[1:])) and rates[-1] >= rates[0]

    return {
        "model": dict(source),
        "setup": {
            "device": str(device), "device_name": _device_name(device),
            "threads": int(threads) if threads else old_threads, "torch": torch.__version__,
            "num_beams": num_beams, "max_len": max_len,
            "repeats": repeats, "warmup": warmup, "n_videos": len(video_ids),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "parameters": params,
        "flops": flops,
        "latency": {
            "batch_size_1_ms": first["ms_per_caption"] if first["batch_size"] == 1 else None,
            "best_batch_size": best["batch_size"],
            "best_ms_per_caption": best["ms_per_caption"],
            "best_captions_per_s": best["captions_per_s"],
            "throughput_grows": grows("captions_per_s"),
            "cpu_throughput_grows": grows("cpu_captions_per_s"),
            "sweep": sweep,
        },
        "memory": {
            "kind": first["memory_kind"],
            "weights_and_buffers_mb": weights_mb,
            "before_inference_mb": base_mb,
            "batch_size_1_peak_mb": first["peak_memory_mb"] if first["batch_size"] == 1 else None,
            "batch_size_1_delta_mb": first["memory_delta_mb"] if first["batch_size"] == 1 else None,
            "best_batch_peak_mb": best["peak_memory_mb"],
            "best_batch_delta_mb": best["memory_delta_mb"],
        },
        "paper_table6": {"hardware": PAPER_HARDWARE, "rows": PAPER_TABLE6},
    }


def _m(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _g(n: float) -> str:
    return f"{n / 1e9:.3f}G" if n >= 1e8 else f"{n / 1e6:.2f}M"


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f} MB"


def format_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: Table 6 layout with the paper's rows, then the module and batch-size tables."""
    src, setup, par, fl, lat, mem = (report[k] for k in ("model", "setup", "parameters", "flops", "latency", "memory"))
    name = src.get("label") or src.get("checkpoint") or "model"
    b1 = lat["batch_size_1_ms"]
    lines = [
        "# Efficiency and complexity (paper Table 6)",
        "",
        f"Measured on {setup['device']} ({setup['device_name']}) with **{setup['threads']} thread(s)**, torch "
        f"{setup['torch']}, beam search {setup['num_beams']} beams / {setup['max_len']} tokens, median of "
        f"{setup['repeats']} interleaved rounds after {setup['warmup']} warm-up call(s) per batch size, "
        f"{setup['date']}. The machine may be shared and contended: the wall times are indicative, not a "
        "benchmark (the CPU times of the sweep are less sensitive to other jobs).",
        "",
        "| model | trainable params | total params | FLOPs / caption | time / caption, batch 1 | "
        "time / caption, best batch | captions/s (best batch) | peak memory, batch 1 |",
        "|---|---|---|---|---|---|---|---|",
        f"| {name} (ours, measured) | {_m(par['trainable'])} | {_m(par['total'])} | {_g(fl['per_caption'])} | "
        f"{'n/a' if b1 is None else f'{b1:.1f} ms'} | {lat['best_ms_per_caption']:.2f} ms (B={lat['best_batch_size']}) | "
        f"{lat['best_captions_per_s']:.1f} | {_mb(mem['batch_size_1_peak_mb'])} (+{_mb(mem['batch_size_1_delta_mb'])}) |",
    ]
    for row in report["paper_table6"]["rows"]:
        lines.append(f"| {row['method']} (**paper's number**, CFS {row['CFS']}) | {row['params_M']}M | n/a | "
                     f"{row['GFLOPs']}G | {row['ms']} ms | n/a | n/a | {row['MB']} MB |")
    lines += [
        "",
        f"Paper rows: Table 6 as printed, measured by the authors on {report['paper_table6']['hardware']} "
        "with their own (unstated) counting; they are not comparable number for number with a measurement on "
        "another device, and FACE-net's row is the FLAN-T5 XL decoder.",
        "",
        f"* Model: {src.get('description', '')}",
        f"* FLOPs: {fl['counted']}. MACs = FLOPs / 2 = {_g(fl['macs_per_caption'])}. The counted caption has "
        f"{fl['caption_words']} words: {fl['caption']!r}.",
        f"* Memory: {mem['kind']}: the peak during a batch size's first call (+ its increase over "
        f"{_mb(mem['before_inference_mb'])}, the model and inputs loaded, nothing captioned yet). On the CPU the "
        "peak is the whole process (Python, libraries, cached inputs); on CUDA the allocated tensors, weights "
        f"included. Weights and buffers: {mem['weights_and_buffers_mb']:.1f} MB.",
        "* Time: `generate_captions` from cached features / top-K / triplets (no CLIP, no retrieval), "
        "wall clock; per caption = batch time / B.",
        "",
        "## Per module",
        "",
        "| module | trainable params | total params | FLOPs / caption |",
        "|---|---|---|---|",
    ]
    for mod in (*MODULES, "other"):
        p = par["modules"][mod]
        built = "" if p["built"] or mod == "other" else " (off)"
        lines.append(f"| {mod}{built} | {p['trainable']:,} | {p['total']:,} | {fl['modules'][mod]:,} |")
    lines.append(f"| **total** | {par['trainable']:,} | {par['total']:,} | {fl['per_caption']:,} |")
    lines += [
        "",
        "`other`: the frame projection `v_proj`, the frame positions, the motion projection and the emotion classifier (parameters); FLOPs outside the "
        "five modules (frame projection, classifier, the explanation's attention-per-category product).",
        "",
        "## Batch-size sweep",
        "",
        "| batch size | batch time | time / caption | captions/s | CPU time / caption | captions/CPU-s | "
        "peak memory | increase |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in lat["sweep"]:
        cps = "n/a" if e["cpu_captions_per_s"] is None else f"{e['cpu_captions_per_s']:.1f}"
        lines.append(f"| {e['batch_size']} | {e['batch_ms']:.1f} ms | {e['ms_per_caption']:.2f} ms | "
                     f"{e['captions_per_s']:.1f} | {e['cpu_ms_per_caption']:.2f} ms | {cps} | "
                     f"{_mb(e['peak_memory_mb'])} | +{_mb(e['memory_delta_mb'])} |")

    def grows(flag: bool) -> str:
        return "grows" if flag else "does not grow monotonically"

    lines += ["", f"Throughput {grows(lat['throughput_grows'])} with the batch size in wall time and "
              f"{grows(lat['cpu_throughput_grows'])} in process CPU time over this sweep (a step down by "
              f"less than {GROWTH_TOLERANCE:.0%} counts as flat).", ""]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], out_json: str | Path) -> Path:
    """Write ``out_json`` and the markdown table beside it (same name, ``.md``); returns the md path."""
    return write_json_and_markdown(out_json, report, format_markdown(report))


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc efficiency``."""
    from facenet_evc.data.sources import add_captions_args

    src = parser.add_argument_group("model (one of)")
    src.add_argument("--checkpoint", help="checkpoint directory (e.g. results/<ds>/train/best)")
    src.add_argument("--random-weights", action="store_true",
                     help="measure the shape of --model-config with random weights (no checkpoint)")
    src.add_argument("--model-config", help="with --random-weights: dataset config name (config/<name>.yaml), "
                     "YAML/JSON file or inline JSON of a FaceNetConfig")
    data = parser.add_argument_group("cached inputs, as predict reads them (synthetic with --random-weights if absent)")
    add_artifact_args(data, required=False)
    add_captions_args(data, required=False)
    shape = parser.add_argument_group("random-weight shape")
    shape.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="word decoders' vocabulary")
    shape.add_argument("--lexicon-words", type=int, default=DEFAULT_LEXICON_WORDS)
    shape.add_argument("--lexicon-categories", type=int, default=DEFAULT_CATEGORIES)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads during the measurement")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<i>")
    parser.add_argument("--out", required=True, help="efficiency.json to write; efficiency.md is written beside it")


def run_cli(args: argparse.Namespace) -> int:
    from facenet_evc.training.data import load_artifacts
    from facenet_evc.data.sources import split_video_ids
    from facenet_evc.training.factory import load_model
    from facenet_evc.training.runtime import resolve_device

    if bool(args.checkpoint) == bool(args.random_weights):
        raise ValueError("give either --checkpoint CKPT_DIR or --random-weights --model-config CONFIG")
    inputs = ("features", "topk", "triplets", "captions")
    given = [f for f in inputs if getattr(args, f)]
    if given and len(given) < len(inputs):
        missing = [f for f in inputs if f not in given]
        raise ValueError("the cached inputs need all of --features --topk --triplets --captions; missing: "
                         + ", ".join(f"--{m}" for m in missing))
    if args.checkpoint and not given:
        raise ValueError("--checkpoint needs the cached inputs: --features --topk --triplets --captions")
    device = resolve_device(args.device)
    if args.checkpoint:
        model, meta = load_model(args.checkpoint, device)
        source = {"kind": "checkpoint", "checkpoint": str(args.checkpoint), "label": Path(args.checkpoint).as_posix(),
                  "step": meta.get("step"), "config": model.cfg.to_dict(),
                  "description": f"trained checkpoint {args.checkpoint} (step {meta.get('step')}), "
                                 f"{model.cfg.decoder} decoder, d={model.cfg.d}"}
    else:
        if not args.model_config:
            raise ValueError("--random-weights needs --model-config (dataset config name, YAML/JSON file or inline JSON)")
        cfg = FaceNetConfig.from_dict(resolve_model_config(args.model_config))
        model = random_model(cfg, args.vocab_size, args.lexicon_words, args.lexicon_categories).to(device)
        source = {"kind": "random_weights", "model_config": args.model_config, "label": f"random {cfg.decoder}",
                  "config": cfg.to_dict(), "vocab_size": args.vocab_size if cfg.decoder in ("lstm", "transformer")
                  else None, "lexicon_words": args.lexicon_words, "lexicon_categories": args.lexicon_categories,
                  "description": f"random weights of the configuration {args.model_config} ({cfg.decoder} decoder, "
                                 f"d={cfg.d}; vocabulary {args.vocab_size} for word decoders, lexicon "
                                 f"{args.lexicon_words} words / {args.lexicon_categories} categories; no trained weights)"}
    if given:
        artifacts = load_artifacts(args.features, args.topk, args.triplets)
        videos = list(dict.fromkeys(split_video_ids(args.captions, args.captions_seps)))
        if not videos:
            raise ValueError(f"{', '.join(args.captions)}: no video")
        artifacts.check_videos(videos)
        artifacts.check_model_config(model.cfg)
        source["inputs"] = {"features": args.features, "topk": args.topk, "triplets": args.triplets,
                            "captions": list(args.captions)}
    else:
        artifacts = synthetic_artifacts(model.cfg, max(args.batch_sizes))
        videos = list(artifacts.video_ids)
        source["inputs"] = "synthetic (random unit-norm features and triplets)"
    report = measure_efficiency(model, artifacts, videos, source, args.batch_sizes, args.num_beams, args.max_len,
                                args.repeats, args.warmup, args.threads, device, progress=True)
    md = write_report(report, args.out)
    lat = report["latency"]
    print(json.dumps({"out": str(args.out), "md": str(md), "trainable_params": report["parameters"]["trainable"],
                      "flops_per_caption": report["flops"]["per_caption"], "batch_size_1_ms": lat["batch_size_1_ms"],
                      "best_batch_size": lat["best_batch_size"], "best_captions_per_s": lat["best_captions_per_s"]}))
    return 0
