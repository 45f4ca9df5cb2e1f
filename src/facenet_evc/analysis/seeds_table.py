"""Metrics over training seeds: mean ± sd per system, and each seed's paired comparison.

``facenet-evc seeds-table --runs FACE-net=s0/metrics.json,s1/metrics.json
"top-1 retrieved caption"=baselines/retrieval/metrics.json --comparisons seed0=s0/cmp.json ...
--out seeds/table.md --csv seeds/table.csv``

A system given one file (a baseline that does not depend on the training seed) is shown with
sd 0 and its single run count. sd is the sample standard deviation (ddof 1).
"""
from __future__ import annotations

import argparse
import csv
import io
import math
from typing import Any, Mapping, Sequence

from facenet_evc.ablations import COLUMNS, HEADERS
from facenet_evc.analysis.compare import HEADER_OF, diff_cell, read_comparison
from facenet_evc.io import read_json, write_text

COMPARED = ("CIDEr", "Acc_sw", "Acc_c", "CFS", "BFS", "Bleu_4")


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample sd (0 for one value) and count of the defined values."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None, 0
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd, len(xs)


def summarise(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, tuple]]:
    """``{system: {metric: (mean, sd, n)}}`` from ``{system: [metrics.json dicts]}``."""
    return {name: {c: mean_sd([m.get(c) for m in ms]) for c in COLUMNS} for name, ms in runs.items()}


def _cell(stat: tuple) -> str:
    m, sd, n = stat
    return "—" if m is None else f"{100 * m:.1f} ± {100 * sd:.1f}"


def seeds_markdown(summary: Mapping[str, Mapping[str, tuple]], comparisons: Mapping[str, Mapping[str, Any]],
                   n_runs: Mapping[str, int], title: str) -> str:
    lines = [f"# {title}", "", "Mean ± sd over runs (x100); sd is the sample sd, 0 for a system that does not "
             "depend on the training seed.", "",
             "| system | runs | " + " | ".join(HEADERS) + " |", "|---|---:|" + "---:|" * len(HEADERS)]
    for name, stats in summary.items():
        lines.append(f"| {name} | {n_runs[name]} | " + " | ".join(_cell(stats[c]) for c in COLUMNS) + " |")
    if comparisons:
        first = next(iter(comparisons.values()))
        a, b = first["a"]["name"], first["b"]["name"]
        level = int(round(100 * first["level"]))
        lines += ["", f"## {b} − {a} per run: paired bootstrap over the {first['n_videos']} test videos, "
                  f"{first['n_resamples']} resamples, {level}% interval (x100)", "",
                  "| run | " + " | ".join(HEADER_OF[c] for c in COMPARED) + " |", "|---|" + "---:|" * len(COMPARED)]
        above = {c: 0 for c in COMPARED}
        for run, cmp in comparisons.items():
            cells = []
            for c in COMPARED:
                row = cmp["metrics"][c]
                cells.append(diff_cell(row))
                above[c] += row.get("low") is not None and row["low"] > 0
            lines.append(f"| {run} | " + " | ".join(cells) + " |")
        lines.append(f"| interval above 0 | " + " | ".join(f"{above[c]} of {len(comparisons)}" for c in COMPARED) + " |")
    return "\n".join(lines) + "\n"


def seeds_csv(summary: Mapping[str, Mapping[str, tuple]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["system", "metric", "mean", "sd", "n"])
    for name, stats in summary.items():
        for c in COLUMNS:
            m, sd, n = stats[c]
            w.writerow([name, c, "" if m is None else f"{m:.6f}", "" if sd is None else f"{sd:.6f}", n])
    return buf.getvalue()


def parse_runs(items: Sequence[str]) -> dict[str, list[str]]:
    """``NAME=PATH[,PATH...]`` -> ``{name: [paths]}``, in the given order."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, paths = item.partition("=")
        if not sep or not name or not paths:
            raise ValueError(f"--runs {item!r}: expected NAME=PATH[,PATH...]")
        if name in out:
            raise ValueError(f"--runs: system {name!r} given twice")
        out[name] = paths.split(",")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=PATH[,PATH...]",
                        help="a system's name = its metrics.json of every seed, comma-separated")
    parser.add_argument("--comparisons", nargs="*", default=[], metavar="RUN=PATH",
                        help="a run's name = its `compare --out` JSON (e.g. FACE-net vs retrieval of that seed)")
    parser.add_argument("--title", default="Metrics over training seeds")
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument("--csv", help="CSV file to write (system, metric, mean, sd, n)")


def run_cli(args: argparse.Namespace) -> int:
    runs = {name: [read_json(p) for p in paths] for name, paths in parse_runs(args.runs).items()}
    comparisons = {}
    for item in args.comparisons:
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--comparisons {item!r}: expected RUN=PATH")
        comparisons[name] = read_comparison(path)
    summary = summarise(runs)
    text = seeds_markdown(summary, comparisons, {k: len(v) for k, v in runs.items()}, args.title)
    write_text(args.out, text)
    if args.csv:
        write_text(args.csv, seeds_csv(summary))
    print(text)
    return 0
