"""Official metrics per F-E bias group of the test videos (bias-aware analysis, paper Sec. 3.1).

Each test video gets the class of the F-E bias statistics (:mod:`facenet_evc.evaluation.bias`):
emotional-bias, neutral or factual-bias, by the emotion-word ratio of its reference
captions (Rule 1), under the default reading of ``bias-stats`` (``video_majority`` /
``inclusive``: the majority class of its captions, a tie neutral; ratio ``>= 1/6``
emotional, ``<= 1/10`` factual), optionally moved by Rule 2 when the original MSVD captions
are given. A video's class depends on its own captions only, so classifying the test
captions alone gives the classes ``bias-stats`` gives the test videos.

Every group is then scored with :func:`facenet_evc.evaluation.evaluate`, the function of the
``evaluate`` command, on that group's videos alone, for each prediction file (e.g. the full
model and the model without the BA module). Consequences worth knowing when reading the
table:

* each group is its own corpus, as the official code treats whatever it scores: BLEU is
  corpus-level and CIDEr's idf comes from the group's references, so group numbers do not
  average to the whole-test numbers, and CIDEr degenerates on tiny groups (one video: idf
  0, CIDEr 0). ``CIDEr_test_idf`` is therefore reported too: the mean per-video CIDEr-D of
  the group's videos with the idf of the whole test set (the whole-test CIDEr is the
  size-weighted mean of these);
* Acc_c is undefined where every caption with a right emotion also holds a wrong one (the
  official formula overflows), which a small group can hit: Acc_c, BFS and CFS are then
  null with the reason, the other metrics are still given.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from facenet_evc.data.lexicon import Lexicon, read_lexicon
from facenet_evc.evaluation import check_inputs, evaluate
from facenet_evc.evaluation.bias import CLASSES, T1, T2, THRESHOLDS, UNITS, Reading, apply_rule2, msvd_emotional, rule1_classes
from facenet_evc.evaluation.captions import shared_meteor
from facenet_evc.io import read_json, write_json_and_markdown

log = logging.getLogger(__name__)

GROUP_NAMES = {"emotional": "emotional-bias", "neutral": "neutral", "factual": "factual-bias"}
VIDEO_UNITS = tuple(u for u in UNITS if u != "caption")
ALL = "all"
_LABEL = re.compile(r"[A-Za-z0-9_.+-]+")


def video_groups(
    captions: pd.DataFrame,
    lexicon: Lexicon,
    unit: str = Reading().unit,
    threshold: str = Reading().threshold,
    t1: float = T1,
    t2: float = T2,
    msvd: Mapping[str, list[str]] | None = None,
) -> dict[str, str]:
    """``{video_id: class}`` with class in emotional / neutral / factual (Rule 1 of
    :func:`~facenet_evc.evaluation.bias.rule1_classes`; then Rule 2 ``any`` with ``msvd``)."""
    if unit not in VIDEO_UNITS:
        raise ValueError(f"unit must be a per-video reading {VIDEO_UNITS}, got {unit!r}")
    classes = rule1_classes(captions, lexicon, unit, threshold, t1, t2)  # indexed by video id
    if msvd is not None:
        classes = apply_rule2(classes, None, msvd_emotional(dict(msvd), lexicon, "any", threshold))
    return {str(v): str(c) for v, c in classes.items()}


def cider_per_video(predictions: Mapping[str, str], references: Mapping[str, list[str]]) -> dict[str, float]:
    """CIDEr-D of every video with the idf of the whole set (pycocoevalcap, as the official code)."""
    from pycocoevalcap.cider.cider import Cider

    vids = sorted(predictions)
    _, scores = Cider().compute_score({i: list(references[v]) for i, v in enumerate(vids)},
                                      {i: [predictions[v]] for i, v in enumerate(vids)})
    return {v: float(s) for v, s in zip(vids, scores)}


def group_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, list[str]],
    lexicon: Lexicon,
    groups: Mapping[str, str],
    meteor: bool = True,
) -> dict[str, dict[str, Any]]:
    """Per group (emotional, neutral, factual, then ``all``): ``n_videos``, ``metrics`` (the
    ``evaluate`` dict of the group's videos; null when the group is empty), ``undefined``
    (metric -> reason) and ``CIDEr_test_idf``. ``predictions`` and ``references`` must cover
    the same videos, each of which has a group."""
    missing = sorted(set(predictions) - set(groups))
    if missing:
        raise ValueError(f"{len(missing)} predicted videos have no class (not in the caption files), e.g. {missing[:5]}")
    cider = cider_per_video(predictions, references)
    out: dict[str, dict[str, Any]] = {}
    for group in (*CLASSES, ALL):
        vids = sorted(v for v in predictions if group == ALL or groups[v] == group)
        entry: dict[str, Any] = {"n_videos": len(vids)}
        if not vids:
            entry.update(metrics=None, undefined={"*": "no video in this group"}, CIDEr_test_idf=None)
        else:
            metrics = evaluate({v: predictions[v] for v in vids}, {v: list(references[v]) for v in vids}, lexicon,
                               meteor=meteor, on_undefined="null")
            entry["undefined"] = metrics.pop("undefined", {})
            entry["metrics"] = metrics
            entry["CIDEr_test_idf"] = sum(cider[v] for v in vids) / len(vids)
        out[group] = entry
    return out


def parse_labelled(items: Sequence[str]) -> dict[str, str]:
    """``NAME=PATH`` (or a bare ``PATH``, named by itself) -> ``{name: path}``; names must be unique."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not _LABEL.fullmatch(name):
            name, path = item, item
        if not path:
            raise ValueError(f"--predictions {item!r}: expected NAME=PATH")
        if name in out:
            raise ValueError(f"--predictions: the name {name!r} is given twice")
        out[name] = path
    if not out:
        raise ValueError("--predictions: give at least one prediction file")
    return out


def bias_group_report(
    predictions: Mapping[str, str | Path],
    references: str | Path,
    lexicon_dir: str | Path,
    captions: pd.DataFrame,
    unit: str = Reading().unit,
    threshold: str = Reading().threshold,
    t1: float = T1,
    t2: float = T2,
    msvd: Mapping[str, list[str]] | None = None,
    meteor: bool = True,
    caption_files: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON report: the reading, the groups (videos and shares) and, per labelled
    prediction file, :func:`group_metrics`. Every file must cover the references' videos."""
    lexicon = read_lexicon(lexicon_dir)
    refs = read_json(references)
    groups = video_groups(captions, lexicon, unit, threshold, t1, t2, msvd)
    extra = sorted(set(refs) - set(groups))
    if extra:
        where = ", ".join(caption_files) or "the caption files"
        raise ValueError(f"{references}: {len(extra)} videos are not in {where} (e.g. {extra[:5]}): "
                         "references and captions must be the same split")
    runs: dict[str, Any] = {}
    with shared_meteor():  # one JVM for every group of every file
        for name, path in predictions.items():
            preds = read_json(path)
            check_inputs(preds, refs, where=(str(path), str(references)))
            log.info("scoring %s per bias group", path)
            runs[name] = {"path": str(path), "groups": group_metrics(preds, refs, lexicon, groups, meteor)}
    n = len(refs)
    members = {c: sorted(v for v in refs if groups[v] == c) for c in CLASSES}
    return {
        "reading": {"unit": unit, "threshold": threshold, "t1": t1, "t2": t2, "rule2": msvd is not None,
                    "name": f"{unit}/{threshold}" + (" + Rule 2 (any)" if msvd is not None else "")},
        "inputs": {"references": str(references), "lexicon": str(lexicon_dir), "captions": list(caption_files)},
        "scale": "fractions (papers print x100)",
        "meteor": meteor,
        "groups": {c: {"name": GROUP_NAMES[c], "n_videos": len(members[c]),
                       "share": 100.0 * len(members[c]) / n if n else 0.0, "videos": members[c]} for c in CLASSES},
        "runs": runs,
    }


SHOWN = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "Acc_sw", "Acc_c", "BFS", "CFS")


def _pct(x: float | None) -> str:
    return "null" if x is None else f"{100 * x:.1f}"


def format_markdown(report: Mapping[str, Any]) -> str:
    """One table of every group x prediction file (metrics x100), then deltas against the first file."""
    rd = report["reading"]
    shown = [m for m in SHOWN if report["meteor"] or m != "METEOR"]
    lines = [
        "# Metrics per F-E bias group",
        "",
        f"Test videos classified per F-E bias (paper Sec. 3.1), reading `{rd['name']}`, "
        f"t1 = {rd['t1']:.4g}, t2 = {rd['t2']:.4g}: "
        + ", ".join(f"{g['name']} {g['n_videos']} ({g['share']:.1f}%)" for g in report["groups"].values()) + ".",
        "Each group is scored alone with the official evaluation (its own corpus: BLEU corpus-level, CIDEr idf "
        "from the group's references); `CIDEr*` is the group's mean per-video CIDEr with the whole test set's "
        "idf. Metrics x100.",
        "",
        "| predictions | group | n | " + " | ".join(shown) + " | CIDEr* |",
        "|---|---|---|" + "---|" * (len(shown) + 1),
    ]
    notes: list[str] = []
    for name, run in report["runs"].items():
        for group, entry in run["groups"].items():
            gname = GROUP_NAMES.get(group, group)
            m = entry["metrics"] or {}
            cells = [_pct(m.get(k)) for k in shown]
            lines.append(f"| {name} | {gname} | {entry['n_videos']} | " + " | ".join(cells)
                         + f" | {_pct(entry['CIDEr_test_idf'])} |")
            for metric, reason in entry["undefined"].items():
                if metric == "Acc_c" or metric == "*":
                    notes.append(f"* {name} / {gname}: {'all metrics' if metric == '*' else 'Acc_c, BFS, CFS'} "
                                 f"null: {reason}")
    names = list(report["runs"])
    if len(names) > 1:
        base = names[0]
        delta_metrics = ("CIDEr", "Acc_sw", "Acc_c", "BFS", "CFS")
        lines += ["", f"## Difference to `{base}` (points)", "",
                  "| predictions | group | " + " | ".join(f"Δ{k}" for k in delta_metrics) + " | ΔCIDEr* |",
                  "|---|---|" + "---|" * (len(delta_metrics) + 1)]
        for name in names[1:]:
            for group in report["runs"][name]["groups"]:
                a = report["runs"][base]["groups"][group]
                b = report["runs"][name]["groups"][group]

                def diff(x: float | None, y: float | None) -> str:
                    return "null" if x is None or y is None else f"{100 * (y - x):+.1f}"

                ma, mb = a["metrics"] or {}, b["metrics"] or {}
                cells = [diff(ma.get(k), mb.get(k)) for k in delta_metrics]
                lines.append(f"| {name} | {GROUP_NAMES.get(group, group)} | " + " | ".join(cells)
                             + f" | {diff(a['CIDEr_test_idf'], b['CIDEr_test_idf'])} |")
    if notes:
        lines += ["", "Undefined metrics:", "", *notes]
    lines += ["", "Prediction files: " + ", ".join(f"`{n}` = {r['path']}" for n, r in report["runs"].items()), ""]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], out_json: str | Path) -> Path:
    """Write ``out_json`` and the markdown beside it (same name, ``.md``); returns the md path."""
    return write_json_and_markdown(out_json, report, format_markdown(report))


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc bias-groups``."""
    from facenet_evc.data.sources import add_captions_args

    parser.add_argument("--predictions", nargs="+", required=True, metavar="NAME=PATH",
                        help="labelled P.json files, e.g. full=results/ds/predictions.json ba_off=.../predictions.json "
                             "(a bare PATH is named by itself)")
    parser.add_argument("--predictions-ba-off", metavar="PATH",
                        help="shorthand for one more --predictions ba_off=PATH (the model without the BA module)")
    parser.add_argument("--references", required=True, help="R.json of the test split: {video_id: [captions]}")
    parser.add_argument("--lexicon", required=True, help="folder of <category>.txt emotion word files")
    add_captions_args(parser)  # the test split's caption files: the videos' F-E bias classes
    parser.add_argument("--unit", choices=VIDEO_UNITS, default=Reading().unit, help="per-video reading of Rule 1")
    parser.add_argument("--threshold", choices=THRESHOLDS, default=Reading().threshold)
    parser.add_argument("--t1", type=float, default=T1)
    parser.add_argument("--t2", type=float, default=T2)
    parser.add_argument("--msvd-captions", nargs="*", default=[], help="original MSVD caption CSVs (Rule 2)")
    parser.add_argument("--youtube-mapping", help="MSVD youtube_mapping.txt (Rule 2)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (no Java needed)")
    parser.add_argument("--out", required=True, help="bias_groups.json to write; bias_groups.md is written beside it")


def run_cli(args: argparse.Namespace) -> int:
    from facenet_evc.data.sources import caption_sources
    from facenet_evc.data.emvidcap import read_split
    from facenet_evc.evaluation.bias import read_msvd_captions

    preds = parse_labelled(args.predictions)
    if args.predictions_ba_off:
        if "ba_off" in preds:
            raise ValueError("--predictions-ba-off: the name 'ba_off' is already given in --predictions")
        preds["ba_off"] = args.predictions_ba_off
    msvd = None
    if args.msvd_captions:
        if not args.youtube_mapping:
            raise ValueError("--msvd-captions needs --youtube-mapping")
        msvd = read_msvd_captions(args.msvd_captions, args.youtube_mapping)
    captions = read_split(caption_sources(args.captions, args.captions_seps))
    report = bias_group_report(preds, args.references, args.lexicon, captions, args.unit, args.threshold, args.t1,
                               args.t2, msvd, meteor=not args.no_meteor, caption_files=args.captions)
    md = write_report(report, args.out)
    print(json.dumps({"out": str(args.out), "md": str(md),
                      "groups": {c: g["n_videos"] for c, g in report["groups"].items()}}))
    return 0
