"""Several runs' metrics.json side by side as one markdown table (the demo's headline table).

``facenet-evc metrics-table --metrics FACE-net=results/demo/metrics.json "top-1 retrieved
caption"=results/demo/baselines/retrieval/metrics.json --out results/demo/metrics.md``
"""
from __future__ import annotations

import argparse
from typing import Mapping

from facenet_evc.ablations import COLUMNS, HEADERS
from facenet_evc.io import write_text


def metrics_markdown(runs: Mapping[str, Mapping[str, float]], title: str = "Test metrics") -> str:
    """One row per run, the paper's column order, values ×100 (as in the paper's tables)."""
    lines = [f"# {title}", "", "| run | " + " | ".join(HEADERS) + " | videos |", "|---|" + "---:|" * (len(HEADERS) + 1)]
    for name, m in runs.items():
        missing = [c for c in COLUMNS if c not in m]
        if missing:
            raise ValueError(f"metrics of {name!r}: missing {missing}")
        cells = ["—" if m[c] is None else f"{100 * float(m[c]):.1f}" for c in COLUMNS]  # None: undefined Acc_c
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m.get('n_videos', '')} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", nargs="+", required=True, metavar="NAME=PATH", help="a run's name = its metrics.json")
    parser.add_argument("--comparison", help="a `compare --out` JSON: its differences and intervals go below the table")
    parser.add_argument("--title", default="Test metrics")
    parser.add_argument("--out", required=True, help="markdown file to write")


def run_cli(args: argparse.Namespace) -> int:
    from facenet_evc.io import named_metrics

    text = metrics_markdown(named_metrics(args.metrics), args.title)
    if args.comparison:
        from facenet_evc.analysis.compare import comparison_markdown, read_comparison

        text += "\n## " + comparison_markdown(read_comparison(args.comparison))
    write_text(args.out, text)
    print(text)
    return 0
