"""The paper's ablations (Sec. 4.3: Fig. 3, Tables 2-5) as config overlays, and their table.

A *variant* is a small overlay on a dataset config (``{"model": {"use_dbar": False}}``);
:func:`variant_config` deep-merges it and validates the result against the dataset schema,
so a variant can change nothing a dataset config could not. Variants are defined once in
``config/ablations.yaml`` (the paper's grid) and a dataset picks which to run
(``ablations.variants``) and may add or replace overlays (``ablations.overlays``, e.g. the
FLAN-T5 decoder with the path of its weights). ``full`` is the dataset config itself.

Because a variant's config differs from the base only where its overlay says, the workflow
re-runs only the stages that read those keys: a ``model:`` overlay re-trains; ``retrieval.k``
also re-runs retrieval for that K; features, the repository and triplets are shared.

The table has one row per (table, variant) and the paper's column order.
"""
from __future__ import annotations

import copy
import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

from facenet_evc.config import REPLACED_KEYS, deep_merge, read_yaml, validate  # noqa: F401 (re-exported)

FULL = "full"
# The paper's column order (Tables 2-5), as in metrics.json.
COLUMNS = ["Acc_sw", "Acc_c", "Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "BFS", "CFS"]
HEADERS = ["Acc_sw", "Acc_c", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "BFS", "CFS"]


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read and validate the ablation grid (``config/ablations.yaml``)."""
    grid = validate(read_yaml(path), "ablations", source=str(path))
    variants = grid["variants"]
    for t in grid["tables"]:
        for name in t["rows"]:
            if name != FULL and name not in variants:
                raise ValueError(f"{path}: tables: {t['title']!r} lists {name!r}, which is not under variants")
    return grid


def overlays(grid: Mapping[str, Any], dataset_cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every overlay a dataset can run: the grid's, replaced/extended by the dataset's own."""
    out = {name: copy.deepcopy(v) for name, v in grid["variants"].items()}
    out.update(copy.deepcopy(dataset_cfg.get("ablations", {}).get("overlays", {})))
    out[FULL] = {}
    return out


def selected_variants(grid: Mapping[str, Any], dataset_cfg: Mapping[str, Any]) -> list[str]:
    """The variants a dataset runs (``ablations.variants``; default: every grid variant not
    marked ``needs_weights``), ``full`` first; unknown names are an error."""
    known = overlays(grid, dataset_cfg)
    chosen = dataset_cfg.get("ablations", {}).get("variants")
    if chosen is None:
        chosen = [n for n in grid["variants"] if n not in grid.get("needs_weights", [])]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"{dataset_cfg.get('_source', 'config')}: ablations.variants: unknown {unknown} "
                         f"(known: {sorted(known)})")
    # A variant that changes nothing is the full run again (e.g. `transformer` for a dataset
    # whose decoder already is the Transformer): its row is the full run's, not a re-training.
    base = {k: v for k, v in dataset_cfg.items() if not k.startswith("_")}
    return [FULL] + [n for n in chosen if n != FULL and variant_config(dataset_cfg, known[n], n) != {
        **base, "_source": dataset_cfg.get("_source", "config"), "_variant": n}]


def same_as_full(grid: Mapping[str, Any], dataset_cfg: Mapping[str, Any]) -> list[str]:
    """Variants whose overlay leaves the dataset config unchanged (their row is ``full``'s)."""
    chosen = dataset_cfg.get("ablations", {}).get("variants")
    if chosen is None:
        chosen = [n for n in grid["variants"] if n not in grid.get("needs_weights", [])]
    run = set(selected_variants(grid, dataset_cfg))
    return [n for n in chosen if n not in run]


def variant_config(dataset_cfg: Mapping[str, Any], overlay: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The dataset config with ``overlay`` merged in, validated again (defaults filled)."""
    source = dataset_cfg.get("_source", "config")
    base = {k: v for k, v in dataset_cfg.items() if not k.startswith("_")}
    cfg = validate(deep_merge(base, overlay), "dataset", source=f"{source} + ablation variant {name!r}")
    cfg["_source"] = source
    cfg["_variant"] = name
    return cfg


def table_rows(grid: Mapping[str, Any], metrics: Mapping[str, Mapping[str, float] | None]) -> list[dict[str, Any]]:
    """One row per (table, variant) run; ``metrics[name]`` None marks a variant not run."""
    rows = []
    for t in grid["tables"]:
        for name, label in t["rows"].items():
            if name not in metrics:
                continue
            m = metrics[name]
            rows.append({"table": t["title"], "variant": name, "label": label,
                         **{c: (None if m is None or m.get(c) is None else float(m[c])) for c in COLUMNS}})
    return rows


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def to_markdown(rows: Sequence[Mapping[str, Any]], note: str = "") -> str:
    """Markdown: one section per paper table, metrics ×100 like the paper, best value in bold."""
    out = ["# Ablations", ""]
    if note:
        out += [note, ""]
    for title in dict.fromkeys(r["table"] for r in rows):
        group = [r for r in rows if r["table"] == title]
        best = {c: max((r[c] for r in group if r[c] is not None), default=None) for c in COLUMNS}
        out += [f"## {title}", "", "| variant | " + " | ".join(HEADERS) + " |",
                "|---|" + "---:|" * len(HEADERS)]
        for r in group:
            cells = [f"**{_fmt(r[c])}**" if r[c] is not None and r[c] == best[c] and len(group) > 1 else _fmt(r[c])
                     for c in COLUMNS]
            out.append(f"| {r['label']} (`{r['variant']}`) | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "variant", "label", *HEADERS])
    for r in rows:
        w.writerow([r["table"], r["variant"], r["label"], *("" if r[c] is None else f"{r[c]:.6f}" for c in COLUMNS)])
    return buf.getvalue()
