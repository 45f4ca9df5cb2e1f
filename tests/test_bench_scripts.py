"""The bench scripts' cheap paths: bench/gpu_check.sh on a machine without CUDA (every GPU
section skipped, said so in its JSON), the GPU check's sections run on the CPU in place of the
accelerator, and bench/xl_shape.py at a tiny size (the XL run itself is a bench, run by hand)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "bench"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of the GPU check")
def test_gpu_check_skips_every_gpu_section_without_cuda(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(PROJECT / "bench" / "gpu_check.sh"), str(out)], cwd=PROJECT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert report["cuda"] is False and "no CUDA device" in report["note"]
    assert set(report["sections"]) == {"train", "faiss", "llm_bf16", "xl", "nccl"}
    for name, section in report["sections"].items():
        assert section["status"] == "skipped" and "no CUDA device" in section["reason"], name
    assert "skipped (no CUDA device)" in r.stdout


def test_gpu_check_sections_run_with_the_cpu_as_accelerator(monkeypatch):
    """The sections' own logic (curves compared, LoRA decoders trained under bf16 autocast and
    decoded by words), with the CPU standing in for the GPU."""
    import gpu_check

    monkeypatch.setattr(gpu_check, "GPU", torch.device("cpu"))
    train = gpu_check.check_train(steps=25)
    assert train["curves_agree"] and train["max_rel_diff_smoothed"] < 1e-4  # same device: same curve
    assert train["status"] == "ok" and len(train["sample_captions"]) == 4
    llm = gpu_check.check_llm_bf16()
    assert llm["status"] == "ok", llm
    assert all(len(c.split()) <= 15 for kind in ("t5", "opt") for c in llm[kind]["captions"])


def test_xl_shape_script_at_a_tiny_size(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT / "src")}
    out = tmp_path / "xl.json"
    r = subprocess.run([sys.executable, str(PROJECT / "bench" / "xl_shape.py"), "--tiny", "--threads", "1",
                        "--tmp", str(tmp_path), "--json", str(out)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["llm"]["vocab_rows"] == 32128 and report["llm"]["tokenizer_ids"] == 32100
    lora = report["params"]["lora_by_linear"]
    assert set(lora) == {"q", "k", "v", "o", "wi_0", "wi_1", "wo"}  # all-linear: every block linear, no LM head
    assert report["params"]["modules"]["decoder"]["trainable"] == sum(lora.values())
    assert len(report["train"]["steps"]) == 2 and report["decode"]["batch"] == 2
    assert all(w <= 15 for w in report["decode"]["words"])
