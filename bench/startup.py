#!/usr/bin/env python
"""Start-up time of ``facenet-evc``: the help screens and the light workflow stages.

Every Snakemake job starts a fresh ``facenet-evc`` process, so the time to import what a
command needs is paid once per job. This script times, as whole processes (wall clock,
``python -m facenet_evc`` under the running interpreter), over ``--runs`` runs after one
warm-up:

* ``facenet-evc --help`` and ``facenet-evc evaluate --help`` (target: <= 1 s on an idle core);
* the light stages on a tiny synthetic split -- ``prepare-references`` (rule references),
  ``human-baseline``, ``bias-stats`` and ``metrics-table`` (target: <= 2 s);
* ``python -c "import torch"`` for scale.

    python bench/startup.py --runs 5

It prints min / median / max seconds per command; nothing is asserted (a shared machine makes
timings noisy: quote medians, and say whether the machine was idle).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from facenet_evc.data.demo import demo_lexicon_dir  # noqa: E402

FACENET = [sys.executable, "-m", "facenet_evc"]
# the subprocesses run this checkout's code, whatever the environment has installed
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}


def write_inputs(tmp: Path) -> dict[str, str]:
    """A 6-video split (3 captions each), the demo lexicon and two metrics files."""
    words = ["happy", "sad", "angry", "calm", "scared", "bored"]
    rows = ["VideoID,EmCaptions"] + [f"video{i},a {w} person walks {j}" for i, w in enumerate(words) for j in range(3)]
    (tmp / "captions.csv").write_text("\n".join(rows) + "\n")
    names = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "Acc_sw", "Acc_c", "BFS", "CFS")
    metrics = {**{m: 0.1 * (i + 1) for i, m in enumerate(names)}, "n_videos": 6}
    for name in ("a", "b"):
        (tmp / f"{name}.json").write_text(json.dumps(metrics))
    lexicon = tmp / "lexicon"
    shutil.copytree(demo_lexicon_dir(), lexicon)
    return {"captions": str(tmp / "captions.csv"), "lexicon": str(lexicon), "tmp": str(tmp)}


def commands(p: dict[str, str]) -> dict[str, list[str]]:
    t = p["tmp"]
    return {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "facenet-evc --help": [*FACENET, "--help"],
        "facenet-evc evaluate --help": [*FACENET, "evaluate", "--help"],
        "prepare-references (rule references)": [*FACENET, "prepare-references", "--captions", p["captions"],
                                                 "--out", f"{t}/refs.json"],
        "human-baseline": [*FACENET, "human-baseline", "--captions", p["captions"],
                           "--predictions-out", f"{t}/hp.json", "--references-out", f"{t}/hr.json"],
        "bias-stats": [*FACENET, "bias-stats", "--trainval", p["captions"], "--test", p["captions"],
                       "--lexicon", p["lexicon"], "--out", f"{t}/bias.json"],
        "metrics-table": [*FACENET, "metrics-table", "--metrics", f"A={t}/a.json", f"B={t}/b.json",
                          "--out", f"{t}/m.md"],
    }


def time_command(argv: list[str], runs: int) -> list[float]:
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, env=ENV)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
        if i:  # the first run is a warm-up (file cache)
            times.append(dt)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per command, after one warm-up")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(write_inputs(Path(tmp)))
        width = max(map(len, cmds))
        print(f"{'command':<{width}}  {'min':>6}  {'median':>6}  {'max':>6}   (wall seconds, {args.runs} runs)")
        for name, argv in cmds.items():
            t = time_command(argv, args.runs)
            print(f"{name:<{width}}  {min(t):6.2f}  {statistics.median(t):6.2f}  {max(t):6.2f}", flush=True)


if __name__ == "__main__":
    main()
