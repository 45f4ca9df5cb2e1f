"""Two systems' predictions on the same test set: each official metric's difference with a 95% interval.

``facenet-evc compare A.json B.json --references R.json --lexicon DIR --names retrieval FACE-net
--out cmp.json`` writes B - A per metric with a paired-bootstrap interval and p-value
(:mod:`facenet_evc.evaluation.bootstrap`, which says how CIDEr and METEOR are treated) and
prints it as a markdown table.
"""
from __future__ import annotations

import argparse
from typing import Any, Mapping

from facenet_evc.ablations import COLUMNS, HEADERS
from facenet_evc.io import read_json, write_json, write_text

HEADER_OF = dict(zip(COLUMNS, HEADERS))


def compare_files(a: str, b: str, references: str, lexicon: str, n_resamples: int = 1000, seed: int = 0,
                  meteor: bool = False, names: tuple[str, str] = ("A", "B")) -> dict[str, Any]:
    """:func:`~facenet_evc.evaluation.bootstrap.paired_bootstrap` on two ``{video_id: caption}`` files."""
    from facenet_evc.data.lexicon import read_lexicon
    from facenet_evc.evaluation import check_inputs
    from facenet_evc.evaluation.bootstrap import paired_bootstrap, video_stats

    refs = read_json(references)
    lex = read_lexicon(lexicon)
    stats = []
    for path in (a, b):
        preds = read_json(path)
        check_inputs(preds, refs, where=(str(path), str(references)))
        stats.append(video_stats(preds, refs, lex, meteor=meteor))
    out = paired_bootstrap(stats[0], stats[1], n_resamples=n_resamples, seed=seed)
    out.update(a={"name": names[0], "predictions": str(a)}, b={"name": names[1], "predictions": str(b)},
               references=str(references))
    return out


def _pct(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def diff_cell(row: Mapping[str, Any]) -> str:
    """``+3.2 [+0.4, +6.1]`` (x100) for one metric's row of a comparison."""
    if row.get("low") is None:
        return _pct(row.get("diff"), sign=True)
    return f"{_pct(row['diff'], True)} [{_pct(row['low'], True)}, {_pct(row['high'], True)}]"


def comparison_markdown(cmp: Mapping[str, Any]) -> str:
    """One row per metric: A, B, B - A with its interval, p-value (all x100 but p)."""
    a, b = cmp["a"]["name"], cmp["b"]["name"]
    level = int(round(100 * cmp["level"]))
    lines = [f"{b} − {a} on {cmp['n_videos']} test videos: paired bootstrap, {cmp['n_resamples']} resamples, "
             f"{level}% percentile interval (x100).", "",
             f"| metric | {a} | {b} | {b} − {a} [{level}% interval] | p |", "|---|---:|---:|---:|---:|"]
    for m in COLUMNS:
        row = cmp["metrics"].get(m)
        if row is None:
            continue
        p = "—" if row.get("p") is None else f"{row['p']:.3f}"
        lines.append(f"| {HEADER_OF[m]} | {_pct(row['a'])} | {_pct(row['b'])} | {diff_cell(row)} | {p} |")
    notes = [f"{HEADER_OF[m]}: {row['undefined_resamples']} resamples with an undefined Acc_c dropped"
             for m, row in cmp["metrics"].items() if row.get("undefined_resamples")]
    if "METEOR" in cmp["metrics"]:
        notes.append("METEOR: computed once (Java scorer), no interval")
    notes.append("CIDEr: document frequencies of the whole test set, held fixed under resampling")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="predictions.json of system A (the reference system, e.g. the retrieval baseline)")
    parser.add_argument("b", help="predictions.json of system B; differences are B - A")
    parser.add_argument("--references", required=True, help="references.json {video_id: [captions]}")
    parser.add_argument("--lexicon", required=True, help="lexicon folder of <category>.txt files")
    parser.add_argument("--names", nargs=2, default=["A", "B"], metavar=("NAME_A", "NAME_B"))
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--meteor", action="store_true", help="also run METEOR once per system (Java; no interval)")
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--md", help="markdown file to write")


def run_cli(args: argparse.Namespace) -> int:
    if args.resamples < 2:
        raise ValueError(f"--resamples must be >= 2, got {args.resamples}")
    cmp = compare_files(args.a, args.b, args.references, args.lexicon, n_resamples=args.resamples, seed=args.seed,
                        meteor=args.meteor, names=tuple(args.names))
    if args.out:
        write_json(args.out, cmp)
    text = comparison_markdown(cmp)
    if args.md:
        write_text(args.md, text)
    print(text)
    return 0


def read_comparison(path: str) -> dict[str, Any]:
    """A ``compare --out`` JSON, checked to be one."""
    cmp = read_json(path)
    if not isinstance(cmp, dict) or "metrics" not in cmp or "a" not in cmp:
        raise ValueError(f"{path}: not a comparison written by `facenet-evc compare --out` (no 'metrics'/'a')")
    return cmp

